"""How a turn is answered (`TurnOptions`) and where the native stages run (`NativeOptions`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.sampling import SamplingOptions, check_seed
from model.talker import SpeechOptions
from model.token2wav.streaming import StreamOptions


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
class NativeOptions:
    """Where the Talker and Token2Wav run."""

    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    talker_positions: int = 8192
