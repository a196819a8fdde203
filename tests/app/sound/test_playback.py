"""Playback through an injected output stream whose callback the test drives."""

from __future__ import annotations

import numpy as np
import pytest

from app.sound.playback import DEVICE_BUFFER_S, Playback
from model.errors import OmnideskError

RATE = 24_000
BLOCK = 480


class FakeStream:
    """Stands in for sounddevice.OutputStream: `pull` calls the callback as PortAudio would."""

    def __init__(self, callback, **settings):
        self.callback, self.settings, self.running = callback, settings, False
        self.device_buffer = 0  # samples the device holds, played even after a stop (not after an abort)

    def start(self):
        self.running = True

    def stop(self):
        self.running = False

    def abort(self):
        self.running, self.device_buffer = False, 0

    def close(self):
        pass

    def pull(self, blocks: int) -> np.ndarray:
        out = []
        for _ in range(blocks):
            buffer = np.full((BLOCK, 1), np.nan, dtype=np.float32)
            self.callback(buffer, BLOCK, None, None)
            out.append(buffer[:, 0].copy())
        return np.concatenate(out)


@pytest.fixture
def player():
    streams = []

    def factory(**settings):
        streams.append(FakeStream(**settings))
        return streams[-1]

    playback = Playback(RATE, stream_factory=factory, clock=lambda: 0.0)
    return playback, streams[0]


def test_chunks_play_in_order_once_the_rate_is_known(player):
    playback, stream = player
    playback.write(np.full(600, 0.1, np.float32))
    assert not np.any(stream.pull(1)), "silence until a second chunk shows how fast they come"
    playback.write(np.full(1200, 0.2, np.float32))
    played = stream.pull(4)
    assert np.allclose(played[:600], 0.1) and np.allclose(played[600:1800], 0.2) and not np.any(played[1800:])
    assert playback.underflows == 1  # the stream ran dry before the end was known


def test_finish_plays_a_short_reply_and_reports_drained(player):
    playback, stream = player
    playback.write(np.full(100, 0.3, np.float32))
    playback.finish()
    played = stream.pull(1)
    assert np.allclose(played[:100], 0.3) and playback.wait(0.1)


def test_stop_flushes_at_once(player):
    playback, stream = player
    playback.write(np.full(RATE, 0.5, np.float32))
    playback.write(np.full(RATE, 0.5, np.float32))
    assert np.allclose(stream.pull(1), 0.5), "playing, halfway through a chunk"
    assert playback.state().pending
    playback.stop()
    assert not np.any(stream.pull(2)) and not playback.state().pending and playback.wait(0)
    playback.write(np.full(RATE, 0.7, np.float32))
    playback.finish()
    assert not np.any(stream.pull(2)), "a stopped reply's late chunks are dropped"


def test_the_next_reply_plays_after_a_stop_and_says_when_it_sounded(player):
    playback, stream = player
    playback.write(np.full(RATE, 0.5, np.float32))
    playback.stop()
    playback.begin()
    state = playback.state()
    assert not state.pending and state.first_sound is None and state.played == 0
    playback.write(np.full(300, 0.2, np.float32))
    assert playback.state().pending and playback.state().first_sound is None, "written, not yet heard"
    playback.finish()
    assert np.allclose(stream.pull(1)[:300], 0.2)
    state = playback.state()
    assert state.first_sound == 0.0 and state.played == 300 and not state.pending and playback.wait(0)


def test_a_stopped_reply_finished_later_is_never_heard(player):
    """The worker finishes a stopped reply when its turn ends: that is not its first sound."""
    playback, stream = player
    playback.begin()
    playback.write(np.full(RATE, 0.5, np.float32))
    playback.stop()
    playback.finish()
    assert not np.any(stream.pull(2))
    state = playback.state()
    assert state.first_sound is None and state.played == 0 and not state.pending
    assert playback.underflows == 0, "nothing was due, so nothing ran dry"


def test_the_device_holds_enough_audio_to_outlast_a_busy_machine(player):
    """PortAudio's default buffer (35 ms on PulseAudio) underran whenever the callback's thread waited
    for a core or the GIL behind the stage threads; 0.2 s did not (omnidesk bench speakers)."""
    _, stream = player
    assert stream.settings["latency"] == DEVICE_BUFFER_S >= 0.2


def test_stop_drops_what_the_device_holds(player):
    playback, stream = player
    playback.write(np.full(RATE, 0.5, np.float32))
    playback.write(np.full(RATE, 0.5, np.float32))
    stream.pull(1)
    stream.device_buffer = round(DEVICE_BUFFER_S * RATE)
    playback.stop()
    assert stream.device_buffer == 0 and stream.running, "aborted (its buffer dropped) and started again"
    playback.close()
    assert not stream.running


def test_a_late_callback_is_counted(player):
    playback, stream = player

    class Late:
        output_underflow = True

    stream.callback(np.zeros((BLOCK, 1), np.float32), BLOCK, None, Late())
    assert playback.device_underruns == 1


def test_no_device_is_a_clear_error():
    def no_device(**settings):
        raise RuntimeError("Error querying device -1")

    with pytest.raises(OmnideskError, match="cannot open the sound output"):
        Playback(RATE, stream_factory=no_device)
