"""The streaming voice pipeline: a `Conversation` answers turns in text and speech at once.

A turn runs three stages, each on its own thread, joined by bounded queues:

    thinker   decodes the reply; each token's text goes out at once, and each token fed
              back through the model (its hidden state and input embedding) goes to the Talker;
    talker    turns those states into codec ids, one per step, as soon as each state is there;
    token2wav turns codes into 24 kHz audio chunks as soon as its block structure allows.

The caller's thread iterates `Conversation.turn`, which yields plain events (frozen
dataclasses) from one queue; it blocks only there. Stages block only on their input
queue (waking every POLL_S seconds to notice a cancel) and on their own computation, so
a cancel stops them within one decode step. With speech off, only the Thinker runs and
the Talker and Token2Wav are never loaded. Timing marks are `time.perf_counter()` seconds
since the turn's input was ready.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import shlex
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from model.audio_rates import OUTPUT_SAMPLE_RATE
from model.chat import SPEECH_SYSTEM_PROMPT, ChatFormat
from model.errors import ComputeError, OmnideskError
from model.files.bundle import Bundle
from model.files.store import models_dir
from model.media import Question
from model.perception import EncodedMedia, Perception, prompt_segments, user_message
from model.sampling import SamplingOptions, check_seed
from model.talker import SpeechOptions, Talker, ThinkerFeed
from model.thinker import Decoded, Finished, Sampled, Segment, Thinker, ThinkerOptions
from model.tmrope import TMRoPEConfig
from model.token2wav.streaming import StreamingSynthesizer, StreamOptions
from model.token2wav.synthesizer import Cancelled, Token2Wav
from model.vision import VisionOptions
from model.voices import Voice, load_voices, pick_voice

POLL_S = 0.02  # how often a waiting stage looks at the cancel flag
QUEUE_SIZE = 4096  # bound of every queue between stages (a turn's codes fit in it)

log = logging.getLogger(__name__)


# -- events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class AudioChunk:
    samples: np.ndarray = field(repr=False)  # (n,) float32 in [-1, 1]
    sample_rate: int = OUTPUT_SAMPLE_RATE


@dataclass(frozen=True)
class Mark:
    """A moment of the turn: input_ready, first_text, first_code, first_audio, thinker_done,
    talker_done, done."""

    name: str
    seconds: float


@dataclass(frozen=True)
class ContextTrimmed:
    """The oldest exchanges were dropped so that the turn fits the context."""

    dropped: int
    kept: int


@dataclass(frozen=True)
class TurnFinished:
    reason: str  # "end", "length", "cancelled", "error" or "context_full"
    text: str
    reply_ids: tuple[int, ...]
    codes: tuple[int, ...]
    error: str = ""
    prompt_ids: tuple[int, ...] = ()
    prompt_decoded: int = 0  # prompt tokens the Thinker decoded (the rest came from its KV cache)
    tokens_per_s: float | None = None  # the Thinker's, after its first token
    marks: Mapping[str, float] = field(default_factory=dict)  # every Mark of the turn: name -> seconds


Event = TextDelta | AudioChunk | Mark | ContextTrimmed | TurnFinished


# -- options and history -------------------------------------------------------------------


@dataclass(frozen=True)
class TurnOptions:
    speak: bool = True
    max_tokens: int = 1024
    min_tokens: int = 0  # no stop token before this many (generate's min_new_tokens)
    sampling: SamplingOptions = SamplingOptions()  # the Thinker's
    speech: SpeechOptions = SpeechOptions()  # the Talker's: voice, sampling, max_codes, ...
    seed: int | None = None  # Token2Wav's noise, and the Talker's sampling unless it has its own seed
    full_utterance: bool = False  # the reference's path: all codes first, then one synthesis
    stream: StreamOptions = StreamOptions()

    def __post_init__(self) -> None:
        check_seed(self.seed)


@dataclass(frozen=True)
class Exchange:
    """One question and its reply as the history keeps them (the media already encoded)."""

    question: str
    user_ids: tuple[int, ...]
    reply_ids: tuple[int, ...]
    reply_text: str
    interrupted: bool = False
    media: tuple[EncodedMedia, ...] = ()


@dataclass(frozen=True)
class NativeOptions:
    """Where the Talker and Token2Wav run."""

    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    talker_positions: int = 8192


class Conversation:
    """The history and the Thinker's KV cache of one conversation; `turn` answers the next question.

    One turn at a time; `cancel()` may be called from any thread.
    """

    def __init__(
        self,
        bundle: Bundle,
        thinker_options: ThinkerOptions = ThinkerOptions(),
        native: NativeOptions = NativeOptions(),
        persona: str = "",
        system: str = SPEECH_SYSTEM_PROMPT,
        vision: VisionOptions = VisionOptions(),
    ) -> None:
        """`persona`: the user's own instructions, placed in the first question, since speech
        needs the model's own system prompt. `system` may replace that prompt for text-only use."""
        self.bundle = bundle
        self.native = native
        self.persona = persona
        self.thinker = Thinker(bundle.file("thinker"), bundle.tokens, thinker_options)
        self.chat = ChatFormat(self.thinker.tokenize, bundle.tokens)
        vision = replace(vision, n_threads=vision.n_threads or thinker_options.n_threads)
        self.perception = Perception(bundle, self.thinker, vision, native.device, native.dtype)
        self._tmrope = TMRoPEConfig.from_bundle(bundle.tokens, bundle.config["thinker_config"])
        self.history: list[Exchange] = []
        self._system = self.chat.message("system", system)
        self._cancel = threading.Event()
        self._talker: Talker | None = None
        self._token2wav: Token2Wav | None = None
        self._voices: dict[str, Voice] | None = None

    # -- lazily loaded speech parts --

    @property
    def voices(self) -> dict[str, Voice]:
        if self._voices is None:
            self._voices = load_voices(self.bundle)
        return self._voices

    def _speech_parts(self) -> tuple[Talker, Token2Wav]:
        if self._talker is None:
            self._talker = Talker.load(
                self.bundle,
                self.thinker.input_embeddings,
                self.native.device,
                self.native.dtype,
                max_positions=self.native.talker_positions,
            )
        if self._token2wav is None:
            self._token2wav = Token2Wav.load(self.bundle, self.native.device, self.native.dtype)
        return self._talker, self._token2wav

    # -- turns --

    def cancel(self) -> None:
        """Stop the turn in progress (any thread): all stages end within one step."""
        self._cancel.set()

    def close(self) -> None:
        """Free the Thinker's model and context (the conversation cannot be used afterwards)."""
        self.thinker.close()

    def restore(self, exchanges: list[tuple[str, str]]) -> None:
        """Continue a saved conversation from its (question, reply) texts, oldest first."""
        self.history = []
        for question, reply in exchanges:
            user_ids = tuple(self._user_ids(question, (), first=not self.history))
            self.history.append(Exchange(question, user_ids, tuple(self.thinker.tokenize(reply)), reply))

    def _user_ids(self, text: str, media: Sequence[EncodedMedia], first: bool) -> list[int]:
        """A user turn's ids; the persona goes into the conversation's first question."""
        if first and self.persona:
            text = f"{self.persona}\n\n{text}" if text else self.persona
        if not media:
            return self.chat.message("user", text)
        return user_message(self.thinker.tokenize, self.bundle.tokens, self._tmrope, media, text)

    def prompt_ids(self, question_ids: list[int]) -> list[int]:
        """System prompt, the kept history, the new question and the reply header."""
        ids = list(self._system)
        for exchange in self.history:
            ids += [
                *exchange.user_ids,
                *self.chat.reply_header(),
                *self.chat.closed_reply(list(exchange.reply_ids)),
            ]
        return ids + question_ids + self.chat.reply_header()

    def prompt(
        self, question_ids: list[int], media: Sequence[EncodedMedia] = ()
    ) -> tuple[list[int], list[Segment]]:
        """The whole prompt's ids, and its segments (text and media runs, positions as the reference's)."""
        ids = self.prompt_ids(question_ids)
        every = [m for exchange in self.history for m in exchange.media] + list(media)
        segments, _ = prompt_segments(ids, every, self._tmrope)
        return ids, segments

    def turn(self, question: str | Question, options: TurnOptions = TurnOptions()) -> Iterator[Event]:
        """Answer `question` (text, or text with images and recordings); the last event is always a
        TurnFinished."""
        self._cancel.clear()
        if isinstance(question, str):
            question = Question(question)
        if question.is_empty:
            yield TurnFinished("error", "", (), (), "nothing to answer: the question is empty")
            return
        try:
            voice = pick_voice(self.voices, options.speech.voice) if options.speak else None
            parts = self._speech_parts() if options.speak else None
            media = self.perception.encode(question)
        except Exception as exc:  # a bad question, or a network that fails on its files: an event
            yield TurnFinished("error", "", (), (), failure_message(exc, self.bundle))
            return
        fitted = self._fit(question.text, media, options.max_tokens)
        if fitted is None:
            yield TurnFinished("context_full", "", (), (), "the question alone does not fit the context")
            return
        user_ids, trimmed = fitted
        if trimmed:
            yield ContextTrimmed(dropped=trimmed, kept=len(self.history))
        started = time.perf_counter()
        yield Mark("input_ready", 0.0)
        try:
            ids, segments = self.prompt(user_ids, media)
        except ValueError as exc:  # placeholders and media that disagree: nothing to decode
            yield TurnFinished("error", "", (), (), f"the prompt could not be laid out ({exc})")
            return
        run = _TurnRun(self.thinker, ids, segments, options, voice, parts, started, self._cancel, self.bundle)
        try:
            yield from run.events()
        finally:
            run.stop()
        finished = run.finished
        if finished.reply_ids:
            interrupted = finished.reason == "cancelled"
            self.history.append(
                Exchange(
                    question.text,
                    tuple(user_ids),
                    finished.reply_ids,
                    finished.text,
                    interrupted,
                    tuple(media),
                )
            )

    def _fit(self, text: str, media: Sequence[EncodedMedia], max_tokens: int) -> tuple[list[int], int] | None:
        """Drop the oldest exchanges until the prompt and a full reply fit.

        Returns the question's ids (with the persona if it is now first) and how many
        exchanges were dropped, or None if even the question alone does not fit.
        """
        dropped = 0
        while True:
            user_ids = self._user_ids(text, media, first=not self.history)
            length = len(self.prompt_ids(user_ids))
            if length + max_tokens <= self.thinker.n_ctx or (
                not self.history and length < self.thinker.n_ctx
            ):
                return user_ids, dropped
            if not self.history:
                return None
            self.history.pop(0)
            dropped += 1
            if self.history and self.persona:  # the persona moves to the new first question
                first = self.history[0]
                persona_ids = tuple(self._user_ids(first.question, first.media, first=True))
                self.history[0] = replace(first, user_ids=persona_ids)


_END = object()


def failure_message(exc: BaseException, bundle: Bundle) -> str:
    """What the user reads when a turn failed. A failure that a damaged model file can explain
    (llama.cpp refusing a batch, an error inside a network) says how to find out: opening a bundle
    checks its files' sizes and dates only, `omnidesk models verify` hashes them."""
    if isinstance(exc, OmnideskError) and not isinstance(exc, ComputeError):
        return str(exc)
    log.info("the turn failed", exc_info=exc)  # the details, for the log file (the terminal: one line)
    cause = " ".join(str(exc).split())  # one line, whatever the library wrote
    if not isinstance(exc, OmnideskError):
        cause = f"{type(exc).__name__}: {cause}"
    name = bundle.root.name if bundle.root.parent == models_dir() else shlex.quote(str(bundle.root))
    return f"{cause}. If it happens again, a model file may be damaged: omnidesk models verify {name}"


class _TurnRun:
    """The threads of one turn and the queues between them."""

    def __init__(
        self,
        thinker: Thinker,
        prompt_ids: list[int],
        prompt: list[Segment],
        options: TurnOptions,
        voice: Voice | None,
        parts: tuple[Talker, Token2Wav] | None,
        started: float,
        cancel: threading.Event,
        bundle: Bundle,
    ) -> None:
        self.thinker = thinker
        self.bundle = bundle
        self.prompt_ids = prompt_ids
        self.prompt = prompt
        self.options = options
        self.voice = voice
        self.parts = parts
        self.started = started
        self.cancel = cancel
        self.out: queue.Queue[Any] = queue.Queue(QUEUE_SIZE)
        self.codes: queue.Queue[Any] = queue.Queue(QUEUE_SIZE)
        self.feed = ThinkerFeed(self.cancel, poll_s=POLL_S)
        self.text: list[str] = []
        self.reply_ids: tuple[int, ...] = ()
        self.spoken: list[int] = []
        self.reason = "end"
        self.error = ""
        self.heard = False
        self.marks: dict[str, float] = {"input_ready": 0.0}
        self.thinker_finished: Finished | None = None
        self.finished = TurnFinished("error", "", (), (), "the turn did not run")
        stages = [("thinker", self._thinker)]
        if parts is not None:
            stages += [("talker", self._talker), ("token2wav", self._token2wav)]
        self.threads = [
            threading.Thread(target=self._guard, args=(f,), name=n, daemon=True) for n, f in stages
        ]

    def events(self) -> Iterator[Event]:
        for thread in self.threads:
            thread.start()
        running = len(self.threads)
        while running:
            item = self.out.get()
            if item is _END:
                running -= 1
            elif isinstance(item, BaseException):
                self.error = self.error or failure_message(item, self.bundle)
                self.cancel.set()
            else:
                if isinstance(item, Mark):
                    self.marks[item.name] = item.seconds
                yield item
        self.stop()
        if self.error:
            self.reason = "error"
        elif self.cancel.is_set():
            self.reason = "cancelled"
        done = self._mark("done")
        self.marks[done.name] = done.seconds
        yield done
        thinker = self.thinker_finished
        self.finished = TurnFinished(
            self.reason,
            "".join(self.text),
            self.reply_ids,
            tuple(self.spoken),
            self.error,
            prompt_ids=tuple(self.prompt_ids),
            prompt_decoded=thinker.prompt_decoded if thinker else 0,
            tokens_per_s=thinker.tokens_per_s if thinker else None,
            marks=dict(self.marks),
        )
        yield self.finished

    def stop(self) -> None:
        """Cancel if still running and wait for every thread (emptying the event queue meanwhile,
        so that no stage waits on a caller that stopped listening)."""
        if any(t.is_alive() for t in self.threads):
            self.cancel.set()
        for thread in self.threads:
            while thread.ident is not None and thread.is_alive():
                thread.join(POLL_S)
                while not self.out.empty():
                    self.out.get_nowait()

    # -- stages (each on its own thread) --

    def _guard(self, stage: Any) -> None:
        try:
            stage()
        except BaseException as exc:  # every failure becomes an event; nothing dies silently
            self._put(self.out, exc, always=True)
        finally:
            self._put(self.out, _END, always=True)

    def _thinker(self) -> None:
        speaking = self.parts is not None
        first_decoded = True
        try:
            generate = self.thinker.generate(
                self.prompt,
                self.options.sampling,
                self.options.max_tokens,
                self.cancel,
                self.options.min_tokens,
            )
            for event in generate:
                if isinstance(event, Sampled):
                    if not self.text:
                        self._put(self.out, self._mark("first_text"))
                    self.text.append(event.text)
                    if event.text:
                        self._put(self.out, TextDelta(event.text))
                elif isinstance(event, Decoded) and speaking:
                    if first_decoded:
                        self.feed.put(self.thinker.states(0, event.index))
                        first_decoded = False
                    self.feed.put(event)
                elif isinstance(event, Finished):
                    self.thinker_finished = event
                    self.reply_ids = event.reply_ids
                    if event.reason in ("length", "context_full"):
                        self.reason = event.reason  # "stop" is the normal end
        finally:
            self.feed.close()
            self._put(self.out, self._mark("thinker_done"), always=True)

    def _talker(self) -> None:
        assert self.parts is not None and self.voice is not None
        talker = self.parts[0]
        speech = self.options.speech
        if speech.sampling.seed is None and self.options.seed is not None:
            speech = replace(speech, sampling=replace(speech.sampling, seed=self.options.seed))
        try:
            states = iter(self.feed)
            prompt = next(states, None)
            if prompt is None:  # cancelled, or the Thinker ended, before its first reply token
                return
            for code in talker.speak(itertools.chain([prompt], states), speech, self.cancel):
                if not self.spoken:
                    self._put(self.out, self._mark("first_code"))
                self.spoken.append(code)
                self._put(self.codes, code)
        finally:
            self._put(self.codes, _END, always=True)
            self._put(self.out, self._mark("talker_done"), always=True)

    def _token2wav(self) -> None:
        with contextlib.suppress(Cancelled):  # the turn was cancelled mid-window
            self._synthesize()

    def _synthesize(self) -> None:
        assert self.parts is not None and self.voice is not None
        t2w = self.parts[1]
        if self.options.full_utterance:
            codes = list(self._drain_codes())
            if codes and not self.cancel.is_set():
                self._audio(t2w.synthesize(codes, self.voice, self.options.seed, self.options.stream.sampler))
            return
        synth = StreamingSynthesizer(t2w, self.voice, self.options.seed, self.options.stream, self.cancel)
        pending: list[int] = []
        for code in self._drain_codes():
            pending.append(code)
            if self.codes.empty():  # push what has arrived; the synthesizer waits for whole blocks
                self._audio(synth.push(pending))
                pending = []
        if pending:
            self._audio(synth.push(pending))
        if self.spoken and not self.cancel.is_set():
            self._audio(synth.finish())

    def _drain_codes(self) -> Iterator[int]:
        while not self.cancel.is_set():
            try:
                item = self.codes.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                return
            yield int(item)

    def _audio(self, samples: torch.Tensor) -> None:
        if samples.numel() and not self.cancel.is_set():
            if not self.heard:
                self.heard = True
                self._put(self.out, self._mark("first_audio"))
            self._put(self.out, AudioChunk(samples.detach().float().cpu().numpy()))

    # -- helpers --

    def _mark(self, name: str) -> Mark:
        return Mark(name, time.perf_counter() - self.started)

    def _put(self, target: queue.Queue[Any], item: object, always: bool = False) -> None:
        """Put without blocking forever: a full queue is waited on only while the turn runs."""
        while True:
            try:
                target.put(item, timeout=POLL_S)
                return
            except queue.Full:
                if self.cancel.is_set() and not always:
                    return
