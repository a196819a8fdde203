"""The threads of one turn and the queues between them.

Threads: `TurnStages.events` runs on the caller's thread and blocks only on the event queue. The
Thinker, Talker and Token2Wav stages each run on a thread of their own (daemon threads, joined by
`stop`); a stage blocks only on its input queue, waking every POLL_S to notice the cancel event, and
on its own computation. `ThinkerFeed.put`/`close` are called from the Thinker's thread and never
block; iterating the feed (inside `Talker.speak`, on the Talker's thread) blocks until a state arrives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shlex
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import torch

from model.errors import ComputeError, OmnideskError
from model.files.bundle import Bundle
from model.files.store import models_dir
from model.pipeline.events import AudioChunk, Event, Mark, SpeechCut, TextDelta, TurnFinished
from model.pipeline.options import TurnOptions
from model.pipeline.out_of_memory import StageOutOfMemory, gpu_stage
from model.placement import ThreadBudget
from model.speech_bound import SpeechBound
from model.talker import Talker
from model.thinker import Thinker
from model.thinker_types import Decoded, Finished, PositionStates, Sampled, Segment
from model.token2wav.streaming import MelChunk, StreamingSynthesizer
from model.token2wav.synthesizer import CODE_RATE, Cancelled, Token2Wav
from model.voices import Voice

POLL_S = 0.02  # how often a waiting stage looks at the cancel flag
# Nice values added to each stage's thread where the plan has more threads than cores (Linux; CFS
# weights 1024, 820, 655, 526 for 0, 1, 2, 3). The Thinker last: until the reply is decoded, speech
# waits on each of its tokens, but needs little of the CPU for each (placement.SPEECH_SHARE). Later
# stages first, so that audio already sampled is heard before more is made; or, where the plan says
# `talker_first`, the Talker first: once the reply is decoded, all speech waits on its chain of codes.
DOWNSTREAM_FIRST = {"vocoder": 0, "dit": 1, "talker": 2, "thinker": 3}
TALKER_FIRST = {"talker": 0, "vocoder": 1, "dit": 2, "thinker": 3}
QUEUE_SIZE = 4096  # bound of every queue between stages (a turn's codes fit in it)

log = logging.getLogger(__name__)

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


class TurnStages:
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
        describe_failure: Callable[[BaseException], str] = repr,
        threads: ThreadBudget | None = None,
        speech_bound: SpeechBound | None = None,
    ) -> None:
        """`describe_failure`: what the user reads of a stage's exception (`failure_message`);
        `threads`: the plan's CPU threads (None: torch's as they are; see `SpeechThreads`), and
        whether the speech stages' threads come before the Thinker's (`downstream_first`; in which
        order: `stage_niceness`);
        `speech_bound`: stop speech that runs far past its text (None: the reference's behaviour)."""
        self.thinker = thinker
        self.describe_failure = describe_failure
        self.niceness = stage_niceness(threads) if threads is not None and threads.downstream_first else None
        assert options.stream is not None, "the conversation sets the plan's stream options"
        first_sound_codes = None  # the whole utterance's sound comes at its end: nothing to wait for
        waits = threads is not None and threads.first_sound_first and not options.full_utterance
        if waits and parts is not None:
            first_sound_codes = options.stream.first_sound_codes(parts[1].block_codes)
        self.first_sound = FirstSound(first_sound_codes, cancel)
        self.speech_threads = SpeechThreads(threads, self.first_sound)
        self.speech_bound = speech_bound
        self.prompt_ids = prompt_ids
        self.prompt = prompt
        self.options = options
        self.stream = options.stream
        self.voice = voice
        self.parts = parts
        self.started = started
        self.cancel = cancel
        self.out: queue.Queue[Any] = queue.Queue(QUEUE_SIZE)
        self.codes: queue.Queue[Any] = queue.Queue(QUEUE_SIZE)
        self.mels: queue.Queue[Any] = queue.Queue(QUEUE_SIZE)  # the DiT's MelChunks (or a whole mel)
        self.feed = ThinkerFeed(self.cancel, poll_s=POLL_S)
        self.text: list[str] = []
        self.reply_ids: tuple[int, ...] = ()
        self.spoken: list[int] = []
        self.reason = "end"
        self.error = ""
        self.heard = False
        self.marked: set[str] = set()  # marks of the Token2Wav stage already sent
        self.synthesizer: StreamingSynthesizer | None = None  # streaming: made by the DiT's thread
        self.marks: dict[str, float] = {"input_ready": 0.0}
        self.thinker_finished: Finished | None = None
        self.finished = TurnFinished("error", "", (), (), "the turn did not run")
        # (thread, what it runs, the plan's stage it is part of): the vocoder is Token2Wav's second half
        stages = [("thinker", self._thinker, "thinker")]
        if parts is not None:
            stages += [
                ("talker", self._talker, "talker"),
                ("dit", self._dit, "token2wav"),
                ("vocoder", self._vocoder, "token2wav"),
            ]
        self.out_of_memory: str | None = None  # the first stage that ran out of GPU memory
        self.threads = [
            threading.Thread(target=self._guard, args=(part, run, name), name=name, daemon=True)
            for name, run, part in stages
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
                if isinstance(item, StageOutOfMemory):
                    self.out_of_memory = self.out_of_memory or item.stage
                self.error = self.error or self.describe_failure(item)
                self.cancel.set()
            else:
                if isinstance(item, Mark):
                    self.marks[item.name] = item.seconds
                yield item
        self.stop()
        self.speech_threads.take_back()
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

    def _guard(self, part: str, stage: Any, name: str) -> None:
        try:
            if self.niceness is not None:
                yield_to_later_stages(self.niceness[name])
            if part != "thinker":
                self.speech_threads.apply(name)
            with gpu_stage(part):
                stage()
        except BaseException as exc:  # every failure becomes an event; nothing dies silently
            self._put(self.out, exc, always=True)
        finally:
            self._put(self.out, _END, always=True)

    def _thinker(self) -> None:
        speaking = self.parts is not None
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
                        if speaking:  # the prompt is decoded: the Talker may decode it too, meanwhile
                            self.feed.put(self.thinker.states(0, self.thinker.n_cached))
                    self.text.append(event.text)
                    if event.text:
                        self._put(self.out, TextDelta(event.text))
                elif isinstance(event, Decoded) and speaking:
                    self.feed.put(event)
                    self.first_sound.wait()  # before the next token
                elif isinstance(event, Finished):
                    self.thinker_finished = event
                    self.reply_ids = event.reply_ids
                    if event.reason in ("length", "context_full"):
                        self.reason = event.reason  # "stop" is the normal end
        finally:
            self.speech_threads.thinker_finished()
            self.feed.close()
            self._put(self.out, self._mark("thinker_done"), always=True)

    def _talker(self) -> None:
        assert self.parts is not None and self.voice is not None
        talker = self.parts[0]
        speech = self.options.speech
        if speech.sampling.seed is None and self.options.seed is not None:
            speech = replace(speech, sampling=replace(speech.sampling, seed=self.options.seed))
        room = talker.max_positions - len(self.prompt_ids) - 2  # its cache holds the prompt, then codes
        speech = replace(speech, max_codes=min(speech.max_codes, room))
        try:
            for code in talker.speak(self.feed, speech, self.cancel):
                if not self.spoken:
                    self._put(self.out, self._mark("first_code"))
                self.spoken.append(code)
                self.first_sound.coded(len(self.spoken))
                self._put(self.codes, code)
                bound = self.speech_bound
                if bound is not None and not bound.allows(len(self.spoken), len(self.text)):
                    self._put(self.out, SpeechCut(len(self.spoken) / CODE_RATE))
                    return  # the Talker's generator is closed as it goes out of scope
                self.speech_threads.apply("talker")
        finally:
            self.speech_threads.talker_finished()
            self._put(self.codes, _END, always=True)
            self._put(self.out, self._mark("talker_done"), always=True)

    def _dit(self) -> None:
        """Token2Wav's first half: codes in, mel out to the vocoder's thread (whole, as the reference
        makes it, in the full-utterance mode)."""
        assert self.parts is not None and self.voice is not None
        try:
            with contextlib.suppress(Cancelled):  # the turn was cancelled mid-window
                self._mels()
        finally:
            self._put(self.mels, _END, always=True)

    def _mels(self) -> None:
        assert self.parts is not None and self.voice is not None
        t2w = self.parts[1]
        if self.options.full_utterance:
            codes = list(self._drain(self.codes))
            if codes and not self.cancel.is_set():
                mel = t2w.mel(codes, self.voice, self.options.seed, self.stream.sampler)
                self._to_vocoder(MelChunk(mel, mel[:, :0]), last=True)
            return
        synthesizer = StreamingSynthesizer(t2w, self.voice, self.options.seed, self.stream, self.cancel)
        self.synthesizer = synthesizer  # the vocoder's thread uses its second half
        pending: list[int] = []
        for code in self._drain(self.codes):
            pending.append(code)
            if self.codes.empty():  # push what has arrived; the synthesizer waits for whole blocks
                self.speech_threads.apply("dit")
                for chunk in synthesizer.mel_chunks(pending):  # each to the vocoder as it is made
                    self._to_vocoder(chunk)
                    self.speech_threads.apply("dit")
                pending = []
        self.speech_threads.apply("dit")
        for chunk in synthesizer.mel_chunks(pending) if pending else ():
            self._to_vocoder(chunk)
        if self.spoken and not self.cancel.is_set():
            for chunk, last in synthesizer.last_mel_chunks():
                self._to_vocoder(chunk, last)

    def _to_vocoder(self, mel: MelChunk, last: bool = False) -> None:
        """Hands `mel` to the vocoder's thread, marking the first mel the DiT finished."""
        if mel.frames and "first_mel" not in self.marked:
            self.marked.add("first_mel")
            self._put(self.out, self._mark("first_mel"))
        self._put(self.mels, (mel, last))

    def _vocoder(self) -> None:
        """Token2Wav's second half, on a thread of its own: the DiT samples the next window meanwhile."""
        assert self.parts is not None
        try:
            for mel, last in self._drain(self.mels):
                self.speech_threads.apply("vocoder")
                if self.synthesizer is None:  # the whole utterance, as the reference vocodes it
                    self._audio(self.parts[1].vocode(mel.final))
                else:
                    self._audio(self.synthesizer.vocode(mel, last))
        finally:
            self.first_sound.sounded()  # or never will: the Thinker waits no more

    def _drain(self, source: queue.Queue[Any]) -> Iterator[Any]:
        """The items of `source` up to its end, or until the turn is cancelled."""
        while not self.cancel.is_set():
            try:
                item = source.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                return
            yield item

    def _audio(self, samples: torch.Tensor) -> None:
        if samples.numel() and not self.cancel.is_set():
            if not self.heard:
                self.heard = True
                self.first_sound.sounded()
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


class SpeechThreads:
    """torch's intra-op threads for the speech stages of one turn. While the Thinker decodes the
    reply, each has the plan's `torch`; once it has finished (`thinker_finished`, from its thread),
    each takes the plan's `speech_alone`, the cores it held. With `talker_first` the Talker keeps
    `torch` instead: it is the chain all speech waits on, one small step after another, which more
    threads speed up little and whose barriers stall while other stages hold the cores; Token2Wav's
    stages take the cores the Thinker held, and all of `speech_alone` once the Talker has finished
    too (`talker_finished`). While the Thinker waits for the first sound (`FirstSound`), Token2Wav's
    stages take `speech_alone` too. At the turn's end `take_back` (the caller's thread) sets `torch`
    again, so that the next turn starts with the Thinker's cores free for it.

    OpenMP keeps the thread count per calling thread, so each stage sets its own: it calls `apply`
    on its thread between its units of work (a DiT window, a vocoder chunk). torch also keeps the
    last count set as the one new threads start with, hence `take_back`."""

    def __init__(self, budget: ThreadBudget | None, first_sound: FirstSound | None = None) -> None:
        self._first_sound = first_sound
        self._narrow = budget.torch if budget is not None else 0
        self._alone = max(self._narrow, budget.speech_alone) if budget is not None else 0
        self._talker_first = budget is not None and budget.talker_first
        self._thinker_done = threading.Event()
        self._talker_done = threading.Event()

    def thinker_finished(self) -> None:
        self._thinker_done.set()

    def talker_finished(self) -> None:
        self._talker_done.set()

    def apply(self, stage: str) -> None:
        """Set the calling stage thread's torch threads to its count for now (nothing without a plan)."""
        count = self._count(stage)
        if count and torch.get_num_threads() != count:
            torch.set_num_threads(count)

    def take_back(self) -> None:
        if self._narrow and self._alone != self._narrow and self._thinker_done.is_set():
            torch.set_num_threads(self._narrow)

    def _count(self, stage: str) -> int:
        if not self._thinker_done.is_set():
            waiting = self._first_sound is not None and self._first_sound.pending and stage != "talker"
            return self._alone if waiting else self._narrow
        if not self._talker_first:
            return self._alone
        if stage == "talker":
            return self._narrow
        return self._alone if self._talker_done.is_set() else max(self._narrow, self._alone - self._narrow)


class FirstSound:
    """The plan's `first_sound_first`: from the code that completes the first sound's window until
    that sound is out, the Thinker waits between tokens, and Token2Wav's stages take the cores it
    held (`SpeechThreads`). The user waits for that sound; nothing waits yet for the Thinker's next
    tokens, which beside the window's DiT and vocoder on too few cores made it 0.2 to 0.4 s later
    (docs/performance.md).

    `coded` is called from the Talker's thread after each code, `sounded` from the vocoder's at the
    first audio and when it ends (however it ends: the Thinker never waits for a sound that will
    not come), `wait` from the Thinker's between tokens; it returns at once where `codes` is None
    (no such plan), and when the turn is cancelled."""

    def __init__(self, codes: int | None, cancel: threading.Event) -> None:
        """`codes`: the codes the first sound's window needs (`StreamOptions.first_sound_codes`)."""
        self._codes = codes
        self._cancel = cancel
        self._open = threading.Event()
        self._open.set()
        self._sounded = False

    @property
    def pending(self) -> bool:
        return not self._open.is_set()

    def coded(self, count: int) -> None:
        if count == self._codes and not self._sounded:
            self._open.clear()

    def sounded(self) -> None:
        self._sounded = True
        self._open.set()

    def wait(self) -> None:
        while not self._open.wait(POLL_S) and not self._cancel.is_set():
            pass


class ThinkerFeed:
    """Carries the Thinker's states to a Talker on another thread, as `Talker.speak`'s `states`.

    The Thinker's thread calls `put` (the prompt's PositionStates first, then each Decoded) and
    `close` at the end of the text; neither blocks. The prompt's states are the whole context
    before the reply, put as soon as the Thinker has sampled its first reply token (its prompt is
    decoded then), so that the Talker decodes the prompt while the Thinker decodes that token (the
    earliest the reference's layout allows: the Talker's first step needs it). Iterating (the Talker's
    thread) blocks on the queue without spinning, waking every `poll_s` only to notice `cancel`;
    it ends at `close` or when cancelled.
    """

    _END = object()

    def __init__(self, cancel: threading.Event | None = None, poll_s: float = 0.05) -> None:
        self._queue: queue.Queue[object] = queue.Queue()
        self._cancel = cancel
        self._poll_s = poll_s

    def put(self, state: PositionStates | Decoded) -> None:
        self._queue.put(state)

    def close(self) -> None:
        self._queue.put(self._END)

    def __iter__(self) -> Iterator[PositionStates | Decoded]:
        while not _cancelled(self._cancel):
            try:
                item = self._queue.get(timeout=self._poll_s)
            except queue.Empty:
                continue
            if item is self._END:
                return
            assert isinstance(item, PositionStates | Decoded)
            yield item


def _cancelled(cancel: threading.Event | None) -> bool:
    return cancel is not None and cancel.is_set()


def stage_niceness(budget: ThreadBudget) -> dict[str, int]:
    """Each stage's nice value where its threads outnumber the cores."""
    return TALKER_FIRST if budget.talker_first else DOWNSTREAM_FIRST


def yield_to_later_stages(niceness: int) -> None:
    """Lower the calling thread's priority by `niceness` (Linux, where each thread has its own)."""
    if niceness <= 0 or sys.platform != "linux":
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):  # a sandbox may forbid it: the stages then share alike
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + niceness)
