"""A one-line label that never widens the window: a text longer than its room is cut with "…",
and shown whole in its tooltip.

Threads: the GUI thread only.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QPainter, QPaintEvent
from PySide6.QtWidgets import QLabel

MIN_CHARACTERS = 8  # the least it asks for, in average character widths


class ElidedLabel(QLabel):
    """It asks for its whole text's width, and makes do with MIN_CHARACTERS."""

    def setText(self, text: str) -> None:  # noqa: N802 (Qt override)
        super().setText(text)
        self.setToolTip(text)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt override)
        hint = super().minimumSizeHint()
        return QSize(min(hint.width(), MIN_CHARACTERS * self.fontMetrics().averageCharWidth()), hint.height())

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 (Qt override)
        room = self.contentsRect()
        text = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, room.width())
        painter = QPainter(self)
        painter.setPen(self.palette().color(self.foregroundRole()))
        painter.drawText(room, int(self.alignment()), text)
