"""Soak: 200 text turns in a row in one conversation on the tiny bundle, with no leak.

The history outgrows the context, so the oldest exchanges are trimmed as a long chat
would trim them. After a warm-up (allocator pools, llama.cpp's buffers, Python caches),
resident memory must stay within RSS_GROWTH_BOUND, and the threads and file
descriptors must come back to their numbers: each turn starts and joins its own.
Slow: pytest -m slow.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from model.files.bundle import Bundle
from model.pipeline import ContextTrimmed, Conversation, TurnFinished, TurnOptions
from model.sampling import SamplingOptions
from model.thinker_types import ThinkerOptions

TURNS = 200
WARM_UP = 20  # turns before the baseline is taken
SAMPLE_EVERY = 20  # turns between two samples of the curve
RSS_GROWTH_BOUND = 16 * 2**20  # bytes of resident memory the 180 turns after the warm-up may add
OPTIONS = TurnOptions(speak=False, max_tokens=12, sampling=SamplingOptions(seed=0))

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Sample:
    turn: int
    rss: int  # bytes, VmRSS
    threads: int  # the process's threads, native ones included
    fds: int  # open file descriptors

    def __str__(self) -> str:
        return f"turn {self.turn:3}: RSS {self.rss / 2**20:7.1f} MiB, {self.threads} threads, {self.fds} fds"


def sample(turn: int) -> Sample:
    gc.collect()
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    rss = int(status["VmRSS"].split()[0]) * 1024
    return Sample(turn, rss, int(status["Threads"]), len(os.listdir("/proc/self/fd")))


def test_two_hundred_turns_leak_nothing(tiny_bundle: Bundle):
    conversation = Conversation(tiny_bundle, ThinkerOptions(n_ctx=512), system="You are brief.")
    curve = [sample(0)]
    trimmed = 0
    for turn in range(1, TURNS + 1):
        events = list(conversation.turn(f"Question number {turn}: what comes next?", OPTIONS))
        finished = events[-1]
        assert isinstance(finished, TurnFinished) and finished.reason in ("end", "length"), finished
        trimmed += sum(e.dropped for e in events if isinstance(e, ContextTrimmed))
        if turn % SAMPLE_EVERY == 0:
            curve.append(sample(turn))
    print("\n".join(map(str, curve)), f"{trimmed} exchanges trimmed", sep="\n")
    base, end = next(s for s in curve if s.turn == WARM_UP), curve[-1]
    assert trimmed > 0, "the history outgrew the context, as a long chat does"
    assert end.rss - base.rss < RSS_GROWTH_BOUND, f"{(end.rss - base.rss) / 2**20:.1f} MiB more after warm-up"
    assert end.threads == base.threads and end.fds == base.fds
