"""A conversation: its history, its prompt, and `Conversation.turn`, which answers the next question.

Threads: `turn` runs on the caller's thread and starts the stages' threads (`stages.py`) for each
turn; `cancel` may be called from any thread.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, cast

import torch

from model.files.bundle import Bundle
from model.hardware import probe
from model.media import Question
from model.memory_reuse import keep_freed_memory
from model.native_library import NativeBuildError
from model.perception import EncodedMedia, Perception, pictures_shrunk, recording_cuts
from model.pipeline.call import CallTurn, Look
from model.pipeline.events import ContextTrimmed, Event, Mark, TurnFinished
from model.pipeline.listening import Listening
from model.pipeline.options import TurnOptions
from model.pipeline.out_of_memory import StageOutOfMemory, gpu_stage, release_cached_gpu_memory
from model.pipeline.stages import TurnStages, failure_message
from model.placement import (
    EXACT,
    IN_A_SENTENCE,
    STAGES,
    Plan,
    PlanChoice,
    Stage,
    bundle_needs,
    make_plan,
    talker_cache_positions,
)
from model.prompt_layout import SPEECH_SYSTEM_PROMPT, PromptLayout
from model.talker import Talker
from model.thinker import Thinker
from model.thinker_types import DEFAULT_CONTEXT, Segment, ThinkerOptions, TokenRun
from model.tmrope import TMRoPEConfig
from model.token2wav.streaming import warm_windows
from model.token2wav.synthesizer import Token2Wav
from model.torch_threads import intra_op_threads
from model.vision import VisionOptions
from model.voices import Voice, load_voices, pick_voice

log = logging.getLogger(__name__)

CALL_HISTORY_SHARE = 0.5  # of the context a call's history may fill; its open turn and the reply the rest


@dataclass(frozen=True)
class Exchange:
    """One question and its reply as the history keeps them (the media already encoded)."""

    question: str
    user_ids: tuple[int, ...]
    reply_ids: tuple[int, ...]
    reply_text: str
    interrupted: bool = False
    media: tuple[EncodedMedia, ...] = ()


class Conversation:
    """The history and the Thinker's KV cache of one conversation; `turn` answers the next question.

    One turn at a time; `cancel()` may be called from any thread.
    """

    def __init__(
        self,
        bundle: Bundle,
        thinker_options: ThinkerOptions = ThinkerOptions(),
        plan: Plan = EXACT,
        persona: str = "",
        system: str = SPEECH_SYSTEM_PROMPT,
        vision: VisionOptions = VisionOptions(),
    ) -> None:
        """`plan`: where the stages run and the speech profile (`Conversation.planned` makes it for this
        machine; the default is the reference's path on the CPU). `persona`: the user's own
        instructions, placed in the first question, since speech needs the model's own system
        prompt. `system` may replace that prompt for text-only use."""
        self.bundle = bundle
        self.plan = plan
        self.persona = persona
        thinker_options = plan.thinker_options(thinker_options)
        self.thinker = Thinker(bundle.file("thinker"), bundle.tokens, thinker_options)
        tmrope = TMRoPEConfig.from_bundle(bundle.tokens, bundle.config["thinker_config"])
        self.layout = PromptLayout(self.thinker.tokenize, bundle.tokens, tmrope)
        vision = plan.vision_options(vision)
        vision = replace(vision, n_threads=vision.n_threads or thinker_options.n_threads)
        encoder = plan.audio_encoder
        self.perception = Perception(
            bundle, self.thinker, vision, encoder.device, encoder.dtype, audio_threads=plan.prompt_threads
        )
        self.history: list[Exchange] = []
        self._system = self.layout.message("system", system)
        self._cancel = threading.Event()
        self._talker: Talker | None = None
        self._token2wav: Token2Wav | None = None
        self._voices: dict[str, Voice] | None = None
        self.graph_capture_s = 0.0  # Token2Wav's window graph, captured by `prepare` (0: none)

    @classmethod
    def planned(
        cls,
        bundle: Bundle,
        choice: PlanChoice = PlanChoice(),
        thinker_options: ThinkerOptions = ThinkerOptions(),
        **kwargs: Any,
    ) -> Conversation:
        """A conversation placed for this machine: the plan from the hardware, the bundle and the
        user's `choice` (what every entry point uses). The native stages' CPU threads are set here,
        for the process: torch has one pool of them; and so is the reuse of freed memory, before the
        stages' threads start (`memory_reuse`)."""
        # The memory for the context asked for, or for the default's (at most: a model trained on fewer
        # tokens gets its own, smaller context).
        n_ctx = thinker_options.n_ctx or DEFAULT_CONTEXT
        plan = make_plan(probe(), bundle_needs(bundle, n_ctx), choice)
        if plan.threads is not None:
            torch.set_num_threads(plan.threads.torch)
        keep_freed_memory()
        return cls(bundle, thinker_options, plan, **kwargs)

    # -- lazily loaded speech parts --

    @property
    def voices(self) -> dict[str, Voice]:
        if self._voices is None:
            self._voices = load_voices(self.bundle)
        return self._voices

    def prepare(self, voice: str | None = None) -> list[str]:
        """Do now what every turn needs, so that the first question does not wait for it: decode the
        system prompt; with a `voice`, also load the Talker and Token2Wav, put the system prompt in
        the Talker's cache and compute the voice's speaker features. A stage that runs out of GPU
        memory here moves to the CPU at once; returns what to tell the user of such moves, and of the
        plan's other changes (the vocoder's fused activations that could not be built)."""
        self.thinker.prefill([TokenRun(tuple(self._system))])
        if voice is None:
            return []
        noted = len(self.plan.notes)  # each move, or change, is noted in the plan
        for _ in STAGES:  # each stage moves at most once; after that it runs on the CPU
            try:
                talker, token2wav = self._speech_parts()
                with gpu_stage("talker"):
                    talker.prime(self.thinker.states(0, len(self._system)))
                with gpu_stage("token2wav"):
                    chosen = pick_voice(self.voices, voice)
                    token2wav.voice_features(chosen)
                    self._warm(token2wav, chosen)
                break
            except StageOutOfMemory as exc:
                self._without_gpu(cast(Stage, exc.stage), then=".")
        return list(self.plan.notes[noted:])

    def _warm(self, token2wav: Token2Wav, voice: Voice) -> None:
        """Capture the window graph the plan's stream replays (the Talker's are captured as it loads);
        on a CPU, build the kernels of the first chunks' window widths (`streaming.warm_windows`: a
        few seconds here, and the first reply's first audio comes about 0.3 s sooner)."""
        stream = self.plan.stream
        if stream.fixed_windows:
            self.graph_capture_s += token2wav.warm(stream.window_codes(token2wav.block_codes), stream.sampler)
        elif self.plan.token2wav.device == "cpu":
            warm_windows(token2wav, voice, stream)

    def _speech_parts(self) -> tuple[Talker, Token2Wav]:
        plan = self.plan
        if self._talker is None:
            with gpu_stage("talker"):
                self._talker = Talker.load(
                    self.bundle,
                    self.thinker.input_embeddings,
                    plan.talker.device,
                    plan.talker.dtype,
                    max_positions=talker_cache_positions(self.thinker.n_ctx),
                    compile=plan.compile_talker,
                    weights=None if plan.talker_weights == "float" else plan.talker_weights,
                    prompt_copy=plan.talker_prompt_copy,
                )
        if self._token2wav is None:
            with gpu_stage("token2wav"):
                self._token2wav = self._load_token2wav()
        return self._talker, self._token2wav

    def _load_token2wav(self) -> Token2Wav:
        """Token2Wav as the plan says; where the vocoder's fused activations cannot be built here, with
        torch's, the plan noting why and what to install."""
        plan = self.plan
        placed = plan.token2wav
        load = partial(Token2Wav.load, self.bundle, placed.device, placed.dtype, plan.int8_dit)
        if plan.fused_vocoder:
            try:
                return load(fused_vocoder=True)
            except NativeBuildError as exc:
                why = f"Speech is made more slowly than it could be here: {exc}."
                log.warning(why)
                self.plan = replace(plan, fused_vocoder=False, notes=(*plan.notes, why))
        return load()

    def _without_gpu(self, stage: Stage, then: str = "; ask again.") -> str:
        """After `stage` ran out of GPU memory: the next turns run it on the CPU (the plan without it on
        the GPU; the stage is loaded again there). Returns what to tell the user, ending in `then`."""
        why = f"The GPU ran out of memory: {IN_A_SENTENCE[stage]} now runs on the CPU{then}"
        self.plan = self.plan.without_gpu(stage, why)
        if stage == "talker":
            self._talker = None
        elif stage == "token2wav":
            self._token2wav = None
        else:
            self.perception.place_audio_encoder(self.plan.audio_encoder.device, self.plan.audio_encoder.dtype)
        release_cached_gpu_memory()
        return why

    # -- turns --

    def cancel(self) -> None:
        """Stop the turn in progress (any thread): all stages end within one step."""
        self._cancel.set()

    def close(self) -> None:
        """Free the Thinker's model and context and the speech stages, and give what torch keeps cached
        on the GPU (the captured graphs' pools included) back to it, so that the next model loaded (a
        reload after a change in Settings) finds the memory free. The conversation cannot be used
        afterwards."""
        self.thinker.close()
        self._talker = self._token2wav = None
        self.perception.place_audio_encoder(self.plan.audio_encoder.device, self.plan.audio_encoder.dtype)
        gc.collect()  # the stages' graphs hold their tensors in reference cycles (steps bound to them)
        release_cached_gpu_memory()

    def restore(self, exchanges: list[tuple[str, str]]) -> None:
        """Continue a saved conversation from its (question, reply) texts, oldest first."""
        self.history = []
        self.perception.forget_images()
        for question, reply in exchanges:
            user_ids = tuple(self._user_ids(question, (), first=not self.history))
            self.history.append(Exchange(question, user_ids, tuple(self.thinker.tokenize(reply)), reply))

    def _user_ids(self, text: str, media: Sequence[EncodedMedia], first: bool) -> list[int]:
        """A user turn's ids; the persona goes into the conversation's first question."""
        if first and self.persona:
            text = f"{self.persona}\n\n{text}" if text else self.persona
        return self.layout.user(text, media)

    def prompt_ids(self, question_ids: list[int]) -> list[int]:
        """System prompt, the kept history, the new question and the reply header."""
        ids = list(self._system)
        for exchange in self.history:
            ids += [
                *exchange.user_ids,
                *self.layout.reply_header(),
                *self.layout.closed_reply(exchange.reply_ids),
            ]
        return ids + question_ids + self.layout.reply_header()

    def prompt(
        self, question_ids: list[int], media: Sequence[EncodedMedia] = ()
    ) -> tuple[list[int], list[Segment]]:
        """The whole prompt's ids, and its segments (text and media runs, positions as the reference's)."""
        ids = self.prompt_ids(question_ids)
        every = [m for exchange in self.history for m in exchange.media] + list(media)
        segments, _ = self.layout.segments(ids, every)
        return ids, segments

    def call_turn(self, look: Look, reply_tokens: int = TurnOptions().max_tokens) -> CallTurn:
        """The next user turn of a live call while it happens (model/pipeline/call.py): its frames, from
        `look`, and its sound go into the cache 2 s at a time (then `turn(turn.question(), heard=turn)`,
        or `discard()`). The history keeps at most CALL_HISTORY_SHARE of the context, losing its oldest
        media first (`forget_old_media`), and what stays is put in the cache now, before the turn's
        first chunk; the turn may fill the rest but for a reply of `reply_tokens`."""
        self.perception.load_vision()  # once: the first frame would wait seconds for it
        history_budget = int(self.thinker.n_ctx * CALL_HISTORY_SHARE)
        if self.forget_old_media(history_budget):
            self.prefill_question_start([], False)
        history = len(self.prompt_ids([]))
        return CallTurn(
            self.perception,
            self.thinker,
            self.prefill_question_start,
            self.layout.tmrope,
            self.plan.vision.call,
            look,
            budget=self.thinker.n_ctx - max(history, history_budget) - reply_tokens,
        )

    def forget_old_media(self, budget: int) -> int:
        """Drop the media of the oldest exchanges (a call's frames and sound: their text stays) until
        the history's prompt fits `budget` positions; returns how many exchanges lost theirs."""
        forgotten, length = 0, len(self.prompt_ids([]))
        for i, exchange in enumerate(self.history):
            if length <= budget:
                break
            if exchange.media:
                user_ids = tuple(self._user_ids(exchange.question, (), first=i == 0))
                length -= len(exchange.user_ids) - len(user_ids)
                self.history[i] = replace(exchange, user_ids=user_ids, media=())
                forgotten += 1
        return forgotten

    def listen(self) -> Listening:
        """The next question while it is asked: what is known of it goes into the cache before the
        user lets go (then `turn(question, heard=...)`; or `discard()` if no question comes)."""
        return Listening(self.perception, self.thinker, self.prefill_question_start)

    def prefill_question_start(self, media: Sequence[EncodedMedia], recording_open: bool) -> None:
        """Put the conversation so far and the start of the next question (its media so far, see
        `PromptLayout.user_so_far`) in the Thinker's cache, and in the Talker's if it speaks;
        ContextFull if it cannot hold them."""
        ids = self.prompt_ids([])[: -len(self.layout.reply_header())]
        ids += self.layout.user_so_far(media, recording_open)
        every = [m for exchange in self.history for m in exchange.media] + list(media)
        segments, _ = self.layout.segments(ids, every)
        self.thinker.extend(segments)
        self._prime_talker()

    def _prime_talker(self) -> None:
        """A conversation that speaks (its Talker is loaded) also puts what the Thinker now holds in
        the Talker's cache, with every core the plan gives a prompt (nothing else runs while the user
        speaks): the reply's first code then waits only for the question's last rows. A failure here
        is logged; the turn decodes those rows itself."""
        talker = self._talker
        if talker is None:
            return
        try:
            with intra_op_threads(self.plan.prompt_threads):
                talker.prime(self.thinker.states(0, self.thinker.n_cached))
        except Exception:  # out of memory, say: the turn primes the whole prompt, as before
            log.exception("the Talker could not decode the question while it was asked")

    def turn(
        self,
        question: str | Question,
        options: TurnOptions = TurnOptions(),
        heard: Listening | CallTurn | None = None,
    ) -> Iterator[Event]:
        """Answer `question` (text, or text with images and recordings); the last event is always a
        TurnFinished. `heard`: the question as it was listened to, whose media are already encoded."""
        self._cancel.clear()
        if isinstance(question, str):
            question = Question(question)
        if question.is_empty:
            yield TurnFinished("error", "", (), (), "nothing to answer: the question is empty")
            return
        if options.stream is None:
            options = replace(options, stream=self.plan.stream)
        try:
            voice = pick_voice(self.voices, options.speech.voice) if options.speak else None
            parts = self._speech_parts() if options.speak else None
            with gpu_stage("audio_encoder"):
                media = heard.media(question) if heard is not None else self.perception.encode(question)
        except StageOutOfMemory as exc:
            yield TurnFinished("error", "", (), (), self._without_gpu(cast(Stage, exc.stage)))
            return
        except Exception as exc:  # a bad question, or a network that fails on its files: an event
            yield TurnFinished("error", "", (), (), failure_message(exc, self.bundle))
            return
        yield from recording_cuts(media)
        yield from pictures_shrunk(media)
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
        run = TurnStages(
            self.thinker,
            ids,
            segments,
            options,
            voice,
            parts,
            started,
            self._cancel,
            partial(failure_message, bundle=self.bundle),
            self.plan.threads,
            self.plan.speech_bound,
        )
        try:
            for event in run.events():
                if isinstance(event, TurnFinished) and run.out_of_memory in STAGES:
                    event = replace(event, error=self._without_gpu(cast(Stage, run.out_of_memory)))
                yield event
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
