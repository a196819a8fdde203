"""The model side of the window: loads a bundle and runs conversation turns on its own thread.

Threads: a `ConversationWorker` lives on a QThread of its own; its slots run there
and may block (loading, a whole turn). `cancel()` and `speech_state()` may be called from any
thread: `cancel` stops the turn within one decode step (or a question not yet begun, before it
begins) and silences the speakers. Audio chunks go straight from this thread to the audio sink
(whose `write` never blocks), which plays them on its own thread, possibly long after the turn
ended; the GUI thread receives only signals carrying plain values: str, a list of str, or a
frozen dataclass (`ReplyFinished`), and polls `speech_state` (app.window.speech_watch) to know when the
speech is heard.

A question asked by voice is worked on while it is spoken: `begin_listening` (at the press, or when
hands-free hears speech start) encodes the pictures it carries, `hear` encodes its sound in 2 s blocks,
both going into the Thinker's cache (model.pipeline.listening); the `Ask` of its recording names the
press (`listened`), and a press that brings no question is dropped (`drop_listening`). A picture
attached to a typed question is encoded as it is attached (`look`).

A live call (model.pipeline.call) runs the same way, turn after turn: `begin_call` with what shows the
camera or the screen, `call_hear` with everything the microphone hears, the `Ask` of each turn marked
`call` (its question is the turn the call heard and saw), and `end_call`.

The model may run on a server instead (`ModelChoice.server`): the worker then drives a
`RemoteConversation` (app.remote), whose blocking HTTP stream is read here on the worker's thread like
a local turn; its speech goes into the same sink. Nothing is encoded while the user speaks then: the
recording and pictures are sent with the question (`begin_listening`, `hear` and `look` do nothing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot

from app.remote.conversation import RemoteConversation
from app.sound.pacing import slow_speech_note
from app.sound.playback import PlaybackState
from model.audio_rates import OUTPUT_SAMPLE_RATE
from model.detail import DETAILS
from model.errors import OmnideskError
from model.files.bundle import Bundle
from model.hardware import llama_backend
from model.media import Image, Question
from model.perception import PictureShrunk
from model.pipeline import (
    AudioChunk,
    Conversation,
    Listening,
    Mark,
    RecordingCut,
    SpeechCut,
    TextDelta,
    TurnFinished,
    TurnOptions,
)
from model.pipeline.call import Call, CallTurn
from model.pipeline.call import Look as CallLook
from model.placement import PlanChoice
from model.sampling import SamplingOptions
from model.talker import SpeechOptions
from model.thinker_types import ThinkerOptions

log = logging.getLogger(__name__)

SPEECH_AT_END = (
    "This server sends a reply's speech only once the whole reply is made (vllm-omni does so for "
    "Qwen2.5-Omni): it is heard after the text."
)


class AudioSink(Protocol):
    """Where a reply's speech goes (app.sound.playback.Playback; tests give their own)."""

    def begin(self) -> None: ...  # a new reply follows
    def write(self, samples: np.ndarray) -> None: ...  # never blocks
    def finish(self) -> None: ...  # the reply's audio is all written
    def stop(self) -> None: ...  # silence at once (any thread)
    def state(self) -> PlaybackState: ...  # any thread


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
    detail: str = "auto"  # "auto", "sharp" or "quick": how many embeddings a picture gets
    quick_start: bool = False  # Fast speech starts after 12 codes (PlanChoice.quick_start)
    server: str = ""  # a server's URL (app.remote): the model runs there, and the rest is unused
    api_key: str = ""  # the server's ("": none)

    @property
    def plan_choice(self) -> PlanChoice:
        return PlanChoice(
            speech_device=_one_of(self.speech_device, ("auto", "gpu", "cpu")),
            quality=_one_of(self.quality, ("auto", "exact", "fast")),
            thinker_gpu_layers=self.gpu_layers,
            detail=_one_of(self.detail, DETAILS),
            quick_start=self.quick_start,
        )


@dataclass(frozen=True)
class Ask:
    """One question for the worker, with how to answer it."""

    question: Question
    voice: str
    speak: bool
    number: int = 0  # the asker's count of questions: `cancel(through=n)` stops questions up to n
    listened: int = 0  # the `Look` whose listening heard this question's recording (0: none)
    call: bool = False  # the live call's turn: what the call heard and saw is the question (its media unused)
    # time.perf_counter() when it was sent (the end of the question, for the status bar's first text
    # and first audio); None: when the worker takes it
    sent_at: float | None = None


@dataclass(frozen=True)
class Look:
    """The talk key went down (or hands-free heard speech start): listen to the question from now on.

    `images`: the pictures it will carry (screen shots, camera frames), encoded while the user speaks."""

    number: int  # the window's count of presses; the Ask of the recording names it
    images: tuple[Image, ...] = ()


@dataclass(frozen=True)
class ReplyFinished:
    """How a reply ended, for the window's status bar."""

    reason: str  # "end", "length", "cancelled", "context_full" or "error"
    first_text_s: float | None  # seconds from the end of the question to the first text; None: no text
    first_audio_s: float | None  # ... to the first sound from the speakers; None: none yet, or not spoken
    tokens_per_s: float | None  # the Thinker's, after its first token; None: unknown

    @classmethod
    def of(
        cls, finished: TurnFinished, first_audio_s: float | None = None, ready_after_s: float = 0.0
    ) -> ReplyFinished:
        """`ready_after_s`: from the end of the question to the turn's input_ready, from which its
        marks count (the speakers opened, the question's last sound encoded)."""
        first_text = finished.marks.get("first_text")
        first_text_s = None if first_text is None else ready_after_s + first_text
        return cls(finished.reason, first_text_s, first_audio_s, finished.tokens_per_s)

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


@dataclass(frozen=True)
class SpeechState:
    """The speakers' part of the conversation, as the window polls it."""

    reply: int  # which reply is (or was last) spoken: it changes when one begins or is stopped
    pending: bool  # speech written and not yet all played, or more to come: Stop still has something to do
    first_audio_s: float | None  # from the end of the question to the reply's first sound; None: not yet


SILENT = SpeechState(0, False, None)


class ConversationWorker(QObject):
    """Signals:
    model_loaded(str): a description of the loaded bundle and where it runs, or of the server used.
    plan_noted(str): something the user should know once about where the model runs (a GPU too
        small, a torch that cannot use it, speech made slower than it plays, speech cut short for
        running far past its text) and what would help.
    model_failed(str): why the bundle could not be loaded (what to do included).
    text_received(str): the next piece of the reply.
    reply_finished(object): a ReplyFinished: why the reply ended, and its timings.
    turn_failed(str): a turn ended in an error (a reply_finished follows); the conversation stays usable.
    recording_cut(str): a recording was longer than the model hears; how much of it was heard.
    speech_unavailable(str): there is no sound output; replies continue in text.
    speakers_changed(str): the chosen sound output is missing; the system default plays instead.
    voices_known(object): the voice names (a list of str) of the bundle, or that the server lists.
    call_started(str): a call began; its frames in words (e.g. "1 frame a second, up to 16 embeddings each").
    call_failed(str): the call could not begin or go on (what to do included); it has ended.
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
    call_started = Signal(str)
    call_failed = Signal(str)

    def __init__(
        self,
        options: ThinkerOptions = ThinkerOptions(),
        max_tokens: int = 1024,
        sink_factory: SinkFactory | None = None,
        speech: SpeechOptions = SpeechOptions(),
        sampling: SamplingOptions = SamplingOptions(),
        seed: int | None = None,
    ) -> None:
        """`sink_factory`: where speech goes; by default the speakers chosen with `set_output_device`.
        `speech`: the Talker's options (each question brings its voice); `sampling`, `seed`: the
        Thinker's sampling and the turns' seed (TurnOptions')."""
        super().__init__()
        self._options = options
        self._max_tokens = max_tokens
        self._speech = speech
        self._sampling = sampling
        self._seed = seed
        self._sink_factory = sink_factory or self._speakers
        self._output_device: str | None = None
        self._sink: AudioSink | None = None
        self._sink_failed = False
        self._conversation: Conversation | RemoteConversation | None = None
        self._cancelled_through = -1  # questions numbered up to this one are cancelled (any thread)
        self._spoken_since: float | None = None  # time.perf_counter() when the spoken turn's question ended
        self._said_slow = False
        self._listening: tuple[int, Listening] | None = None  # the Look's number, and what it heard
        self._call: Call | None = None
        self._said_speech_at_end = False

    def cancel(self, through: int | None = None) -> None:
        """Stop the reply and silence the speakers (callable from any thread). `through`: the
        number of the last question asked; one not begun yet ends as cancelled when it would."""
        if through is not None:
            self._cancelled_through = max(self._cancelled_through, through)
        if self._conversation is not None:
            self._conversation.cancel()
        sink = self._sink
        if sink is not None:
            sink.stop()

    def speech_state(self) -> SpeechState:
        """The speakers' state (callable from any thread)."""
        sink, since = self._sink, self._spoken_since
        if sink is None:
            return SILENT
        state = sink.state()
        heard = None if state.first_sound is None or since is None else state.first_sound - since
        return SpeechState(state.reply, state.pending, heard)

    @Slot(object)
    def load(self, choice: ModelChoice) -> None:
        self._close_conversation()
        if choice.server:
            self._connect(choice)
            return
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
            f"{bundle.root.name} ({bundle.thinker_dtype}) on {llama_backend()}, speech on {plan.speech_label}"
        )
        for note in plan.notes:
            self.plan_noted.emit(note)
        voice = choice.voice if choice.voice in bundle.voices else None
        try:  # now, not in the first question: the system prompt, and the speech stages to speak it
            for note in conversation.prepare(voice):
                self.plan_noted.emit(note)
        except OmnideskError as exc:
            self.speech_unavailable.emit(f"Speech could not be made ready: {exc}")
        if "mmproj" in bundle.files:  # "what am I looking at?": its first picture need not wait seconds
            try:
                conversation.perception.load_vision()
            except OmnideskError as exc:  # told when a picture is asked about
                log.info("the vision encoder could not be loaded yet: %s", exc)

    def _connect(self, choice: ModelChoice) -> None:
        """Use the model on the server `choice` names; a server that cannot be reached is a model_failed."""
        try:
            remote = RemoteConversation(choice.server, choice.api_key or None, persona=choice.persona)
        except OmnideskError as exc:
            self.model_failed.emit(str(exc))
            return
        try:
            model, voices = remote.model, remote.voices
        except OmnideskError as exc:
            remote.close()
            self.model_failed.emit(f"The server cannot be used: {exc}.")
            return
        self._conversation = remote
        self._said_speech_at_end = False
        self.voices_known.emit(voices)
        self.model_loaded.emit(f"server {remote.base_url} ({model})")

    @Slot(object)
    def restore(self, exchanges: list[tuple[str, str]]) -> None:
        """Continue a saved conversation: (question, reply) texts, oldest first."""
        self.drop_listening()
        if self._conversation is not None:
            self._conversation.restore(exchanges)

    @Slot(str)
    def set_output_device(self, device: str) -> None:
        """Speak through `device` ("" for the system default) from the next turn on."""
        self._output_device = device or None
        self._sink_failed = False
        self._close_sink()

    @Slot(object)
    def look(self, image: Image) -> None:
        """A picture was attached to the question being written: encode it now, so that the question
        finds it encoded (a failure is told when the question is asked)."""
        if isinstance(self._conversation, Conversation):
            try:
                self._conversation.perception.encode_image(image)
            except OmnideskError as exc:
                log.info("an attached picture could not be encoded yet: %s", exc)

    @Slot(object)
    def begin_listening(self, look: Look) -> None:
        """The user began to ask: encode `look`'s pictures, then each 2 s of what they say (`hear`),
        and put them in the Thinker's cache while they speak."""
        self.drop_listening()
        if not isinstance(self._conversation, Conversation):  # none, or a server's: the recording is sent
            return
        listening = self._conversation.listen()
        self._listening = (look.number, listening)
        for image in look.images:
            try:
                listening.look(image)
            except OmnideskError as exc:  # told when the question is asked, where it is encoded again
                log.info("a picture could not be encoded while listening: %s", exc)

    @Slot(object)
    def hear(self, samples: np.ndarray) -> None:
        """The next samples (n,) float32 at 16 kHz of the question being asked."""
        if self._listening is not None:
            self._listening[1].hear(samples)

    @Slot()
    def drop_listening(self) -> None:
        """No question came of the press (too short, turned off): forget what was heard and seen."""
        if self._listening is not None:
            self._listening[1].discard()
            self._listening = None

    @Slot(object)
    def begin_call(self, look: CallLook) -> None:
        """A live call begins: from now on what the microphone hears (`call_hear`) and what `look`
        shows go into the conversation 2 s at a time, turn after turn."""
        self.end_call()
        self.drop_listening()
        if not isinstance(self._conversation, Conversation):
            self.call_failed.emit(
                "A call needs the model on this computer: load a model bundle (a server takes questions)."
            )
            return
        try:
            self._call = Call(self._conversation, look, self._max_tokens)
        except OmnideskError as exc:
            self.call_failed.emit(f"The call could not begin: {exc}")
            return
        self.call_started.emit(self._conversation.plan.vision.call.label)

    @Slot(object, bool)
    def call_hear(self, samples: np.ndarray, speaking: bool) -> None:
        """The microphone's next samples during a call; `speaking`: voice activity hears the user."""
        if self._call is None:
            return
        try:
            self._call.hear(samples, speaking)
        except OmnideskError as exc:  # a frame or the sound could not be encoded: the call ends
            self.end_call()
            self.call_failed.emit(f"The call ended: {exc}")

    @Slot()
    def end_call(self) -> None:
        """The call is over: what its open turn heard and saw is dropped."""
        if self._call is not None:
            self._call.end()
            self._call = None

    def _call_turn(self, request: Ask) -> tuple[Ask, CallTurn | None]:
        """`request` with the call's turn as its question, and the turn (None: not a call's question)."""
        if not request.call or self._call is None or self._call.current is None:
            return request, None
        turn = self._call.turn()
        return replace(request, question=turn.question(request.question.text)), turn

    def _heard(self, request: Ask) -> Listening | None:
        """The listening that heard `request`'s recording; another one is dropped (its question will
        not come: its cache must not outlive this turn's)."""
        listened, self._listening = self._listening, None
        if listened is not None and listened[0] == request.listened:
            return listened[1]
        if listened is not None:
            listened[1].discard()
        return None

    @Slot(object)
    def ask(self, request: Ask) -> None:
        """Answer one question; a reply_finished always follows (after a turn_failed if it failed)."""
        if self._sink is not None:  # a new question silences what is still spoken
            self._sink.stop()
        conversation = self._conversation
        if conversation is None:
            self.turn_failed.emit("No model is loaded yet: choose a model bundle first.")
            self.reply_finished.emit(ReplyFinished("error", None, None, None))
            return
        request, turn = self._call_turn(request)
        heard: Listening | CallTurn | None = turn or self._heard(request)
        if request.number <= self._cancelled_through:  # stopped before it began
            if heard is not None:
                heard.discard()
            self._next_call_turn()
            self.reply_finished.emit(ReplyFinished("cancelled", None, None, None))
            return
        asked = time.perf_counter() if request.sent_at is None else request.sent_at
        sink = self._open_sink() if request.speak else None  # the first opens the speakers: seconds
        if sink is not None:
            sink.begin()
            self._spoken_since = asked
        options = TurnOptions(
            speak=sink is not None,
            max_tokens=self._max_tokens,
            sampling=self._sampling,
            speech=replace(self._speech, voice=request.voice),
            seed=self._seed,
        )
        finished, ready_at = self._run(conversation, request, options, sink, heard)
        self._next_call_turn()  # while the reply plays: the microphone is muted then, unless with headphones
        if sink is not None:
            sink.finish()
        if finished.reason == "error" and request.number <= self._cancelled_through:
            log.info("a stopped turn ended in an error: %s", finished.error)  # stopped is what the user did
            finished = replace(finished, reason="cancelled", error="")
        if finished.reason == "error":
            self.turn_failed.emit(finished.error)
        first_audio_s = self.speech_state().first_audio_s if sink is not None else None
        self.reply_finished.emit(ReplyFinished.of(finished, first_audio_s, max(0.0, ready_at - asked)))
        if isinstance(conversation, RemoteConversation):
            if conversation.speech_at_end and not self._said_speech_at_end:
                self._said_speech_at_end = True
                self.plan_noted.emit(SPEECH_AT_END)
        elif sink is not None and not self._said_slow and sink.state().slow:
            self._said_slow = True
            self.plan_noted.emit(slow_speech_note(conversation.plan.profile == "fast"))

    def _next_call_turn(self) -> None:
        if self._call is not None:
            self._call.next_turn()

    def _run(
        self,
        conversation: Conversation | RemoteConversation,
        request: Ask,
        options: TurnOptions,
        sink: AudioSink | None,
        heard: Listening | CallTurn | None,
    ) -> tuple[TurnFinished, float]:
        """How the turn ended, and when (time.perf_counter()) its input was ready."""
        finished: TurnFinished | None = None
        ready_at = time.perf_counter()
        stopping = False
        if isinstance(conversation, RemoteConversation):
            events = conversation.turn(request.question, options)
        else:
            events = conversation.turn(request.question, options, heard)
        for event in events:
            # A cancel that came as the turn began (which clears the conversation's) is applied here.
            if not stopping and request.number <= self._cancelled_through:
                stopping = True
                conversation.cancel()
            if isinstance(event, TextDelta):
                self.text_received.emit(event.text)
            elif isinstance(event, AudioChunk) and sink is not None:
                sink.write(event.samples)
            elif isinstance(event, Mark) and event.name == "input_ready":
                ready_at = time.perf_counter()
            elif isinstance(event, RecordingCut):
                self.recording_cut.emit(event.message)
            elif isinstance(event, PictureShrunk | SpeechCut):
                self.plan_noted.emit(event.message)
            elif isinstance(event, TurnFinished):
                finished = event
        assert finished is not None
        return finished, ready_at

    def _speakers(self, sample_rate: int) -> AudioSink:
        from app.sound.playback import Playback

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
        """Free the model and the speakers."""
        self._close_conversation()
        self._close_sink()

    def _close_conversation(self) -> None:
        self._listening = None
        self._call = None
        if self._conversation is not None:
            self._conversation.close()
            self._conversation = None

    def _close_sink(self) -> None:
        sink, self._sink = self._sink, None
        close = getattr(sink, "close", None)
        if close is not None:
            close()


def _one_of(value: str, allowed: tuple[Any, ...]) -> Any:
    """A stored choice, or the first (automatic) one if it is not one of `allowed` (an old setting)."""
    return value if value in allowed else allowed[0]
