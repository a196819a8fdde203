"""When the speakers may play a reply that is still being made.

A reply's speech is made while it plays. Started too soon, the speakers run dry: the user hears
a blip, then silence, again and again. Started too late, the first sound waits for nothing.
`Pacer` decides from what it measured of this reply: the production rate (seconds of audio
made per second) and the longest wait between two chunks so far.

- While production keeps up (rate at least 1, less a little for jitter), playback starts once
  the audio queued will last until the next chunk is due (the longest wait seen, with a
  margin); from then on, chunks arrive before the queue runs out.
- Where it cannot keep up, the reply is played a sentence at a time: up to a pause in the
  speech (a quiet run of at least `pause_s`), at least `min_sentence_s` long, once all of it is
  there; while a sentence plays, the next one joins it if it is complete in time. A stretch with
  no pause plays once `max_sentence_s` of it are queued.
- Until the rate is known (one chunk), the first chunk's own pace stands for it: its seconds of
  audio over the time since the reply began (`begin(now)`), a bound below the rate since that time
  includes the prompt's; that wait stands for the next one. A first chunk made far faster than
  it plays (on a GPU) so starts at once; one made slower is held, as is one whose start is unknown.
- At the end of the reply, whatever is left plays.

A `Release` says from when and up to which sample the speakers may play; positions count
samples from the start of the reply.

Threads: none of its own, and it never blocks. `Pacer`'s methods run on the thread that writes
the audio; the audio callback reads only the `Release` they return, a frozen value handed over
whole (one attribute assignment), so it needs no lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

UNBOUNDED = 2**62  # a Release's `until` when it plays whatever is written
FRAME_S = 0.01  # pauses are found in frames of this length


@dataclass(frozen=True)
class PacingOptions:
    pause_s: float = 0.15  # a quiet run this long is a pause where speech may stop and resume
    min_sentence_s: float = 2.0  # slower than real time: the shortest piece played at once
    max_sentence_s: float = 10.0  # ... and a piece with no pause plays once this much is queued
    quiet_fraction: float = 0.1  # a frame is quiet below this fraction of the loudest frame's RMS
    quiet_floor: float = 1e-3  # ... or below this RMS (full scale 1.0) whatever came before
    margin: float = 1.25  # the next chunk is expected within this many times the longest wait seen
    tolerance: float = 0.02  # a rate this little below real time still keeps up (the clocks' jitter)


@dataclass(frozen=True)
class Release:
    """Playback may start (or resume) at `start_at` (clock seconds) and play up to sample `until`."""

    start_at: float
    until: int

    @property
    def bounded(self) -> bool:
        """Playback stops at `until` on purpose (a pause between sentences), not for lack of audio."""
        return self.until < UNBOUNDED


HOLD = Release(math.inf, 0)  # nothing may start


def slow_speech_note(fast_profile: bool) -> str:
    """What to tell, once, a user whose machine makes speech slower than it plays."""
    fast = [] if fast_profile else ["Speech quality: Fast (in the settings)"]
    helps = ["a GPU", *fast, "a smaller model"]
    return (
        "This machine makes speech slower than it plays, so replies are spoken a sentence at a time. "
        f"What would help: {', '.join(helps[:-1])} or {helps[-1]}."
    )


class PauseFinder:
    """Finds the pauses in a stream of speech as it arrives: `cuts` holds, for each quiet run
    of at least `pause_s` after some sound, the sample in its middle (where playback may stop)."""

    def __init__(self, sample_rate: int, options: PacingOptions) -> None:
        self._frame = max(1, round(FRAME_S * sample_rate))
        self._pause_frames = max(1, math.ceil(options.pause_s / FRAME_S))
        self._options = options
        self._tail = np.zeros(0, np.float32)  # the samples of a frame not yet complete
        self._position = 0  # samples in complete frames so far
        self._loudest = 0.0  # the loudest frame's RMS so far
        self._quiet_run = 0  # quiet frames in a row, ending at `_position`
        self.cuts: list[int] = []

    def add(self, samples: np.ndarray) -> None:
        """samples: (n,) float32."""
        joined = np.concatenate([self._tail, samples])
        whole = len(joined) // self._frame * self._frame
        self._tail = joined[whole:]
        if not whole:
            return
        rms = np.sqrt(np.mean(np.square(joined[:whole].reshape(-1, self._frame), dtype=np.float64), axis=1))
        for value in rms:
            self._position += self._frame
            self._loudest = max(self._loudest, float(value))
            quiet = value < max(self._options.quiet_floor, self._options.quiet_fraction * self._loudest)
            heard = self._loudest >= self._options.quiet_floor
            self._quiet_run = self._quiet_run + 1 if quiet and heard else 0
            if self._quiet_run == self._pause_frames:
                self.cuts.append(self._position - self._pause_frames * self._frame // 2)


class Pacer:
    """The playback policy of one reply at a time (see the module's docstring)."""

    def __init__(self, sample_rate: int, options: PacingOptions = PacingOptions()) -> None:
        self.sample_rate = sample_rate
        self.options = options
        self.begin()

    def begin(self, now: float | None = None) -> None:
        """A new reply, asked for at `now` (clock seconds; None: unknown): nothing measured yet."""
        self._began = now
        self._pauses = PauseFinder(self.sample_rate, self.options)
        self._written = 0
        self._first_size = 0
        self._first_at: float | None = None
        self._last_at = 0.0
        self._longest_wait = 0.0
        self._release = HOLD
        self.slow = False  # at the end of the reply: it was made slower than real time

    @property
    def rate(self) -> float | None:
        """Seconds of audio made per second since the first chunk; None until a second chunk came."""
        if self._first_at is None or self._written == self._first_size:
            return None
        made_s = (self._written - self._first_size) / self.sample_rate
        return made_s / max(self._last_at - self._first_at, 1e-9)

    def written(self, samples: np.ndarray, now: float, played: int, playing: bool) -> Release:
        """A chunk arrived at `now` (clock seconds) while `played` samples of the reply had been
        played and the speakers were `playing`; the release that follows."""
        if self._first_at is None:
            self._first_at, self._first_size = now, len(samples)
        else:
            self._longest_wait = max(self._longest_wait, now - self._last_at)
        self._last_at = now
        self._written += len(samples)
        self._pauses.add(samples)
        if self._keeps_up():
            wait = self._longest_wait
            if self.rate is None and self._began is not None:  # one chunk: its wait stands for the next
                wait = now - self._began
            lead = self.options.margin * wait
            queued_s = (self._written - played) / self.sample_rate
            self._release = Release(now + lead - queued_s, UNBOUNDED)
        else:
            self._release = self._sentences(now, played, playing)
        return self._release

    def finished(self, now: float) -> Release:
        """No more audio will come: everything plays."""
        self.slow = self.rate is not None and not self._keeps_up()
        self._release = Release(now, UNBOUNDED)
        return self._release

    def _keeps_up(self) -> bool:
        rate = self.rate if self.rate is not None else self._first_chunk_rate()
        return rate is not None and rate >= 1.0 - self.options.tolerance

    def _first_chunk_rate(self) -> float | None:
        """The first chunk's seconds of audio per second since the reply began (None: not known)."""
        if self._began is None or self._first_at is None:
            return None
        return self._first_size / self.sample_rate / max(self._first_at - self._began, 1e-9)

    def _sentences(self, now: float, played: int, playing: bool) -> Release:
        """Slower than real time: play up to the last pause, if that makes a whole sentence."""
        shortest = self.options.min_sentence_s * self.sample_rate
        longest = self.options.max_sentence_s * self.sample_rate
        held = self._release.until if self._release.bounded else played  # never taken back
        ends = [cut for cut in self._pauses.cuts if cut > held and (playing or cut - played >= shortest)]
        if ends:
            return Release(now, ends[-1])
        if self._written - max(held, played) >= longest:
            return Release(now, self._written)
        if playing and not self._release.bounded:  # it was keeping up: play on until the queue runs out
            return self._release
        return Release(now if playing else math.inf, held)
