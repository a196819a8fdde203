"""Speakers: a reply's audio chunks played through sounddevice as they arrive, paced by
`app.sound.pacing` (started once the queue will last, a sentence at a time where speech is made slower
than it plays).

Threads: PortAudio calls `_callback` on its own thread; it only copies samples out of a deque
of chunks and never blocks, allocates large buffers or takes a lock (deque appends and pops are
atomic, and every value shared with other threads is one attribute replaced whole). A shortfall
is filled with silence and counted. `begin`, `write` and `finish` are called by the one thread
that makes the audio; `stop`, `state` and `wait` may be called from any thread (`wait` blocks,
looking every WAIT_POLL_S; `stop` and `close` take a lock of their own while they abort and
restart the stream, which takes about a millisecond).

Chunks carry the number of the reply they belong to (`begin` and `stop` start a new one), so a
stopped reply's chunks are dropped by the callback itself, even one it is halfway through.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.sound.devices import portaudio_streams
from app.sound.pacing import HOLD, Pacer, PacingOptions, Release
from model.errors import OmnideskError

StreamFactory = Callable[..., Any]  # sounddevice.OutputStream's signature
Clock = Callable[[], float]  # seconds; time.perf_counter by default

_EMPTY = np.zeros(0, dtype=np.float32)
WAIT_POLL_S = 0.01
# Seconds of audio the device holds ahead of the callback. On a busy machine the callback's thread
# waits for a core and for the GIL (behind the stage threads): PortAudio's default (35 ms on
# PulseAudio) underran at every such wait, a 0.1 s buffer still did, 0.2 s never did (omnidesk
# bench speakers, docs/performance.md). `stop` drops what the device holds, so Stop stays quick.
DEVICE_BUFFER_S = 0.2


@dataclass(frozen=True)
class PlaybackState:
    """Where the current reply's speech stands (a snapshot, safe on any thread)."""

    reply: int  # which reply: a new number at each `begin` and `stop`
    pending: bool  # written and not yet all played (or more to come), and not stopped
    played: int  # samples of the reply played so far
    playing: bool  # sound is coming out now (False in a pause between sentences)
    first_sound: float | None  # clock seconds when the reply's first sample reached the speakers
    slow: bool  # the finished reply was made slower than real time (played a sentence at a time)


@dataclass(frozen=True)
class _Progress:
    """The callback's account of the reply it plays, replaced whole each time it runs."""

    reply: int
    played: int = 0  # samples of that reply played
    playing: bool = False
    first_sound: float | None = None


def default_stream_factory() -> StreamFactory:
    """sounddevice's OutputStream (opening the sound server's sinks too), or an OmnideskError saying
    why there is no sound output."""
    return portaudio_streams("output", "no sound output")


class Playback:
    def __init__(
        self,
        sample_rate: int,
        device: int | str | None = None,
        stream_factory: StreamFactory | None = None,
        pacing: PacingOptions = PacingOptions(),
        clock: Clock = time.perf_counter,
    ) -> None:
        self.sample_rate = sample_rate
        self.underflows = 0  # the speakers ran dry while playing
        self.pauses = 0  # ... stopped on purpose between sentences
        self.device_underruns = 0  # the callback came too late and the device played silence
        self._clock = clock
        self._pacer = Pacer(sample_rate, pacing)
        self._chunks: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._current = _EMPTY  # the callback's chunk in progress
        self._reply = 0
        self._release: Release = HOLD
        self._written = 0
        self._finished = False
        self._stopped = False
        self._progress = _Progress(0)
        self._drained = False  # everything written was played, or stopped
        self._control = threading.Lock()  # stop and close drive the stream one at a time (never the callback)
        self._closed = False
        factory = stream_factory or default_stream_factory()
        try:
            self._stream = factory(
                samplerate=sample_rate,
                channels=1,
                dtype="float32",
                device=device,
                latency=DEVICE_BUFFER_S,
                callback=self._callback,
            )
            self._stream.start()
        except Exception as exc:  # sounddevice.PortAudioError and friends: no usable device
            raise OmnideskError(f"cannot open the sound output ({exc}): write to a file instead") from None
        latency = getattr(self._stream, "latency", 0.0)
        self.latency = float(latency) if isinstance(latency, int | float) else 0.0  # s, callback to speakers

    def begin(self) -> None:
        """A new reply follows (what is still queued of the last one is dropped)."""
        self._release = HOLD
        self._pacer.begin(self._clock())
        self._written = 0
        self._finished = self._stopped = self._drained = False
        self._reply += 1  # last: the callback sees the new reply only once the rest is reset

    def write(self, samples: np.ndarray) -> None:
        """samples: (n,) float32 at `sample_rate`. A stopped reply's late chunks are dropped."""
        chunk = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if not chunk.size or self._stopped:
            return
        progress = self._own_progress()
        # The release first: the callback never sees this chunk under the last release's terms.
        self._release = self._pacer.written(chunk, self._clock(), progress.played, progress.playing)
        self._chunks.append((self._reply, chunk))
        self._written += chunk.size

    def finish(self) -> None:
        """No more chunks will come: play what is queued (nothing, once stopped)."""
        self._finished = True
        if self._written == 0 or self._stopped:
            self._drained = True
            return
        self._release = self._pacer.finished(self._clock())

    def wait(self, timeout: float | None = None) -> bool:
        """Block until everything written was played (after `finish`) or stopped; whether it was."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._drained and (deadline is None or time.monotonic() < deadline):
            time.sleep(WAIT_POLL_S)
        return self._drained

    def stop(self) -> None:
        """Silence at once: everything queued is dropped, the device's buffer too."""
        self._stopped = True
        self._release = HOLD
        self._written = 0  # nothing of the stopped reply is to be played, heard or waited for
        self._reply += 1
        self._drained = True
        with self._control:
            if not self._closed:  # abort drops the buffered audio that stop() would play out
                self._stream.abort()
                self._stream.start()

    def state(self) -> PlaybackState:
        progress = self._own_progress()
        written, finished = self._written, self._finished
        pending = not self._stopped and written > 0 and (not finished or progress.played < written)
        return PlaybackState(
            self._reply, pending, progress.played, progress.playing, progress.first_sound, self._pacer.slow
        )

    def close(self) -> None:
        self.stop()
        with self._control:
            self._closed = True
            self._stream.abort()
            self._stream.close()

    def _own_progress(self) -> _Progress:
        """The callback's progress if it is of the current reply (it may not have seen it yet)."""
        progress = self._progress
        return progress if progress.reply == self._reply else _Progress(self._reply)

    def _callback(self, outdata: np.ndarray, frames: int, time_info: object, status: object) -> None:
        out = outdata[:, 0]
        if getattr(status, "output_underflow", False):
            self.device_underruns += 1
        reply, release = self._reply, self._release
        progress = self._progress
        if progress.reply != reply:  # a new reply, or stopped: what is left of the old one goes
            progress, self._current = _Progress(reply), _EMPTY
        played, playing, first_sound = progress.played, progress.playing, progress.first_sound
        limit = min(release.until, self._written)
        filled = 0
        if playing or (self._clock() >= release.start_at and played < limit):
            if first_sound is None:
                first_sound = self._clock() + self.latency
            playing = True
            while filled < frames and played < limit:
                if not self._current.size:
                    if not self._chunks:
                        break
                    owner, self._current = self._chunks.popleft()
                    if owner != reply:
                        self._current = _EMPTY
                        continue
                take = min(frames - filled, self._current.size, limit - played)
                out[filled : filled + take] = self._current[:take]
                self._current = self._current[take:]
                played += take
                filled += take
            if filled < frames:
                playing = False
                if self._finished and played >= self._written:
                    self._drained = True
                elif release.bounded and played >= release.until:
                    self.pauses += 1
                else:
                    self.underflows += 1
        out[filled:] = 0.0
        self._progress = _Progress(reply, played, playing, first_sound)
