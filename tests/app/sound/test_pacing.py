"""The playback policy: pauses found in speech, when a reply may start, sentences where speech is
made slower than it plays; then a spoken reply made at a given rate and played through `Playback`
on a fake output device, on a fake clock, counting what the listener would hear go wrong."""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass

import numpy as np
import pytest

from app.sound.pacing import UNBOUNDED, Pacer, PacingOptions, PauseFinder, Release
from app.sound.playback import Playback
from model.audio_features import load_audio

RATE = 16_000
BLOCK = 320  # 20 ms: one callback of the fake output device
SENTENCES = (
    "The weather today is sunny and warm. Tomorrow it may rain, so take an umbrella with you. "
    "In the evening the wind will calm down, and the night will be clear and cold."
)


@pytest.fixture(scope="module")
def reply(tmp_path_factory) -> np.ndarray:
    """A spoken reply of three sentences (espeak-ng), 16 kHz float32."""
    path = tmp_path_factory.mktemp("reply") / "reply.wav"
    subprocess.run(["espeak-ng", "-w", str(path), SENTENCES], check=True)
    return load_audio(path)


def tone(seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), np.float32)


class TestPauses:
    def test_a_quiet_run_long_enough_is_a_cut_in_its_middle(self):
        finder = PauseFinder(RATE, PacingOptions())
        speech = np.concatenate([tone(1.0), silence(0.3), tone(0.5), silence(0.1), tone(0.5)])
        for start in range(0, len(speech), 777):  # in odd pieces, as chunks come
            finder.add(speech[start : start + 777])
        assert len(finder.cuts) == 1, "0.1 s is a breath, not a pause"
        assert abs(finder.cuts[0] / RATE - (1.0 + 0.075)) < 0.011

    def test_leading_silence_is_no_pause(self):
        finder = PauseFinder(RATE, PacingOptions())
        finder.add(np.concatenate([silence(0.5), tone(0.5)]))
        assert finder.cuts == []


class TestPacer:
    def test_one_chunk_is_held_until_the_rate_is_known(self):
        pacer = Pacer(RATE)
        assert pacer.written(tone(0.5), now=1.0, played=0, playing=False).start_at == math.inf
        assert pacer.rate is None

    def test_a_first_chunk_made_far_faster_than_it_plays_starts_at_once(self):
        pacer = Pacer(RATE, PacingOptions(margin=1.25))
        pacer.begin(now=0.0)
        release = pacer.written(tone(0.5), now=0.2, played=0, playing=False)  # 2.5x real time
        assert release.start_at == pytest.approx(0.2 + 1.25 * 0.2 - 0.5) and release.until == UNBOUNDED
        slower = Pacer(RATE)
        slower.begin(now=0.0)
        assert slower.written(tone(0.5), now=1.0, played=0, playing=False).start_at == math.inf

    def test_keeping_up_it_starts_when_the_queue_lasts_to_the_next_chunk(self):
        pacer = Pacer(RATE, PacingOptions(margin=1.0))
        pacer.written(tone(0.5), now=1.0, played=0, playing=False)
        release = pacer.written(tone(0.5), now=1.4, played=0, playing=False)
        assert pacer.rate == pytest.approx(0.5 / 0.4)
        # 1 s queued, the next chunk due 0.4 s after this one: it may start at once
        assert release == Release(pytest.approx(1.4 + 0.4 - 1.0), UNBOUNDED)

    def test_bursts_wait_for_the_longest_gap(self):
        pacer = Pacer(RATE, PacingOptions(margin=1.0))
        pacer.written(tone(0.2), now=0.0, played=0, playing=False)
        pacer.written(tone(2.0), now=2.0, played=0, playing=False)  # a 2 s wait, then a lot at once
        release = pacer.written(tone(0.2), now=2.01, played=0, playing=False)
        assert release.start_at == pytest.approx(2.01 + 2.0 - 2.4)

    def test_slower_than_real_time_it_plays_whole_sentences(self):
        pacer = Pacer(RATE)
        first = np.concatenate([tone(1.5), silence(0.3), tone(0.4)])
        assert pacer.written(first, now=0.0, played=0, playing=False).start_at == math.inf, "1.6 s: too short"
        second = np.concatenate([tone(0.8), silence(0.3), tone(0.2)])
        release = pacer.written(second, now=10.0, played=0, playing=False)
        assert release.start_at == 10.0 and release.bounded
        assert release.until / RATE == pytest.approx(2.2 + 0.8 + 0.075, abs=0.011), "up to the last pause"
        later = pacer.written(np.concatenate([tone(0.3), silence(0.3)]), now=12.0, played=RATE, playing=True)
        assert later.until / RATE == pytest.approx(3.5 + 0.3 + 0.075, abs=0.011), "joins the one playing"
        assert pacer.finished(now=20.0) == Release(20.0, UNBOUNDED) and pacer.slow

    def test_a_long_stretch_without_a_pause_plays_once_long_enough(self):
        pacer = Pacer(RATE, PacingOptions(max_sentence_s=3.0))
        pacer.written(tone(1.0), now=0.0, played=0, playing=False)
        assert pacer.written(tone(1.0), now=5.0, played=0, playing=False).start_at == math.inf
        release = pacer.written(tone(1.0), now=10.0, played=0, playing=False)
        assert release == Release(10.0, 3 * RATE)

    def test_a_new_reply_forgets_the_last(self):
        pacer = Pacer(RATE)
        pacer.written(tone(0.5), now=0.0, played=0, playing=False)
        pacer.written(tone(0.5), now=10.0, played=0, playing=False)
        pacer.finished(now=11.0)
        assert pacer.slow
        pacer.begin()
        assert pacer.rate is None and not pacer.slow


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeOutput:
    """Stands in for sounddevice.OutputStream; `pull` runs the callback as PortAudio would."""

    latency = 0.05

    def __init__(self, callback, **settings) -> None:
        self.callback, self.settings = callback, settings

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass

    def pull(self) -> np.ndarray:
        buffer = np.full((BLOCK, 1), np.nan, np.float32)
        self.callback(buffer, BLOCK, None, None)
        return buffer[:, 0].copy()


@dataclass
class Heard:
    """What came out of the speakers, and when."""

    output: np.ndarray  # every sample the device played, the silence between pieces included
    pieces: list[float]  # seconds of each stretch played without a stop
    start: int  # the sample of `output` where the first piece began
    first_sound: float  # fake-clock seconds, as the playback reported it
    playback: Playback


def make_and_play(speech: np.ndarray, rate: float, chunk_s: float = 0.5, first_s: float = 1.0) -> Heard:
    """Make `speech` in chunks of `chunk_s` at `rate` times real time (the first ready at `first_s`),
    playing it as it comes through a fake output device, one 20 ms callback per tick of a fake clock."""
    clock = FakeClock()
    outputs: list[FakeOutput] = []

    def device(**settings) -> FakeOutput:
        outputs.append(FakeOutput(**settings))
        return outputs[-1]

    playback = Playback(RATE, stream_factory=device, clock=clock)
    step = round(chunk_s * RATE)
    chunks = [speech[i : i + step] for i in range(0, len(speech), step)]
    playback.begin()
    made, blocks, pieces, before, start = 0, [], [0.0], 0, -1
    while not playback.wait(0):
        while made < len(chunks) and first_s + made * chunk_s / rate <= clock.now:
            playback.write(chunks[made])
            made += 1
            if made == len(chunks):
                playback.finish()
        blocks.append(outputs[0].pull())
        played = playback.state().played
        if played > before:
            pieces[-1] += (played - before) / RATE
            start = start if start >= 0 else (len(blocks) - 1) * BLOCK
        elif pieces[-1]:
            pieces.append(0.0)
        before = played
        clock.now += BLOCK / RATE
        assert clock.now < 600, "the reply never ended"
    first_sound = playback.state().first_sound
    assert first_sound is not None and before == len(speech), "every sample was played"
    return Heard(np.concatenate(blocks), [p for p in pieces if p], start, first_sound, playback)


def frame_rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


class TestPlayingAReply:
    @pytest.mark.parametrize("rate", [1.0, 1.5, 4.0])
    def test_keeping_up_it_never_runs_dry_once_started(self, reply, rate):
        heard = make_and_play(reply, rate)
        print(f"rate {rate}: first sound {heard.first_sound - 1.0:.2f} s after the first chunk")
        assert heard.playback.underflows == 0 and heard.playback.pauses == 0
        assert len(heard.pieces) == 1
        assert np.array_equal(heard.output[heard.start : heard.start + len(reply)], reply), "in order, whole"
        assert np.all(heard.output[: heard.start] == 0) and not np.any(np.isnan(heard.output))
        second_chunk = 1.0 + 0.5 / rate
        assert heard.first_sound == pytest.approx(heard.start / RATE + FakeOutput.latency)
        assert heard.first_sound <= second_chunk + 0.1, "it does not wait longer than the rate requires"
        assert not heard.playback.state().slow

    def test_on_a_gpu_the_first_chunk_is_heard_before_the_second_is_made(self, reply):
        """Speech made 8x faster than it plays, the first chunk 0.1 s after the question."""
        heard = make_and_play(reply, rate=8.0, first_s=0.1)
        print(f"first sound {heard.first_sound:.3f} s after the question")
        assert heard.first_sound < 0.1 + 0.5 / 8.0, "it did not wait for the second chunk"
        assert heard.playback.underflows == 0 and len(heard.pieces) == 1

    @pytest.mark.parametrize("rate", [0.9, 0.3, 0.05])
    def test_too_slow_it_plays_whole_sentences(self, reply, rate):
        heard = make_and_play(reply, rate)
        playback = heard.playback
        print(f"rate {rate}: pieces {[round(p, 2) for p in heard.pieces]} s, {playback.pauses} pauses")
        assert playback.underflows == 0, "never a stop in the middle of a word"
        assert playback.pauses == len(heard.pieces) - 1 <= SENTENCES.count(".")
        assert all(p >= PacingOptions().min_sentence_s for p in heard.pieces[:-1]), "no blips"
        loudest = max(frame_rms(reply[i : i + 160]) for i in range(0, len(reply), 160))
        cut = 0
        for piece in heard.pieces[:-1]:
            cut += round(piece * RATE)
            assert frame_rms(reply[cut - 160 : cut + 160]) < 0.1 * loudest, "each stop is at a pause"
        assert playback.state().slow
