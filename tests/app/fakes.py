"""Devices for tests: a microphone stream fed from samples, a camera drawing real frames."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from app.sound.microphone import BLOCK

REAL_TIME_S = BLOCK / 16_000  # a FakeInputStream's pace as a real microphone's


class FakeInputStream:
    """Stands in for sounddevice.InputStream: calls the callback with BLOCK-sized blocks of
    `samples`, from its own thread (as PortAudio does) `pace_s` apart, or from the test via `push`.
    `unplug_after` blocks, it stops by itself as a stream does when its device goes away."""

    def __init__(
        self,
        callback,
        samples: np.ndarray | None = None,
        pace_s: float = 0.002,
        unplug_after: int | None = None,
        **settings,
    ) -> None:
        self.callback, self.settings = callback, settings
        self._samples = samples
        self._pace_s = pace_s
        self._unplug_after = unplug_after
        self.active = False
        self.closed = False
        self.fed = threading.Event()  # every sample was delivered (or the device went away)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.active = True
        if self._samples is not None:
            self._thread = threading.Thread(target=self._feed, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self.active = False

    def close(self) -> None:
        self.active = False
        self.closed = True
        if self._thread is not None:
            self._thread.join()

    def push(self, samples: np.ndarray) -> None:
        for start in range(0, len(samples), BLOCK):
            block = samples[start : start + BLOCK].reshape(-1, 1).astype(np.float32)
            self.callback(block, len(block), None, None)

    def speak(self, samples: np.ndarray, pace_s: float = REAL_TIME_S) -> threading.Thread:
        """Say `samples` from a thread of its own (started), a block every `pace_s`."""

        def say() -> None:
            for start in range(0, len(samples), BLOCK):
                if not self.active:
                    return
                self.push(samples[start : start + BLOCK])
                time.sleep(pace_s)

        thread = threading.Thread(target=say, daemon=True)
        thread.start()
        return thread

    def _feed(self) -> None:
        assert self._samples is not None
        for n, start in enumerate(range(0, len(self._samples), BLOCK)):
            if not self.active:
                break
            if n == self._unplug_after:
                self.active = False
                break
            self.push(self._samples[start : start + BLOCK])
            time.sleep(self._pace_s)
        self.fed.set()


class MicrophoneFactory:
    """A stream factory that remembers its streams; `unplugged` names devices that fail to open. The
    first stream says `samples`, a block every `pace_s` (REAL_TIME_S: as fast as they were spoken)."""

    def __init__(
        self,
        samples: np.ndarray | None = None,
        unplug_after: int | None = None,
        unplugged=(),
        pace_s: float = 0.002,
    ):
        self.samples, self.unplug_after, self.unplugged = samples, unplug_after, set(unplugged)
        self.pace_s = pace_s
        self.streams: list[FakeInputStream] = []

    def __call__(self, callback, device=None, **settings) -> FakeInputStream:
        if device in self.unplugged:
            raise RuntimeError(f"Error querying device {device}")
        first = not self.streams
        stream = FakeInputStream(
            callback,
            self.samples if first else None,
            pace_s=self.pace_s,
            unplug_after=self.unplug_after if first else None,
            device=device,
            **settings,
        )
        self.streams.append(stream)
        return stream


class FakeCapture:
    """Stands in for cv2.VideoCapture: real BGR frames drawn with cv2, a moving square and the
    frame's number. After `fail_after` frames, reads fail as when a camera is unplugged."""

    def __init__(self, width: int = 320, height: int = 240, fail_after: int | None = None) -> None:
        self.width, self.height, self.fail_after = width, height, fail_after
        self.frames = 0
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 (cv2's name)
        return not self.released

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.released or (self.fail_after is not None and self.frames >= self.fail_after):
            return False, None
        time.sleep(0.005)
        frame = np.zeros((self.height, self.width, 3), np.uint8)
        frame[:] = (40, 20, 200)  # BGR: a red background
        x = (self.frames * 7) % (self.width - 60)
        cv2.rectangle(frame, (x, 80), (x + 60, 140), (255, 255, 255), -1)
        cv2.putText(frame, str(self.frames), (10, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 255, 0), 2)
        self.frames += 1
        return True, frame

    def release(self) -> None:
        self.released = True


class PulledOutput:
    """Stands in for sounddevice.OutputStream: from its own thread (as PortAudio does) calls the
    callback for a block every block's duration, keeping what it played. `latency`: seconds from
    the callback to the speakers, as PortAudio reports it."""

    def __init__(self, callback, samplerate: int, latency: float = 0.0, block: int = 480, **settings) -> None:
        self.callback, self.settings = callback, settings
        self.samplerate, self.latency, self.block = samplerate, latency, block
        self.played: list[np.ndarray] = []
        self._running = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._running.set()
        self._thread = threading.Thread(target=self._pull, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._running.clear()
        if self._thread is not None:
            self._thread.join()

    def abort(self) -> None:
        self.stop()

    def close(self) -> None:
        self.stop()

    def heard(self) -> np.ndarray:
        """Every sample played so far, silence included."""
        return np.concatenate(self.played) if self.played else np.zeros(0, np.float32)

    def _pull(self) -> None:
        period = self.block / self.samplerate
        next_at = time.perf_counter()
        while self._running.is_set():
            buffer = np.zeros((self.block, 1), np.float32)
            self.callback(buffer, self.block, None, None)
            self.played.append(buffer[:, 0].copy())
            next_at += period
            time.sleep(max(0.0, next_at - time.perf_counter()))


class Speakers:
    """A playback stream factory of PulledOutput devices that remembers them."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.outputs: list[PulledOutput] = []

    def __call__(self, callback, samplerate: int, latency: float = 0.0, **settings) -> PulledOutput:
        """`latency`: the device buffer asked for (the device reports its own, `self.latency`)."""
        self.outputs.append(PulledOutput(callback, samplerate, self.latency, **settings))
        return self.outputs[-1]
