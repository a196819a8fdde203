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
class SpeechCut:
    """Speech was stopped after `seconds`: it ran far past what the reply's text holds
    (`speech_bound.SpeechBound`), as a quantized Talker that misses its stop would."""

    seconds: float

    @property
    def message(self) -> str:
        return (
            f"Speech was stopped after {self.seconds:.0f} s, far longer than the reply's text: the fast "
            "speech model may have missed its end. Speech quality: Exact (in the settings) avoids it."
        )


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


Event = (
    TextDelta | AudioChunk | Mark | ContextTrimmed | RecordingCut | PictureShrunk | SpeechCut | TurnFinished
)
