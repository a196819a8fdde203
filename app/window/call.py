"""The live call: one button starts a call with the camera or the screen; the model then sees it and
hears the microphone all along (model.pipeline.call), and each time the user stops speaking, it answers.

A call listens as hands-free does (its microphone and voice activity: `HandsFree.sound` gives every
sample, with whether the user is speaking) and adds the frames: the camera's (its preview is the
self-view) or the screen's (grabbed every SCREEN_GRAB_MS on this thread; its thumbnail is the
self-view). `LatestFrame` holds the last one for the worker, which takes frames at the plan's rate by
the sound's clock. The call's bar says what the model sees, in the plan's words ("1 frame a second, up
to 16 embeddings each, from when you speak"), once the worker has begun the call.

Threads: everything here runs on the GUI thread but `LatestFrame.__call__`, which the worker calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from PySide6.QtCore import QObject, QSettings, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QAbstractButton, QComboBox, QLabel, QPushButton

from app.capture.screen import grab_screen, qimage
from app.window.camera_panel import CameraPanel
from app.window.elided_label import ElidedLabel
from app.window.hands_free import HandsFree
from app.window.icons import set_icon
from model.errors import OmnideskError
from model.media import Image

CALL_SOURCE_KEY = "call/source"
SOURCES = {"camera": "Camera", "screen": "Screen"}
SCREEN_GRAB_MS = 500  # the screen is grabbed twice a second (a GPU's call rate; a CPU's takes fewer)
THUMBNAIL_WIDTH = 240
WAITING = (480, 640, 3)  # the frame the model sees until the camera gives its first: mid grey


class LatestFrame:
    """The last frame shown (any thread may read it): what the call's `look` returns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: np.ndarray = np.full(WAITING, 128, np.uint8)
        self.fresh = False  # a real frame came (not the grey one)

    def set(self, frame: np.ndarray) -> None:
        with self._lock:
            self._frame, self.fresh = frame, True

    def __call__(self) -> np.ndarray:
        with self._lock:
            return self._frame


class CallControl(QObject):
    """The Call button, its source (camera or screen, remembered) and the call's bar (the window lays
    out `button`, `source` and `bar`).

    Signals:
    call_started(object): a call began: the `look` callable (() -> (h, w, 3) uint8 RGB) for the worker.
    call_ended(): the call ended (the button, the microphone or the camera went away).
    sound(object, bool): during a call, the microphone's next samples and whether the user speaks.
    notice(str): something the user should read.
    """

    call_started = Signal(object)
    call_ended = Signal()
    sound = Signal(object, bool)
    notice = Signal(str)

    def __init__(
        self,
        settings: QSettings,
        camera_panel: CameraPanel,
        hands_free: HandsFree,
        parent: QObject | None = None,
        grab: Callable[[], Image] = grab_screen,
    ) -> None:
        super().__init__(parent)
        self._settings = settings
        self._camera_panel = camera_panel
        self._hands_free = hands_free
        self._grab = grab
        self._frame: LatestFrame | None = None
        self._turned_on: list[QAbstractButton] = []  # what the call turned on, turned off with it
        self.button = QPushButton("Call")
        set_icon(self.button, "call")
        self.button.setCheckable(True)
        self.button.setToolTip("Talk face to face: the model sees the camera or the screen while you talk")
        self.button.toggled.connect(self._on_toggled)
        self.source = QComboBox()
        for key, name in SOURCES.items():
            self.source.addItem(name, key)
        chosen = str(settings.value(CALL_SOURCE_KEY, "camera"))
        self.source.setCurrentIndex(max(0, self.source.findData(chosen)))
        self.source.setToolTip("What the model sees during a call")
        self.source.currentIndexChanged.connect(self._on_source_chosen)
        # Beside the button: a long text is cut (whole in its tooltip), moving nothing.
        self.bar = ElidedLabel()
        self.thumbnail = QLabel()
        self.thumbnail.setFixedWidth(THUMBNAIL_WIDTH)
        self.thumbnail.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.thumbnail.setVisible(False)
        self._timer = QTimer(self)
        self._timer.setInterval(SCREEN_GRAB_MS)
        self._timer.timeout.connect(self._on_frame_due)
        hands_free.sound.connect(self._on_sound)
        hands_free.listening_changed.connect(self._on_listening_changed)
        camera_panel.camera_changed.connect(self._on_camera_changed)

    @property
    def active(self) -> bool:
        return self._frame is not None

    @property
    def shares_screen(self) -> bool:
        """A call with the screen is on: what it shows goes to the model."""
        return self.active and self.source.currentData() == "screen"

    @property
    def latest(self) -> Image | None:
        """The last real frame the call showed (for the turn's history), if any."""
        frame = self._frame
        return Image(frame().copy()) if frame is not None and frame.fresh else None

    @Slot(str)
    def show_started(self, label: str) -> None:
        """The worker began the call; `label`: its frames, in words."""
        if self.active:
            self.bar.setText(f"On a call with the {self._source_name().lower()}: {label}. Speak, then pause.")

    @Slot(str)
    def fail(self, message: str) -> None:
        """The worker could not begin or go on with the call: it ends here too."""
        self.notice.emit(message)
        self.button.setChecked(False)

    def close(self) -> None:
        """End the call, turning off what it turned on (the window is closing)."""
        self.button.setChecked(False)

    @Slot(bool)
    def _on_toggled(self, on: bool) -> None:
        if on:
            self._start()
        else:
            self._stop()

    def _start(self) -> None:
        self._frame = LatestFrame()
        self.source.setEnabled(False)
        self._turned_on = []
        if not self._hands_free.button.isChecked():
            self._turn_on(self._hands_free.button)
        if self._hands_free.microphone is None:  # no microphone: told by hands-free
            self.button.setChecked(False)
            return
        if self.source.currentData() == "camera":
            if self._camera_panel.camera is None:
                self._turn_on(self._camera_panel.button)
            if self._camera_panel.camera is None:  # no camera: told by the panel
                self.button.setChecked(False)
                return
        self._on_frame_due()
        self._timer.start()
        self.bar.setText(f"Starting the call with the {self._source_name().lower()}…")
        self.call_started.emit(self._frame)

    def _stop(self) -> None:
        if self._frame is None:
            return
        self._frame = None
        self._timer.stop()
        self.bar.setText("")
        self.thumbnail.setVisible(False)
        self.source.setEnabled(True)
        for button in self._turned_on:
            button.setChecked(False)
        self._turned_on = []
        self.call_ended.emit()

    def _turn_on(self, button: QAbstractButton) -> None:
        button.setChecked(True)
        if button.isChecked():
            self._turned_on.append(button)

    def _source_name(self) -> str:
        return SOURCES[str(self.source.currentData())]

    @Slot()
    def _on_frame_due(self) -> None:
        """The next frame for the model: the camera's latest, or the screen grabbed now."""
        frame = self._frame
        if frame is None:
            return
        if self.source.currentData() == "camera":
            camera = self._camera_panel.camera
            pixels = camera.frame() if camera is not None else None
            if pixels is not None:
                frame.set(pixels)
            return
        try:
            shot = self._grab()
        except OmnideskError as exc:
            self.fail(f"{exc}. The call has ended.")
            return
        frame.set(shot.pixels)
        pixmap = QPixmap.fromImage(qimage(shot.pixels))
        self.thumbnail.setPixmap(
            pixmap.scaledToWidth(THUMBNAIL_WIDTH, Qt.TransformationMode.SmoothTransformation)
        )
        self.thumbnail.setVisible(True)

    @Slot(object, bool)
    def _on_sound(self, samples: np.ndarray, speaking: bool) -> None:
        if self.active:
            self.sound.emit(samples, speaking)

    @Slot(bool)
    def _on_listening_changed(self, listening: bool) -> None:
        if not listening and self.active:  # the microphone went away, or hands-free was turned off
            self.button.setChecked(False)

    @Slot(bool)
    def _on_camera_changed(self, on: bool) -> None:
        if not on and self.active and self.source.currentData() == "camera":
            self.button.setChecked(False)

    @Slot(int)
    def _on_source_chosen(self, _index: int) -> None:
        self._settings.setValue(CALL_SOURCE_KEY, self.source.currentData())
