"""Choosing the next id: small decoding rules, then a sampler, with transformers' semantics.

A stage (the Thinker, the Talker) assembles its rules once per reply: each is a few lines with
`apply(logits, seen, generated)` and a name that says what it does or avoids. The `Sampler`
applies the repetition penalty of its options, then the stage's rules in order, then temperature,
top-k and top-p, then a multinomial draw (or argmax when greedy), as `generate` does. The rules
that only mask ids commute with the penalty (a masked id stays masked), so their order is free.

logits: (V,) float32; seen: (n,) int64, every id the penalty sees (the prompt's and the reply's);
generated: how many ids this reply has chosen so far.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from model.errors import OmnideskError

MAX_SEED = 2**64 - 1  # torch's generators take a seed up to this


def check_seed(seed: int | None) -> None:
    """OmnideskError unless `seed` is None or a whole number torch can seed with."""
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise OmnideskError(f"the seed {seed} is out of range: give a whole number from 0 to {MAX_SEED}")


@dataclass(frozen=True)
class SamplingOptions:
    greedy: bool = False
    temperature: float = 0.7
    top_k: int = 20
    top_p: float = 0.8
    repetition_penalty: float = 1.05
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature <= 0 and not self.greedy:
            raise ValueError("temperature must be positive (use greedy for deterministic decoding)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be positive")
        check_seed(self.seed)


class DecodingRule(Protocol):
    def apply(self, logits: torch.Tensor, seen: torch.Tensor, generated: int) -> torch.Tensor: ...


class RepetitionPenalty:
    """Divide positive (multiply negative) logits of already seen ids by `penalty`."""

    def __init__(self, penalty: float) -> None:
        self.penalty = penalty

    def apply(self, logits: torch.Tensor, seen: torch.Tensor, generated: int) -> torch.Tensor:
        return penalize_repetition(logits, seen, self.penalty)


class NeverSample:
    """Ids that are never chosen (media placeholders for the Thinker; the codec bos for the Talker)."""

    def __init__(self, ids: Iterable[int]) -> None:
        self.ids = torch.tensor(sorted(set(ids)), dtype=torch.long)

    def apply(self, logits: torch.Tensor, seen: torch.Tensor, generated: int) -> torch.Tensor:
        return logits.index_fill(0, self.ids, float("-inf")) if self.ids.numel() else logits


class NoStopBefore:
    """No stop id among the first `count` ids of a reply (generate's min_new_tokens)."""

    def __init__(self, stop_ids: Iterable[int], count: int) -> None:
        self.stop_ids = torch.tensor(sorted(set(stop_ids)), dtype=torch.long)
        self.count = count

    def apply(self, logits: torch.Tensor, seen: torch.Tensor, generated: int) -> torch.Tensor:
        if generated >= self.count:
            return logits
        return logits.index_fill(0, self.stop_ids, float("-inf"))


def penalize_repetition(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Divide positive (multiply negative) logits of already seen ids by `penalty`. logits: (V,)"""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    scores = logits.gather(0, seen)
    scores = torch.where(scores < 0, scores * penalty, scores / penalty)
    return logits.scatter(0, seen, scores)


def keep_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Mask all but the k largest logits (ties with the k-th are kept)."""
    if k <= 0 or k >= logits.numel():
        return logits
    kth = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < kth, float("-inf"))


def keep_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Mask the least likely ids whose total probability is at most 1 - p (at least one id is kept)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[-1] = False
    remove = remove_sorted.scatter(0, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


class Sampler:
    """Chooses the next id from logits (V,), given the ids seen so far and how many were generated."""

    def __init__(self, options: SamplingOptions, rules: Sequence[DecodingRule] = ()) -> None:
        self.options = options
        self.rules: list[DecodingRule] = [RepetitionPenalty(options.repetition_penalty), *rules]
        self._generator = torch.Generator()
        if options.seed is not None:
            self._generator.manual_seed(options.seed)
        else:
            self._generator.seed()

    def __call__(self, logits: torch.Tensor, seen: torch.Tensor, generated: int = 0) -> int:
        opts = self.options
        logits = logits.float()
        for rule in self.rules:
            logits = rule.apply(logits, seen, generated)
        if opts.greedy:
            return int(torch.argmax(logits))
        logits = keep_top_p(keep_top_k(logits / opts.temperature, opts.top_k), opts.top_p)
        probs = logits.softmax(dim=-1)
        return int(torch.multinomial(probs, 1, generator=self._generator))
