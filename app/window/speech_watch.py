"""Whether the assistant is speaking, for the window: the speakers' state polled on the GUI thread.

A reply's speech plays on after its turn ended (a turn ends when its audio is made, not heard).
The speakers' callback runs on PortAudio's thread and must never emit a Qt signal or wait: it
only replaces plain values (app.sound.playback). A `SpeechWatch` reads them every POLL_MS through a
function safe from any thread (the worker's `speech_state`) and turns changes into signals.

Threads: the GUI thread only; the timer never blocks.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from app.worker import SILENT, SpeechState

POLL_MS = 50


class SpeechWatch(QObject):
    """Signals:
    speaking_changed(bool): True once a reply's speech is waiting to play or playing; False when
        all of it was played, or it was stopped. (What a hands-free microphone must not take for
        the user.)
    first_sound(float): the reply's first sound reached the speakers, this many seconds after
        the end of the question (when it was sent).
    """

    speaking_changed = Signal(bool)
    first_sound = Signal(float)

    def __init__(self, state: Callable[[], SpeechState], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._state = state
        self._last = SILENT
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self.poll)
        self._timer.start()

    @property
    def speaking(self) -> bool:
        return self._last.pending

    @Slot()
    def poll(self) -> None:
        state, last = self._state(), self._last
        self._last = state
        if state.first_audio_s is not None and (state.reply != last.reply or last.first_audio_s is None):
            self.first_sound.emit(state.first_audio_s)
        if state.pending != last.pending:
            self.speaking_changed.emit(state.pending)

    def stop(self) -> None:
        self._timer.stop()
