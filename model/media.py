"""What a user's question carries besides text: images, recordings and videos, already decoded.

These are plain values: the app's devices (microphone, webcam, screen) and the file loaders make
them, `Conversation.turn` takes them. Pixels are RGB uint8, height x width x 3; audio is float32
mono at 16 kHz (the audio tower's rate); video frames carry the time (seconds from the start of the
video) at which each was shown, so variable frame rates keep true time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.audio_rates import INPUT_SAMPLE_RATE


@dataclass(frozen=True, eq=False)
class Image:
    pixels: np.ndarray  # (height, width, 3) uint8 RGB

    def __post_init__(self) -> None:
        p = self.pixels
        if p.ndim != 3 or p.shape[2] != 3 or p.dtype != np.uint8:
            raise ValueError(f"an image is (height, width, 3) uint8 RGB, not {p.shape} {p.dtype}")


@dataclass(frozen=True, eq=False)
class Audio:
    samples: np.ndarray  # (n,) float32 at INPUT_SAMPLE_RATE
    # The whole recording's length, where only its start was decoded (None: the samples are all of it).
    length_s: float | None = None

    def __post_init__(self) -> None:
        if self.samples.ndim != 1 or self.samples.dtype != np.float32:
            raise ValueError(f"audio is (n,) float32 mono, not {self.samples.shape} {self.samples.dtype}")

    @property
    def seconds(self) -> float:
        """The length of the samples held."""
        return len(self.samples) / INPUT_SAMPLE_RATE

    @property
    def recording_s(self) -> float:
        """The length of the recording they came from."""
        return self.seconds if self.length_s is None else max(self.length_s, self.seconds)


@dataclass(frozen=True, eq=False)
class Video:
    frames: np.ndarray  # (n, height, width, 3) uint8 RGB
    timestamps: np.ndarray  # (n,) float64 seconds, increasing
    audio: Audio | None = None  # the sound track, when the file has one
    frame_seconds: float = 0.0  # the time one frame stands for (0: the mean gap between timestamps)
    # (height, width) its frames are encoded at, multiples of 28: fixed for a live call from its start;
    # None: the reference's bounds for a file of this many frames (`video.video_frame_bounds`).
    frame_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        f, t = self.frames, self.timestamps
        if f.ndim != 4 or f.shape[3] != 3 or f.dtype != np.uint8 or len(f) == 0:
            raise ValueError(f"video frames are (n, height, width, 3) uint8 RGB, not {f.shape} {f.dtype}")
        if t.shape != (len(f),) or (len(t) > 1 and not np.all(np.diff(t) >= 0)):
            raise ValueError("video timestamps are one non-decreasing time per frame")

    @property
    def seconds_per_frame(self) -> float:
        if self.frame_seconds > 0:
            return self.frame_seconds
        return float(self.timestamps[-1] - self.timestamps[0]) / max(len(self.timestamps) - 1, 1) or 1.0


@dataclass(frozen=True)
class Question:
    """One user turn. The prompt lists its parts in one fixed order: videos, images, audio, text."""

    text: str = ""
    images: tuple[Image, ...] = ()
    audios: tuple[Audio, ...] = ()
    videos: tuple[Video, ...] = ()
    use_audio_in_video: bool = False  # interleave each video's own sound with its frames

    @property
    def has_media(self) -> bool:
        return bool(self.images or self.audios or self.videos)

    @property
    def is_empty(self) -> bool:
        return not self.text.strip() and not self.has_media
