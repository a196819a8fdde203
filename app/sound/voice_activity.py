"""Voice activity: where the user's speech starts and ends in the microphone's stream (Silero VAD).

Silero VAD (the `silero-vad` package, MIT licensed, which ships its model inside: nothing is
downloaded) gives the probability that a frame of FRAME samples (32 ms at 16 kHz) is speech. It keeps
state from frame to frame (an LSTM, and the previous frame's last 64 samples), so frames go in in
order, and `reset` starts a new stream.

`VoiceActivity` cuts the stream into utterances with hysteresis, as Silero's own streaming helper
does: a frame whose probability reaches `threshold` is speech; once speech has started, a frame
below `threshold - OFFSET_MARGIN` is silence, and anything between keeps the current state. Speech
is taken to have started (`SpeechStarted`) once `min_speech_s` of speech frames came before
`silence_s` of silence (shorter sounds, a cough or a click, start nothing), and to have ended
(`SpeechEnded`, with its audio) after `silence_s` of silence. An utterance keeps `pre_roll_s` of the
audio before its first speech frame (a word's first sound comes before the frame that crosses the
threshold) and `tail_s` after its last.

Threads: none of its own; everything runs on the caller's thread (the GUI thread, at each poll of
the microphone). A frame takes about 0.6 ms on this project's 2-core machine.
"""

from __future__ import annotations

import collections
import importlib.util
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.audio_rates import INPUT_SAMPLE_RATE
from model.errors import OmnideskError

FRAME = 512  # samples per probability: 32 ms at INPUT_SAMPLE_RATE, the model's own frame
OFFSET_MARGIN = 0.15  # speech that started ends below threshold - this (Silero's own hysteresis)
SILERO_MODEL = Path("data") / "silero_vad.jit"  # inside the silero_vad package

Probability = Callable[[np.ndarray], float]  # (FRAME,) float32 samples -> probability of speech


@dataclass(frozen=True)
class VoiceOptions:
    threshold: float = 0.5  # Silero's default: a frame at or above it is speech
    silence_s: float = 0.8  # this long without speech ends an utterance
    pre_roll_s: float = 0.3  # kept before the first speech frame
    tail_s: float = 0.2  # kept after the last speech frame
    min_speech_s: float = 0.25  # less speech than this starts nothing


@dataclass(frozen=True)
class SpeechStarted:
    """The user started to speak (`min_speech_s` of speech so far)."""


@dataclass(frozen=True, eq=False)
class SpeechEnded:
    samples: np.ndarray  # (n,) float32 at INPUT_SAMPLE_RATE: the utterance, pre-roll and tail included


class SileroVad:
    """Silero VAD's model, on the CPU: `vad(frame)` is the probability that the frame is speech.

    Loaded from the package's files without importing the package, whose import sets torch's
    thread count to 1 for the whole process (it would slow the Talker and Token2Wav)."""

    def __init__(self) -> None:
        import torch

        self._torch = torch
        spec = importlib.util.find_spec("silero_vad")
        if spec is None or not spec.submodule_search_locations:
            raise OmnideskError("hands-free needs the silero-vad package: pip install silero-vad")
        path = Path(next(iter(spec.submodule_search_locations))) / SILERO_MODEL
        with warnings.catch_warnings():  # torch 2.13 marks TorchScript as deprecated; it still loads
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                self._model = torch.jit.load(str(path), map_location="cpu").eval()
            except (OSError, RuntimeError) as exc:
                raise OmnideskError(f"cannot load the voice activity model {path} ({exc})") from None

    def __call__(self, frame: np.ndarray) -> float:
        with self._torch.inference_mode():
            return float(self._model(self._torch.from_numpy(frame), INPUT_SAMPLE_RATE))

    def reset(self) -> None:
        self._model.reset_states()


def _frames(seconds: float) -> int:
    return math.ceil(seconds * INPUT_SAMPLE_RATE / FRAME)


@dataclass
class _Utterance:
    frames: list[np.ndarray] = field(default_factory=list)
    speech_frames: int = 0
    silent_frames: int = 0  # in a row, at the end
    last_speech: int = 0  # index of the last speech frame in `frames`
    started: bool = False  # SpeechStarted was told


class VoiceActivity:
    """Utterances in a stream of samples: `feed` returns what happened in them (see the module)."""

    def __init__(self, probability: Probability, options: VoiceOptions = VoiceOptions()) -> None:
        self._probability = probability
        self.options = options
        self._pending = np.zeros(0, np.float32)  # less than a frame, waiting for more
        self._before: collections.deque[np.ndarray] = collections.deque(maxlen=_frames(options.pre_roll_s))
        self._utterance: _Utterance | None = None

    @property
    def hearing(self) -> bool:
        """The user is speaking (SpeechStarted was told and SpeechEnded not yet)."""
        return self._utterance is not None and self._utterance.started

    def utterance_since(self, start: int) -> np.ndarray:
        """The samples (n,) of the utterance being heard, pre-roll included, from its `start`-th sample
        (a multiple of FRAME) on; empty when none is heard."""
        utterance = self._utterance
        frames = utterance.frames[start // FRAME :] if utterance is not None else []
        return np.concatenate(frames) if frames else np.zeros(0, np.float32)

    def feed(self, samples: np.ndarray) -> list[SpeechStarted | SpeechEnded]:
        """Take in (n,) float32 samples at INPUT_SAMPLE_RATE, any n; the events they brought, in order."""
        stream = np.concatenate([self._pending, np.asarray(samples, np.float32).reshape(-1)])
        whole = len(stream) // FRAME * FRAME
        self._pending = stream[whole:]
        events: list[SpeechStarted | SpeechEnded] = []
        for start in range(0, whole, FRAME):
            event = self._frame(stream[start : start + FRAME].copy())
            if event is not None:
                events.append(event)
        return events

    def _frame(self, frame: np.ndarray) -> SpeechStarted | SpeechEnded | None:
        p, options, utterance = self._probability(frame), self.options, self._utterance
        if utterance is None:
            if p < options.threshold:
                self._before.append(frame)
                return None
            utterance = self._utterance = _Utterance(frames=[*self._before])
            self._before.clear()
        utterance.frames.append(frame)
        if p >= options.threshold:
            utterance.speech_frames += 1
            utterance.last_speech = len(utterance.frames) - 1
        utterance.silent_frames = utterance.silent_frames + 1 if p < options.threshold - OFFSET_MARGIN else 0
        if utterance.silent_frames >= _frames(options.silence_s):
            return self._end()
        if not utterance.started and utterance.speech_frames >= _frames(options.min_speech_s):
            utterance.started = True
            return SpeechStarted()
        return None

    def _end(self) -> SpeechEnded | None:
        """The utterance is over: its audio if it was speech, and its last frames kept as pre-roll."""
        utterance, self._utterance = self._utterance, None
        if utterance is None:
            return None
        self._before.extend(utterance.frames)
        if not utterance.started:
            return None
        kept = utterance.frames[: utterance.last_speech + 1 + _frames(self.options.tail_s)]
        return SpeechEnded(np.concatenate(kept))

    def interrupt(self) -> SpeechEnded | None:
        """End now: all that was heard of the utterance if speech had started (else nothing), then a
        fresh stream."""
        utterance = self._utterance
        ended = None
        if utterance is not None and utterance.started:
            ended = SpeechEnded(np.concatenate([*utterance.frames, self._pending]))
        self.reset()
        return ended

    def reset(self) -> None:
        """Forget everything heard: a new stream starts (the model's state too)."""
        self._pending = np.zeros(0, np.float32)
        self._before.clear()
        self._utterance = None
        reset = getattr(self._probability, "reset", None)
        if reset is not None:
            reset()
