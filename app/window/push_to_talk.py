"""Push-to-talk: hold the button (or the talk key) to record a question, let go to send it; Escape
while holding it cancels the question.

A held key may come as release/press pairs: X11 repeats a held key by sending both every ~40 ms
after ~660 ms, and Qt does not always mark them as repeats (`isAutoRepeat()` false, seen under
Xvfb). So a key release counts only once RELEASE_GRACE_MS pass without the key going down again.

Threads: everything here runs on the GUI thread. The microphone's own PortAudio thread
only fills its queue; a timer empties it every MIC_POLL_MS and moves the level meter,
never blocking.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QEvent, QObject, QSettings, QSize, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QTextEdit,
    QWidget,
)

from app.sound.microphone import MIN_SECONDS, DeviceLost, Microphone, StreamFactory
from app.window.icons import keep_width, set_icon
from app.window.preferences import Preferences
from model.errors import OmnideskError
from model.media import Audio

METER_SIZE = QSize(72, 8)  # the level meter, in pixels: a thin bar
MIC_POLL_MS = 30  # the microphone's queue is emptied (and the meter updated) this often
METER_FLOOR_DB = -60.0  # the level meter's empty end
# A key release followed within this by a press of the key is X11's autorepeat, not letting go:
# the pair comes at once, the next pair ~40 ms later; a real release is sent this much later.
RELEASE_GRACE_MS = 50
TALK_LABEL, LISTENING_LABEL = "Hold to talk", "Release to send"  # the talk button's, at rest and held


def meter_percent(peak: float) -> int:
    """The level meter's position (0..100) for a peak amplitude (full scale 1.0), on a dB scale."""
    decibels = 20 * math.log10(peak) if peak > 0 else METER_FLOOR_DB
    return round(100 * max(0.0, 1 - decibels / METER_FLOOR_DB))


def talk_tip(key: str) -> str:
    return f"Hold to talk, then let go to send; or hold {key} when the question box does not have the focus"


class PushToTalk(QObject):
    """The talk button, its level meter, the microphone while it records, and the talk key
    anywhere in `window` (except while the user types in a text field).

    Signals:
    talk_pressed(): the button or key went down; the microphone opens next.
    listening_changed(bool): the microphone opened (True) or closed (False).
    heard(object): the samples (n,) float32 at 16 kHz the microphone gave since the last heard, while
        the key is held (the question is encoded as it is spoken).
    recording_finished(object): let go after a recording long enough to send; its Audio.
    recording_dropped(): let go after a recording too short to send, or Escape while talking: nothing of
        it is kept.
    notice(str): something the user should read (no microphone, a device went away, too short).
    """

    talk_pressed = Signal()
    listening_changed = Signal(bool)
    heard = Signal(object)
    recording_finished = Signal(object)
    recording_dropped = Signal()
    notice = Signal(str)

    def __init__(self, settings: QSettings, stream_factory: StreamFactory | None, window: QWidget) -> None:
        super().__init__(window)
        self._settings = settings
        self._stream_factory = stream_factory
        self._window = window
        self.microphone: Microphone | None = None
        self._recorded_before_loss: Audio | None = None
        self._talking = False
        self._hands_free = False

        self.button = QPushButton(TALK_LABEL)
        set_icon(self.button, "microphone")
        self.button.setToolTip(talk_tip(self._preferences().talk_key))
        self.button.pressed.connect(self.start)
        self.button.released.connect(self.stop)
        self.level_meter = QProgressBar()
        self.level_meter.setRange(0, 100)
        self.level_meter.setTextVisible(False)
        self.level_meter.setFixedSize(METER_SIZE)
        self.level_meter.setToolTip("Microphone level")
        self.level_meter.setVisible(False)
        self._keep_room()
        self._timer = QTimer(self)
        self._timer.setInterval(MIC_POLL_MS)
        self._timer.timeout.connect(self._on_poll_due)
        self._release = QTimer(self)  # a key release waiting to count (see the module's docstring)
        self._release.setSingleShot(True)
        self._release.setInterval(RELEASE_GRACE_MS)
        self._release.timeout.connect(self.stop)
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)  # the talk key, wherever the focus is in the window

    def _keep_room(self) -> None:
        """The level meter shows only while listening, and the button then says more: the room of
        both is kept from the start, so that nothing beside them moves sideways."""
        meter_policy = self.level_meter.sizePolicy()
        meter_policy.setRetainSizeWhenHidden(True)
        self.level_meter.setSizePolicy(meter_policy)
        keep_width(self.button, (TALK_LABEL, LISTENING_LABEL))

    @property
    def talking(self) -> bool:
        """The button or key is held."""
        return self._talking

    def set_talk_key(self, key: str) -> None:
        self.button.setToolTip(talk_tip(key))

    @Slot(bool)
    def set_hands_free(self, on: bool) -> None:
        """While hands-free listens (app.window.hands_free), push-to-talk rests: its button is off and the
        talk key is left to the window."""
        self._hands_free = on
        self.button.setEnabled(not on)
        self.button.setToolTip(
            "Hands-free is on: just speak" if on else talk_tip(self._preferences().talk_key)
        )

    def _preferences(self) -> Preferences:
        return Preferences.load(self._settings)

    @Slot()
    def start(self) -> None:
        if self._talking:
            return
        self.talk_pressed.emit()
        device = self._preferences().input_device or None
        try:
            self.microphone = Microphone(device, self._stream_factory)
        except OmnideskError as exc:
            self.notice.emit(f"{exc}. Type your question instead.")
            return
        self._talking = True
        self._recorded_before_loss = None
        self.level_meter.setValue(0)
        self._timer.start()
        self._show_state()
        self.listening_changed.emit(True)

    @Slot()
    def stop(self) -> None:
        if not self._talking:
            return
        self._talking = False
        self._timer.stop()
        if self.microphone is not None:
            audio = self.microphone.stop()
            self.microphone = None
        else:  # the device went away while talking: what it recorded until then
            assert self._recorded_before_loss is not None
            audio, self._recorded_before_loss = self._recorded_before_loss, None
        self._show_state()
        self.listening_changed.emit(False)
        if audio.seconds < MIN_SECONDS:
            self.notice.emit(
                f"The recording was too short ({audio.seconds:.1f} s): hold the button, or the "
                f"{self._preferences().talk_key} key, while you speak."
            )
            self.recording_dropped.emit()
            return
        self.recording_finished.emit(audio)

    def cancel(self) -> None:
        """Stop listening and send nothing (Escape while talking): what was recorded is dropped."""
        if not self._talking:
            return
        self._talking = False
        self._release.stop()
        self._timer.stop()
        self._recorded_before_loss = None
        if self.microphone is not None:
            self.microphone.stop()
            self.microphone = None
        self._show_state()
        self.listening_changed.emit(False)
        self.notice.emit("Question cancelled: nothing was sent.")
        self.recording_dropped.emit()

    def talk_key(self, pressed: bool) -> None:
        """The talk key went down (`pressed`) or up; auto-repeats and typing are already left out.
        A release counts once RELEASE_GRACE_MS pass without the key going down again."""
        if not pressed:
            self._release.start()
        elif self._release.isActive():
            self._release.stop()  # down again at once: still held
        else:
            self.start()

    def close(self) -> None:
        """Stop listening at once, keeping nothing (the window is closing)."""
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self)
        self._release.stop()
        self._timer.stop()
        self._talking = False
        self._recorded_before_loss = None
        if self.microphone is not None:
            self.microphone.stop()
            self.microphone = None

    @Slot()
    def _on_poll_due(self) -> None:
        if self.microphone is None:
            return
        try:
            notice = self.microphone.poll()
        except DeviceLost as exc:
            self.notice.emit(str(exc))
            self._recorded_before_loss = self.microphone.stop()
            self.microphone = None
            self._timer.stop()
            self._show_state()
            self.listening_changed.emit(False)
            return
        if notice:
            self.notice.emit(notice)
        fresh = self.microphone.fresh()
        if len(fresh):
            self.heard.emit(fresh)
        self.level_meter.setValue(meter_percent(self.microphone.level.peak))

    def _show_state(self) -> None:
        self.level_meter.setVisible(self.microphone is not None)
        self.button.setText(LISTENING_LABEL if self._talking else TALK_LABEL)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt override)
        kind = event.type()
        if kind not in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
            return False
        assert isinstance(event, QKeyEvent)
        if self._hands_free or event.isAutoRepeat():
            return False
        if self._talking and event.key() == Qt.Key.Key_Escape and self._in_window(watched):
            if kind == QEvent.Type.KeyPress:
                self.cancel()
            return True
        if not self._is_talk_key(event) or not self._in_window(watched):
            return False
        if self._typing():
            return False
        self.talk_key(kind == QEvent.Type.KeyPress)
        return True

    def _is_talk_key(self, event: QKeyEvent) -> bool:
        sequence = QKeySequence(self._preferences().talk_key)
        if sequence.isEmpty():
            return False
        return sequence[0] == event.keyCombination()  # type: ignore[index]  # not in PySide6's stubs

    def _in_window(self, watched: QObject) -> bool:
        window = self._window
        return watched is window or (isinstance(watched, QWidget) and window.isAncestorOf(watched))

    def _typing(self) -> bool:
        """The focus is in a text field, where the talk key types."""
        focus = self._window.focusWidget()
        return isinstance(focus, QLineEdit | QPlainTextEdit | QAbstractSpinBox) or (
            isinstance(focus, QTextEdit) and not focus.isReadOnly()
        )
