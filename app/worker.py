"""The model side of the window: loads a bundle and runs conversation turns on its own thread.

Threads: a `ConversationWorker` lives on a QThread of its own; its slots run there
and may block (loading, a whole turn). `cancel()` may be called from any thread and
stops the turn within one decode step. Audio chunks go straight from this thread to
the audio sink (whose `write` never blocks); the GUI thread receives only signals
carrying plain str/float values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot

from model.errors import OmnideskError
from model.files.bundle import Bundle
from model.pipeline import SAMPLE_RATE, AudioChunk, Conversation, Mark, TextDelta, TurnFinished, TurnOptions
from model.talker import SpeechOptions
from model.thinker import ThinkerOptions, llama_backend


class AudioSink(Protocol):
    def write(self, samples: np.ndarray) -> None: ...
    def finish(self) -> None: ...
    def stop(self) -> None: ...


SinkFactory = Callable[[int], AudioSink]  # sample rate -> sink; raises OmnideskError if none


def speakers(sample_rate: int) -> AudioSink:
    from app.playback import Playback

    return Playback(sample_rate)


class ConversationWorker(QObject):
    """Signals:
    model_loaded(str): a description of the loaded bundle and its device.
    model_failed(str): why the bundle could not be loaded (what to do included).
    text_received(str): the next piece of the reply.
    reply_finished(str, float, float, float): reason ("end", "length", "cancelled",
        "context_full", "error"), seconds to the first text and to the first audio, and the
        Thinker's tokens per second (nan when unknown).
    turn_failed(str): a turn ended in an error; the conversation stays usable.
    speech_unavailable(str): there is no sound output; replies continue in text.
    voices_known(object): the bundle's voice names (a list of str).
    """

    model_loaded = Signal(str)
    model_failed = Signal(str)
    text_received = Signal(str)
    reply_finished = Signal(str, float, float, float)
    turn_failed = Signal(str)
    speech_unavailable = Signal(str)
    voices_known = Signal(object)

    def __init__(
        self,
        options: ThinkerOptions = ThinkerOptions(),
        max_tokens: int = 1024,
        sink_factory: SinkFactory = speakers,
        max_codes: int = 4096,
    ) -> None:
        super().__init__()
        self._options = options
        self._max_tokens = max_tokens
        self._max_codes = max_codes
        self._sink_factory = sink_factory
        self._sink: AudioSink | None = None
        self._sink_failed = False
        self._conversation: Conversation | None = None

    def cancel(self) -> None:
        """Stop the reply and silence the speakers (callable from any thread)."""
        if self._conversation is not None:
            self._conversation.cancel()
        if self._sink is not None:
            self._sink.stop()

    @Slot(str)
    def load(self, folder: str) -> None:
        self.close()
        try:
            bundle = Bundle.open(folder)
            self._conversation = Conversation(bundle, self._options)
        except OmnideskError as exc:
            self.model_failed.emit(str(exc))
            return
        self.voices_known.emit(sorted(bundle.voices))
        self.model_loaded.emit(f"{bundle.root.name} ({bundle.thinker_dtype}) on {llama_backend()}")

    @Slot(object)
    def restore(self, exchanges: list[tuple[str, str]]) -> None:
        """Continue a saved conversation: (question, reply) texts, oldest first."""
        if self._conversation is not None:
            self._conversation.restore(exchanges)

    @Slot(str, str, bool)
    def ask(self, text: str, voice: str, speak: bool) -> None:
        conversation = self._conversation
        if conversation is None:
            self.turn_failed.emit("No model is loaded yet: choose a model bundle first.")
            return
        sink = self._open_sink() if speak else None
        speech = SpeechOptions(voice=voice, max_codes=self._max_codes)
        options = TurnOptions(speak=sink is not None, max_tokens=self._max_tokens, speech=speech)
        marks: dict[str, float] = {}
        finished: TurnFinished | None = None
        for event in conversation.turn(text, options):
            if isinstance(event, TextDelta):
                self.text_received.emit(event.text)
            elif isinstance(event, AudioChunk) and sink is not None:
                sink.write(event.samples)
            elif isinstance(event, Mark):
                marks[event.name] = event.seconds
            elif isinstance(event, TurnFinished):
                finished = event
        if sink is not None:
            sink.finish()
        assert finished is not None
        if finished.reason == "error":
            self.turn_failed.emit(finished.error)
        self.reply_finished.emit(
            finished.reason,
            marks.get("first_text", math.nan),
            marks.get("first_audio", math.nan),
            math.nan if finished.tokens_per_s is None else finished.tokens_per_s,
        )

    def _open_sink(self) -> AudioSink | None:
        if self._sink is None and not self._sink_failed:
            try:
                self._sink = self._sink_factory(SAMPLE_RATE)
            except OmnideskError as exc:
                self._sink_failed = True
                self.speech_unavailable.emit(f"{exc}. Replies are in text only.")
        return self._sink

    def close(self) -> None:
        if self._conversation is not None:
            self._conversation.thinker.close()
            self._conversation = None
