"""The model side of the window: loads a bundle and runs conversation turns on its own thread.

Threads: a `ConversationWorker` lives on a QThread of its own; its slots run there
and may block (loading, a whole turn). `cancel()` may be called from any thread and
stops the turn within one decode step. Audio chunks go straight from this thread to
the audio sink (whose `write` never blocks); the GUI thread receives only signals
carrying plain values: str, a list of str, or a frozen dataclass (`ReplyFinished`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot

from model.audio_rates import OUTPUT_SAMPLE_RATE
from model.errors import OmnideskError
from model.files.bundle import Bundle
from model.hardware import llama_backend
from model.media import Question
from model.pipeline import AudioChunk, Conversation, RecordingCut, TextDelta, TurnFinished, TurnOptions
from model.placement import PlanChoice
from model.talker import SpeechOptions
from model.thinker import ThinkerOptions


class AudioSink(Protocol):
    def write(self, samples: np.ndarray) -> None: ...
    def finish(self) -> None: ...
    def stop(self) -> None: ...


SinkFactory = Callable[[int], AudioSink]  # sample rate -> sink; raises OmnideskError if none


@dataclass(frozen=True)
class ModelChoice:
    """What to load and how: a bundle folder, the persona, where speech runs and how (the plan's
    choice), and the voice to have ready ("" when replies are not spoken)."""

    folder: str
    gpu_layers: int = -1  # the Thinker's on the GPU; -1: as many as fit
    persona: str = ""
    speech_device: str = "auto"  # "auto", "gpu" or "cpu"
    quality: str = "auto"  # "auto", "exact" or "fast"
    voice: str = ""

    @property
    def plan_choice(self) -> PlanChoice:
        return PlanChoice(
            speech_device=_one_of(self.speech_device, ("auto", "gpu", "cpu")),
            quality=_one_of(self.quality, ("auto", "exact", "fast")),
            thinker_gpu_layers=self.gpu_layers,
        )


@dataclass(frozen=True)
class Ask:
    """One question for the worker, with how to answer it."""

    question: Question
    voice: str
    speak: bool


@dataclass(frozen=True)
class ReplyFinished:
    """How a reply ended, for the window's status bar."""

    reason: str  # "end", "length", "cancelled", "context_full" or "error"
    first_text_s: float | None  # seconds from the end of the question to the first text; None: no text
    first_audio_s: float | None  # ... to the first audio; None: not spoken
    tokens_per_s: float | None  # the Thinker's, after its first token; None: unknown

    @classmethod
    def of(cls, finished: TurnFinished) -> ReplyFinished:
        marks = finished.marks
        return cls(finished.reason, marks.get("first_text"), marks.get("first_audio"), finished.tokens_per_s)

    @property
    def speeds(self) -> str:
        """The timings that are known, as the status bar shows them."""
        parts = []
        if self.first_audio_s is not None:
            parts.append(f"first audio {self.first_audio_s * 1000:.0f} ms")
        if self.first_text_s is not None:
            parts.append(f"first token {self.first_text_s * 1000:.0f} ms")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.1f} tokens/s")
        return " · ".join(parts)


class ConversationWorker(QObject):
    """Signals:
    model_loaded(str): a description of the loaded bundle and where it runs.
    plan_noted(str): something the user should know once about where the model runs (a GPU too
        small, a torch that cannot use it) and what would help.
    model_failed(str): why the bundle could not be loaded (what to do included).
    text_received(str): the next piece of the reply.
    reply_finished(object): a ReplyFinished: why the reply ended, and its timings.
    turn_failed(str): a turn ended in an error; the conversation stays usable.
    recording_cut(str): a recording was longer than the model hears; how much of it was heard.
    speech_unavailable(str): there is no sound output; replies continue in text.
    speakers_changed(str): the chosen sound output is missing; the system default plays instead.
    voices_known(object): the bundle's voice names (a list of str).
    """

    model_loaded = Signal(str)
    plan_noted = Signal(str)
    model_failed = Signal(str)
    text_received = Signal(str)
    reply_finished = Signal(object)
    turn_failed = Signal(str)
    recording_cut = Signal(str)
    speech_unavailable = Signal(str)
    speakers_changed = Signal(str)
    voices_known = Signal(object)

    def __init__(
        self,
        options: ThinkerOptions = ThinkerOptions(),
        max_tokens: int = 1024,
        sink_factory: SinkFactory | None = None,
        speech: SpeechOptions = SpeechOptions(),
    ) -> None:
        """`sink_factory`: where speech goes; by default the speakers chosen with `set_output_device`.
        `speech`: the Talker's options (each question brings its voice)."""
        super().__init__()
        self._options = options
        self._max_tokens = max_tokens
        self._speech = speech
        self._sink_factory = sink_factory or self._speakers
        self._output_device: str | None = None
        self._sink: AudioSink | None = None
        self._sink_failed = False
        self._conversation: Conversation | None = None

    def cancel(self) -> None:
        """Stop the reply and silence the speakers (callable from any thread)."""
        if self._conversation is not None:
            self._conversation.cancel()
        if self._sink is not None:
            self._sink.stop()

    @Slot(object)
    def load(self, choice: ModelChoice) -> None:
        self.close()
        try:
            bundle = Bundle.open(choice.folder)
            options = replace(self._options, n_gpu_layers=choice.gpu_layers)
            conversation = Conversation.planned(bundle, choice.plan_choice, options, persona=choice.persona)
        except OmnideskError as exc:
            self.model_failed.emit(str(exc))
            return
        self._conversation = conversation
        plan = conversation.plan
        self.voices_known.emit(sorted(bundle.voices))
        self.model_loaded.emit(
            f"{bundle.root.name} ({bundle.thinker_dtype}) on {llama_backend()}, "
            f"speech on {plan.talker.label} ({plan.profile})"
        )
        for note in plan.notes:
            self.plan_noted.emit(note)
        voice = choice.voice if choice.voice in bundle.voices else None
        try:  # now, not in the first question: the system prompt, and the speech stages to speak it
            conversation.prepare(voice)
        except OmnideskError as exc:
            self.speech_unavailable.emit(f"Speech could not be made ready: {exc}")

    @Slot(object)
    def restore(self, exchanges: list[tuple[str, str]]) -> None:
        """Continue a saved conversation: (question, reply) texts, oldest first."""
        if self._conversation is not None:
            self._conversation.restore(exchanges)

    @Slot(str)
    def set_output_device(self, device: str) -> None:
        """Speak through `device` ("" for the system default) from the next turn on."""
        self._output_device = device or None
        self._sink_failed = False
        if self._sink is not None:
            close = getattr(self._sink, "close", None)
            if close is not None:
                close()
            self._sink = None

    @Slot(object)
    def ask(self, request: Ask) -> None:
        conversation = self._conversation
        if conversation is None:
            self.turn_failed.emit("No model is loaded yet: choose a model bundle first.")
            return
        sink = self._open_sink() if request.speak else None
        options = TurnOptions(
            speak=sink is not None,
            max_tokens=self._max_tokens,
            speech=replace(self._speech, voice=request.voice),
        )
        finished: TurnFinished | None = None
        for event in conversation.turn(request.question, options):
            if isinstance(event, TextDelta):
                self.text_received.emit(event.text)
            elif isinstance(event, AudioChunk) and sink is not None:
                sink.write(event.samples)
            elif isinstance(event, RecordingCut):
                self.recording_cut.emit(event.message)
            elif isinstance(event, TurnFinished):
                finished = event
        if sink is not None:
            sink.finish()
        assert finished is not None
        if finished.reason == "error":
            self.turn_failed.emit(finished.error)
        self.reply_finished.emit(ReplyFinished.of(finished))

    def _speakers(self, sample_rate: int) -> AudioSink:
        from app.playback import Playback

        if self._output_device is None:
            return Playback(sample_rate)
        try:
            return Playback(sample_rate, device=self._output_device)
        except OmnideskError:
            playback = Playback(sample_rate)
            missing = self._output_device
            self.speakers_changed.emit(f"The sound output “{missing}” is missing: the system default plays.")
            self._output_device = None
            return playback

    def _open_sink(self) -> AudioSink | None:
        if self._sink is None and not self._sink_failed:
            try:
                self._sink = self._sink_factory(OUTPUT_SAMPLE_RATE)
            except OmnideskError as exc:
                self._sink_failed = True
                self.speech_unavailable.emit(f"{exc}. Replies are in text only.")
        return self._sink

    def close(self) -> None:
        if self._conversation is not None:
            self._conversation.close()
            self._conversation = None


def _one_of(value: str, allowed: tuple[Any, ...]) -> Any:
    """A stored choice, or the first (automatic) one if it is not one of `allowed` (an old setting)."""
    return value if value in allowed else allowed[0]
