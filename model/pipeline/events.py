"""What a turn yields: plain frozen dataclasses, safe to hand to any thread."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from model.audio_rates import OUTPUT_SAMPLE_RATE
from model.perception import PictureShrunk, RecordingCut


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class AudioChunk:
    samples: np.ndarray = field(repr=False)  # (n,) float32 in [-1, 1]
    sample_rate: int = OUTPUT_SAMPLE_RATE


@dataclass(frozen=True)
class Mark:
    """A moment of the turn: input_ready, first_text, first_code, first_mel (the DiT's first window
    done), first_audio, thinker_done, talker_done, done."""

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


Event = TextDelta | AudioChunk | Mark | ContextTrimmed | RecordingCut | PictureShrunk | TurnFinished
