"""The microphone: recording at 16 kHz mono through sounddevice, for push-to-talk and hands-free.

Threads: PortAudio calls `_callback` on its own thread; it copies the block and appends
it to a bounded deque, never blocking or taking a lock (deque appends are atomic); when
the deque is full the block is dropped and counted in `overflows`. Everything else runs
on the caller's thread (the GUI thread), which calls `poll` often (every few tens of ms):
it moves the queued blocks into the recording, updates the level for the meter, and
notices a device that went away (its stream stops by itself).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from app.sound.devices import portaudio_streams
from model.audio_rates import INPUT_SAMPLE_RATE
from model.errors import OmnideskError
from model.media import Audio

BLOCK = 320  # samples per callback: 20 ms at INPUT_SAMPLE_RATE
QUEUE_BLOCKS = 250  # 5 s of blocks waiting for `poll` before any is dropped
MIN_SECONDS = 0.3  # shorter recordings are taken for a slip of the finger


class InputStream(Protocol):
    """What the microphone needs of sounddevice.InputStream (tests give their own)."""

    @property
    def active(self) -> bool: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...


StreamFactory = Callable[..., InputStream]  # sounddevice.InputStream's keyword arguments


class DeviceLost(OmnideskError):
    """The microphone went away and no other could take over; what was recorded is kept."""


@dataclass(frozen=True)
class Level:
    rms: float  # of the last poll's samples, full scale 1.0
    peak: float


def default_stream_factory() -> StreamFactory:
    """sounddevice's InputStream (opening the sound server's sources too), or an OmnideskError saying
    why there is no microphone."""
    return portaudio_streams("input", "no microphone")


class Microphone:
    """An open microphone that records until `stop`. `device`: a device name, or None for the
    system default. Opening raises OmnideskError with the reason when there is no usable input."""

    def __init__(
        self,
        device: str | None = None,
        stream_factory: StreamFactory | None = None,
        queue_blocks: int = QUEUE_BLOCKS,
    ) -> None:
        self.device = device
        self.overflows = 0  # blocks dropped because `poll` came too late, or PortAudio's own
        self.level = Level(0.0, 0.0)
        self._max_blocks = queue_blocks
        self._blocks: collections.deque[np.ndarray] = collections.deque()
        self._recorded: list[np.ndarray] = []
        self._handed = 0  # pieces of `_recorded` already given by `fresh`
        self._factory = stream_factory or default_stream_factory()
        self._stream: InputStream | None = self._open(device)

    def _open(self, device: str | None) -> InputStream:
        try:
            stream = self._factory(
                samplerate=INPUT_SAMPLE_RATE,
                channels=1,
                dtype="float32",
                blocksize=BLOCK,
                device=device,
                callback=self._callback,
            )
            stream.start()
        except Exception as exc:  # sounddevice.PortAudioError and friends: no usable device
            where = f" “{device}”" if device else ""
            raise OmnideskError(f"cannot open the microphone{where} ({exc})") from None
        return stream

    def _callback(self, indata: np.ndarray, frames: int, time_info: object, status: Any) -> None:
        if status and getattr(status, "input_overflow", False):
            self.overflows += 1
        if len(self._blocks) >= self._max_blocks:
            self.overflows += 1
            return
        self._blocks.append(indata[:, 0].copy())

    @property
    def seconds(self) -> float:
        """Recorded so far (up to the last poll)."""
        return sum(len(b) for b in self._recorded) / INPUT_SAMPLE_RATE

    def poll(self) -> str:
        """Take in what was captured; returns a notice when the device changed, else "".

        A stream that stopped by itself means its device went away: recording goes on with
        the system default, or DeviceLost is raised when there is none (the recording is kept).
        """
        fresh = []
        while self._blocks:
            fresh.append(self._blocks.popleft())
        if fresh:
            samples = np.concatenate(fresh)
            self._recorded.append(samples)
            self.level = Level(float(np.sqrt(np.mean(samples * samples))), float(np.max(np.abs(samples))))
        if self._stream is None or self._stream.active:
            return ""
        lost = self.device or "the system default"
        self._stream.close()
        self._stream = None
        if self.device is None:
            raise DeviceLost(f"The microphone ({lost}) stopped; what was recorded is kept.")
        try:
            self._stream = self._open(None)
        except OmnideskError as exc:
            raise DeviceLost(
                f"The microphone “{lost}” went away and {exc}; what was recorded is kept."
            ) from None
        self.device = None
        return f"The microphone “{lost}” went away: recording goes on with the system default."

    def fresh(self) -> np.ndarray:
        """The samples polled since the last `fresh`, which stay in the recording: (n,) float32 at
        INPUT_SAMPLE_RATE. For encoding a question while it is spoken (push-to-talk)."""
        pieces, self._handed = self._recorded[self._handed :], len(self._recorded)
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    def take(self) -> np.ndarray:
        """The samples recorded since the last `take` (up to the last poll), which are not kept:
        (n,) float32 at INPUT_SAMPLE_RATE. For listening without end (hands-free)."""
        taken = np.concatenate(self._recorded) if self._recorded else np.zeros(0, np.float32)
        self._recorded, self._handed = [], 0
        return taken

    def stop(self) -> Audio:
        """Close the stream; return everything recorded (possibly empty)."""
        if self._stream is not None:
            if self._stream.active:
                self._stream.stop()
            self._stream.close()
            self._stream = None
        fresh = list(self._blocks)
        self._blocks.clear()
        samples = np.concatenate([*self._recorded, *fresh]) if self._recorded or fresh else np.zeros(0)
        self._recorded, self._handed = [], 0
        return Audio(samples.astype(np.float32))
