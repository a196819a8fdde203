"""Helpers for tests of the whole window on the tiny bundle: a worker with short replies, a sink
standing in for the speakers, loading, asking, and holding the talk button."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt

from app.sound.playback import PlaybackState
from app.window.main_window import Devices, MainWindow
from app.worker import ConversationWorker
from model.files.bundle import Bundle
from model.talker import SpeechOptions

TIMEOUT_MS = 60_000
MAX_TOKENS, MAX_CODES = 48, 60  # the random tiny model rarely stops by itself
# ... but its Talker may stop at its first code (a few turns in a hundred): spoken tests need sound.
SPEECH = SpeechOptions(max_codes=MAX_CODES, min_codes=40)


class RecordingSink:
    """Stands in for the speakers: keeps what it was given (written from the worker's thread), and
    plays each chunk the moment it is written."""

    def __init__(self) -> None:
        self.chunks: list = []
        self.stopped = 0
        self._reply = 0
        self._first_sound: float | None = None

    def begin(self) -> None:
        self._reply += 1
        self._first_sound = None

    def write(self, samples) -> None:
        self.chunks.append(samples)
        if self._first_sound is None:
            self._first_sound = time.perf_counter()

    def finish(self) -> None:
        pass

    def stop(self) -> None:
        self.stopped += 1
        self._reply += 1

    def state(self) -> PlaybackState:
        played = sum(len(c) for c in self.chunks)
        return PlaybackState(self._reply, False, played, False, self._first_sound, slow=False)


def worker(sink: RecordingSink | None = None) -> ConversationWorker:
    sink = sink or RecordingSink()
    return ConversationWorker(max_tokens=MAX_TOKENS, speech=SPEECH, sink_factory=lambda rate: sink)


def open_window(qtbot, settings, history_store, devices: Devices, sink: RecordingSink | None = None):
    window = MainWindow(settings, worker(sink), history_store, devices)
    qtbot.addWidget(window)
    return window


def load(qtbot, window: MainWindow, bundle: Bundle) -> None:
    with qtbot.waitSignal(window.model_ready, timeout=TIMEOUT_MS):
        window.models.load(str(bundle.root))


def ask(qtbot, window: MainWindow, question: str) -> str:
    """Send a question; return the reason the reply ended."""
    window.composer.question_box.setPlainText(question)
    with qtbot.waitSignal(window.session.reply_completed, timeout=TIMEOUT_MS) as blocker:
        window.composer.send_button.click()
    assert window.composer.send_button.isEnabled()
    return blocker.args[0]


def talk(qtbot, window: MainWindow, stream_index: int = 0) -> None:
    """Hold the button until the fake microphone has said everything, then let go."""
    qtbot.mousePress(window.push_to_talk.button, Qt.MouseButton.LeftButton)
    assert (
        window.push_to_talk.microphone is not None and window.status_line.in_use.text() == "● Microphone on"
    )
    factory = window._devices.microphone_stream
    qtbot.waitUntil(lambda: factory.streams[stream_index].fed.is_set(), timeout=TIMEOUT_MS)
    qtbot.wait(100)  # a few polls of the queue
    qtbot.mouseRelease(window.push_to_talk.button, Qt.MouseButton.LeftButton)


def kept_recordings(window: MainWindow) -> list[float]:
    """Seconds of each recording kept, oldest first: in the history, then those waiting among the
    attachments to be sent (with no model to answer, a recording waits there, stored nowhere)."""
    from model.audio_features import load_audio
    from model.media import Audio

    stored = [
        len(load_audio(a.path)) / 16_000
        for chat in window.history.conversations()
        for message in window.history.messages(chat.id)
        for a in message.attachments
        if a.kind == "audio"
    ]
    return stored + [m.seconds for m in window.composer.attachments.media if isinstance(m, Audio)]
