"""What the next question will carry: thumbnails of images and recordings, before sending."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QToolButton, QWidget

from app.capture.screen import qimage
from model.media import Audio, Image

THUMBNAIL = QSize(96, 72)


class AttachmentStrip(QWidget):
    """Signals:
    changed(): an attachment was added or removed (by a click on its thumbnail).
    image_added(object): an Image was attached (its encoding can start before the question is sent).
    """

    changed = Signal()
    image_added = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.media: list[Image | Audio] = []
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.addStretch(1)
        self.setVisible(False)

    def add(self, media: Image | Audio, label: str) -> None:
        button = QToolButton()
        button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
        button.setText(label)
        button.setToolTip(f"{label}: sent with the next question. Click to remove it.")
        if isinstance(media, Image):
            pixmap = QPixmap.fromImage(qimage(media.pixels)).scaled(
                THUMBNAIL, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
            button.setIcon(QIcon(pixmap))
            button.setIconSize(THUMBNAIL)
        button.clicked.connect(lambda: self._remove(button))
        self._layout.insertWidget(len(self.media), button)
        self.media.append(media)
        self.setVisible(True)
        self.changed.emit()
        if isinstance(media, Image):
            self.image_added.emit(media)

    def take(self) -> list[Image | Audio]:
        """Everything attached, leaving the strip empty."""
        media, self.media = self.media, []
        while self._layout.count() > 1:
            item = self._layout.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()
        self.setVisible(False)
        return media

    def discard(self, media: Image | Audio) -> None:
        """Remove `media` (this very object) if it is still attached; the user may have removed it."""
        for index, attached in enumerate(self.media):
            if attached is media:
                item = self._layout.itemAt(index)
                button = item.widget() if item is not None else None
                if isinstance(button, QToolButton):
                    self._remove(button)
                return

    def labels(self) -> list[str]:
        items = (self._layout.itemAt(i) for i in range(len(self.media)))
        buttons = [item.widget() for item in items if item is not None]
        return [button.text() for button in buttons if isinstance(button, QToolButton)]

    def _remove(self, button: QToolButton) -> None:
        index = self._layout.indexOf(button)
        self._layout.takeAt(index)
        button.deleteLater()
        del self.media[index]
        self.setVisible(bool(self.media))
        self.changed.emit()
