"""A Talker fed random Thinker states, one greedy run of it timed, and teacher forcing to compare two
Talkers step by step on the same inputs (the Talker and GPU benches, and the Talker's tests).

Times are wall-clock, `time.perf_counter`, after a device synchronisation; peak memory as
`measure.peak_memory` takes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from model.bench.parts.measure import peak_memory, sync
from model.bench.parts.random_bundle import VOICE, VOICE_BOS
from model.sampling import DecodingRule, Sampler, SamplingOptions
from model.talker import SpeechIds, SpeechOptions, Talker, speech
from model.talker.network import TalkerModel
from model.thinker_types import Decoded, PositionStates

CODEC = {"bos": 8293, "eos": 8294, "pad": 8292, "mask": 8296}  # the released Talker's codec ids
TEXT_EOS, TEXT_PAD = 151861, 151859  # Thinker-vocabulary ids
DIT_EMBEDDABLE = 8194  # the DiT's num_embeds + 1
GREEDY = SamplingOptions(greedy=True, repetition_penalty=1.05)
SPEECH_IDS = SpeechIds(
    codec_bos=CODEC["bos"],
    codec_eos=CODEC["eos"],
    codec_pad=CODEC["pad"],
    codec_mask=CODEC["mask"],
    text_eos=TEXT_EOS,
    text_pad=TEXT_PAD,
    voices={VOICE: VOICE_BOS},
    embeddable=DIT_EMBEDDABLE,
)


@dataclass(frozen=True)
class TalkerRun:
    prefill_s: float
    decode_s: float  # per code
    codes: int
    peak_bytes: int
    logits: torch.Tensor  # (codes + 1, vocab) float32
    code_ids: tuple[int, ...]


def bench_talker(
    model: TalkerModel, rows: dict[int, np.ndarray], max_positions: int, compile: bool
) -> Talker:
    """A Talker on `model` whose text embeddings come from `rows` (see `thinker_rows`)."""
    return Talker(
        model, SPEECH_IDS, lambda token_ids: np.stack([rows[i] for i in token_ids]), max_positions, compile
    )


def thinker_rows(width: int, n: int) -> dict[int, np.ndarray]:
    """Random Thinker hidden+embedding rows: positions 0..n-1, and the special text ids' embeddings."""
    rng = np.random.default_rng(0)
    rows = {i: rng.standard_normal(width).astype(np.float32) for i in range(n)}
    rows |= {i: rng.standard_normal(width).astype(np.float32) for i in (TEXT_EOS, TEXT_PAD, VOICE_BOS)}
    return rows


def thinker_states(rows: dict[int, np.ndarray], prompt: int) -> list[PositionStates | Decoded]:
    """A text prompt of `prompt` positions and a reply long enough for every step (embeddings zero)."""
    n = len(rows) - 3
    hidden = np.stack([rows[i] for i in range(n)])
    zeros = np.zeros_like(hidden)
    head = PositionStates(
        np.zeros(prompt, dtype=np.int64), hidden[:prompt], zeros[:prompt], np.tile(np.arange(prompt), (3, 1))
    )
    return [head, *(Decoded(0, i, hidden[i], zeros[i]) for i in range(prompt, n))]


def run_talker(
    talker: Talker, states: list[PositionStates | Decoded], steps: int, device: torch.device
) -> TalkerRun:
    """The prompt, then `steps` greedy decode steps (no stop id before them)."""
    options = SpeechOptions(voice=VOICE, sampling=GREEDY, max_codes=steps + 1, min_codes=steps + 1)
    logits, codes = [], []
    with peak_memory(device) as peak:
        started = time.perf_counter()
        iterator = talker.steps(states, options)
        first = next(iterator)
        sync(device)
        prefilled = time.perf_counter()
        for step in [first, *iterator]:
            logits.append(step.logits)
            codes.append(step.code)
        sync(device)
        ended = time.perf_counter()
    decoded = max(len(codes) - 1, 1)
    return TalkerRun(
        prefilled - started,
        (ended - prefilled) / decoded,
        decoded,
        peak[0],
        torch.stack(logits),
        tuple(codes),
    )


class TeacherForcing:
    """Stands in for the Talker's `Sampler` class: each sampler it makes notes the greedy pick and the
    gap between the two best scores (after the Talker's rules), and returns `codes[i]` at step i if
    given (teacher forcing), else its own pick."""

    def __init__(self, codes: list[int] | None = None) -> None:
        self.codes = codes
        self.picks: list[int] = []
        self.gaps: list[float] = []

    def __call__(self, options: SamplingOptions, rules: Sequence[DecodingRule]) -> Callable[..., int]:
        sampler = Sampler(options, rules)

        def choose(logits: torch.Tensor, seen: torch.Tensor, generated: int = 0) -> int:
            scores = logits.float()
            for rule in sampler.rules:
                scores = rule.apply(scores, seen, generated)
            best = scores.topk(2).values
            self.gaps.append(float(best[0] - best[1]))
            self.picks.append(int(scores.argmax()))
            return self.picks[-1] if self.codes is None else self.codes[generated]

        return choose

    @contextmanager
    def standing_in(self) -> Iterator[TeacherForcing]:
        """While inside, every Talker samples through this object."""
        original = speech.Sampler
        speech.Sampler = self  # type: ignore[assignment, misc]
        try:
            yield self
        finally:
            speech.Sampler = original  # type: ignore[misc]
