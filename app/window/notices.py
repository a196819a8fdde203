"""The notice line above the chat: what the user should read now, and its dismiss button.

Notices are about now: they show (the last NOTICES_SHOWN, one a line) until the next question,
another conversation, or the user dismisses them. What stops a question from being sent (no model
yet, the model still loading: the composer's `missing`) stays said when there is no notice.

Threads: the GUI thread only.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, Slot
from PySide6.QtWidgets import QLabel, QToolButton

NOTICES_SHOWN = 3  # notices shown at once, the newest last


class Notices(QObject):
    """The notice `label` and its `dismiss_button` (the window lays both out). `missing` says what
    stops a question ("" when nothing does)."""

    def __init__(self, missing: Callable[[], str], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._missing = missing
        self._shown: list[str] = []
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setObjectName("notice")
        self.dismiss_button = QToolButton()
        self.dismiss_button.setText("✕")
        self.dismiss_button.setToolTip("Dismiss this notice")
        self.dismiss_button.setAutoRaise(True)
        self.dismiss_button.clicked.connect(self.clear)

    @Slot(str)
    def show(self, text: str) -> None:
        """Add a notice to those shown ("": clear them); the last few show, one a line."""
        if not text:
            self._shown = []
        elif text not in self._shown:
            self._shown = [*self._shown, text][-NOTICES_SHOWN:]
        shown = "\n".join(self._shown) or self._missing()  # what stops a question stays said
        self.label.setText(shown)
        self.label.setVisible(bool(shown))
        self.dismiss_button.setVisible(bool(self._shown))

    @Slot()
    def clear(self) -> None:
        self.show("")
