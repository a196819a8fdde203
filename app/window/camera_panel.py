"""The camera in the window: its preview, the Camera button, "Ask about this".

Threads: the camera captures on its own thread (`app.capture.camera`); here, on the GUI thread,
a timer shows its latest frame every PREVIEW_MS, never blocking.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QSettings, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QLabel

from app.capture import camera as camera_module
from app.capture.camera import Camera
from app.capture.screen import qimage
from app.window.icons import tool_button
from app.window.preferences import Preferences
from model.errors import OmnideskError

PREVIEW_MS = 66  # the camera preview shows about 15 frames per second
PREVIEW_WIDTH = 320
CAMERA_TIP = "Show the camera's preview; while it shows, each question you speak carries its frame"


class CameraPanel(QObject):
    """The preview label and the two buttons (the window lays them out) and the open camera.
    A camera that goes away is replaced by the default one (camera 0) when it can be.

    Signals:
    frame_attached(object): "Ask about this" took the current frame; an Image.
    camera_changed(bool): the camera was turned on (True) or off (False).
    notice(str): something the user should read (no camera, the camera went away).
    """

    frame_attached = Signal(object)
    camera_changed = Signal(bool)
    notice = Signal(str)

    def __init__(
        self, settings: QSettings, source_factory: camera_module.SourceFactory, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._settings = settings
        self._source_factory = source_factory
        self.camera: Camera | None = None
        self.preview = QLabel("Starting the camera…")
        self.preview.setFixedWidth(PREVIEW_WIDTH)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preview.setVisible(False)
        self._timer = QTimer(self)
        self._timer.setInterval(PREVIEW_MS)
        self._timer.timeout.connect(self._on_preview_due)
        self.button = tool_button("camera", "Camera", CAMERA_TIP)
        self.button.setCheckable(True)
        self.button.toggled.connect(self._on_button_toggled)
        self.snapshot_button = tool_button("snapshot", "Ask about this", "Attach the camera's current frame")
        self.snapshot_button.clicked.connect(self._on_snapshot_clicked)
        self.snapshot_button.setEnabled(False)

    def close(self) -> None:
        """Turn the camera off."""
        self._timer.stop()
        if self.camera is not None:
            self.camera.close()
            self.camera = None
        self.preview.setVisible(False)
        self._changed()

    @Slot(bool)
    def _on_button_toggled(self, on: bool) -> None:
        if on and self.camera is None:
            self._open(Preferences.load(self._settings).camera_index)
        elif not on and self.camera is not None:
            self.close()

    def _open(self, index: int) -> bool:
        try:
            self.camera = Camera(index, self._source_factory)
        except OmnideskError as exc:
            self.notice.emit(f"{exc}.")
            self.button.setChecked(False)
            return False
        self.preview.setText("Starting the camera…")
        self.preview.setVisible(True)
        self._timer.start()
        self._changed()
        return True

    def _changed(self) -> None:
        on = self.camera is not None
        self.snapshot_button.setEnabled(on)
        self.camera_changed.emit(on)

    @Slot()
    def _on_preview_due(self) -> None:
        camera = self.camera
        if camera is None:
            return
        if camera.lost:
            index = camera.index
            self.close()
            if index != 0 and self._open(0):
                self.notice.emit(f"Camera {index} went away: showing the default camera instead.")
            else:
                self.notice.emit(f"Camera {index} went away. Plug it in again and turn the camera on.")
                self.button.setChecked(False)
            return
        frame = camera.frame()
        if frame is not None:
            pixmap = QPixmap.fromImage(qimage(frame))
            self.preview.setPixmap(
                pixmap.scaledToWidth(PREVIEW_WIDTH, Qt.TransformationMode.SmoothTransformation)
            )

    @Slot()
    def _on_snapshot_clicked(self) -> None:
        image = self.camera.image() if self.camera is not None else None
        if image is None:
            self.notice.emit("The camera has not given a picture yet: try again in a moment.")
            return
        self.frame_attached.emit(image)
