"""How a turn is answered (where the stages run is the conversation's `placement.Plan`)."""

from __future__ import annotations

from dataclasses import dataclass

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
    stream: StreamOptions | None = None  # Token2Wav's sampler and chunks; None: the plan's profile

    def __post_init__(self) -> None:
        check_seed(self.seed)
