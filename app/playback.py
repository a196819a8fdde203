"""Speakers: audio chunks played through sounddevice as they arrive.

Threads: PortAudio calls `_callback` on its own thread; it only copies samples out
of a deque of chunks and never blocks, allocates large buffers or takes a lock
(deque appends and pops are atomic); a shortfall is filled with silence and counted.
`write`, `finish` and `stop` may be called from any thread. Playback starts once
`preroll_s` of audio is queued (or the end is known), so the first chunk does not
stutter; `stop` drops everything queued at once.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from app.sound_devices import server_stream, sounddevice_module
from model.errors import OmnideskError

StreamFactory = Callable[..., Any]  # sounddevice.OutputStream's signature


def default_stream_factory() -> StreamFactory:
    """sounddevice's OutputStream (opening the sound server's sinks too), or an OmnideskError saying
    why there is no sound output."""
    try:
        sounddevice = sounddevice_module()
    except OSError as exc:  # raised when the PortAudio library is missing
        raise OmnideskError(f"no sound output ({exc}): on Linux, install libportaudio2") from None
    return server_stream(sounddevice.OutputStream, "output")


class Playback:
    def __init__(
        self,
        sample_rate: int,
        device: int | str | None = None,
        preroll_s: float = 0.12,
        stream_factory: StreamFactory | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.underflows = 0
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._current = np.zeros(0, dtype=np.float32)
        self._queued = 0  # samples waiting, approximate across threads
        self._preroll = int(preroll_s * sample_rate)
        self._started = False
        self._finished = False
        self._drained = threading.Event()
        factory = stream_factory or default_stream_factory()
        try:
            self._stream = factory(
                samplerate=sample_rate, channels=1, dtype="float32", device=device, callback=self._callback
            )
            self._stream.start()
        except Exception as exc:  # sounddevice.PortAudioError and friends: no usable device
            raise OmnideskError(f"cannot open the sound output ({exc}): write to a file instead") from None

    def write(self, samples: np.ndarray) -> None:
        chunk = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if chunk.size:
            self._drained.clear()
            self._chunks.append(chunk)
            self._queued += chunk.size

    def finish(self) -> None:
        """No more chunks will come: play what is queued even if shorter than the pre-roll."""
        self._finished = True
        if not self._chunks and not self._current.size:
            self._drained.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until everything written was played (after `finish`)."""
        return self._drained.wait(timeout)

    def stop(self) -> None:
        """Silence at once: drop all queued audio."""
        self._chunks.clear()
        self._current = np.zeros(0, dtype=np.float32)
        self._queued = 0
        self._drained.set()

    def close(self) -> None:
        self.stop()
        self._stream.stop()
        self._stream.close()

    def _callback(self, outdata: np.ndarray, frames: int, time_info: object, status: object) -> None:
        out = outdata[:, 0]
        if not self._started and self._queued < self._preroll and not self._finished:
            out.fill(0.0)
            return
        self._started = True
        filled = 0
        while filled < frames:
            if not self._current.size:
                if not self._chunks:
                    break
                self._current = self._chunks.popleft()
            take = min(frames - filled, self._current.size)
            out[filled : filled + take] = self._current[:take]
            self._current = self._current[take:]
            self._queued -= take
            filled += take
        if filled < frames:
            out[filled:] = 0.0
            if self._finished:
                self._drained.set()
            else:
                self.underflows += 1
