"""What a question sees: the pictures taken the moment the user starts to ask.

When the talk key goes down (or hands-free hears speech start), a question asked by voice carries
- a shot of the screen, while the Share screen toggle is on (remembered between runs; a question
  typed while it is on carries one taken at Send);
- the camera's current frame, while the camera's preview shows (turning the camera on is already
  the user's way of showing something: a second toggle would be one more step mid-gesture).
They are attached at once, so that the user sees their thumbnails while they speak, the worker
encodes them while it listens (the window's Look carries these very Image objects), and the
question sent at the release carries the same pixels, whose encoding the worker then reuses. A press
that ends with no question (too short, Escape, hands-free turned off mid-sentence) withdraws them.

The screen is grabbed with Omnidesk's window in it: hiding the window (as the Screen button does)
would take the focus from it while the key is held, so that its release would go to another window,
and it would flicker at every question. On a 1920x1080 X screen the grab takes about 33 ms of the
GUI thread, 49 ms with its thumbnail (medians on a loaded 2-core machine, docs/using.md); the
microphone is already recording by then.

Threads: the GUI thread only.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QSettings, Signal, Slot
from PySide6.QtWidgets import QPushButton, QWidget

from app.capture.screen import grab_screen
from app.window.camera_panel import CameraPanel
from app.window.chat.attachment_strip import AttachmentStrip
from app.window.icons import set_icon
from app.window.preferences import SHARE_SCREEN_KEY, Preferences
from model.errors import OmnideskError
from model.media import Image

SHARE_TIPS = {
    False: "Share screen: off. Turn it on and each question carries a shot of the screen, taken when "
    "you start speaking (or Send a typed one)",
    True: "Share screen: on. Each question carries a shot of the screen (Omnidesk's window included), "
    "taken when you start speaking (or Send a typed one)",
}


class PressShots(QObject):
    """The Share screen toggle (the window lays out `share_button`) and the pictures of the press
    under way, attached to `attachments`.

    Signals:
    notice(str): the screen could not be captured (the question goes without it).
    """

    notice = Signal(str)

    def __init__(
        self, settings: QSettings, camera: CameraPanel, attachments: AttachmentStrip, window: QWidget
    ) -> None:
        super().__init__(window)
        self._settings = settings
        self._camera = camera
        self._attachments = attachments
        self._window = window
        self._taken: list[Image] = []  # attached at the press under way
        self.share_button = QPushButton("Share screen")
        set_icon(self.share_button, "screen")
        self.share_button.setCheckable(True)
        self.share_button.setChecked(Preferences.load(settings).share_screen)
        self._show_state(self.share_button.isChecked())
        self.share_button.toggled.connect(self._on_share_toggled)

    @property
    def sharing(self) -> bool:
        return self.share_button.isChecked()

    def take(self) -> None:
        """The user starts to ask: attach a shot of the screen (while sharing it) and the camera's
        frame (while its preview shows)."""
        self._taken = []
        if self.sharing:
            self._attach_screen()
        camera = self._camera.camera
        frame = camera.image() if camera is not None else None
        if frame is not None:
            self._attach(frame, "Camera")

    @Slot()
    def take_screen(self) -> None:
        """A typed question is being sent: attach a shot of the screen while sharing it (the camera's
        frame goes with a typed question only by Ask about this)."""
        if self.sharing:
            self._attach_screen()

    @Slot()
    def withdraw(self) -> None:
        """No question came of the press: its pictures go (the user's own attachments stay)."""
        taken, self._taken = self._taken, []
        for image in taken:
            self._attachments.discard(image)

    @Slot()
    def keep(self) -> None:
        """The press became a question: its pictures are the question's now."""
        self._taken = []

    def _attach_screen(self) -> None:
        try:
            self._attach(grab_screen(self._window.screen()), "Screen")
        except OmnideskError as exc:
            self.notice.emit(f"{exc}.")

    def _attach(self, image: Image, label: str) -> None:
        self._attachments.add(image, label)
        self._taken.append(image)

    @Slot(bool)
    def _on_share_toggled(self, on: bool) -> None:
        self._settings.setValue(SHARE_SCREEN_KEY, "true" if on else "false")
        self._show_state(on)

    def _show_state(self, on: bool) -> None:
        # In words here; on the button, on shows as its checked look, which moves nothing.
        self.share_button.setToolTip(SHARE_TIPS[on])
        self.share_button.setAccessibleDescription(SHARE_TIPS[on])
