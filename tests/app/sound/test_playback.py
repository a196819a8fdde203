"""Playback through an injected output stream whose callback the test drives."""

from __future__ import annotations

import numpy as np
import pytest

from app.sound.playback import Playback
from model.errors import OmnideskError

RATE = 24_000
BLOCK = 480


class FakeStream:
    """Stands in for sounddevice.OutputStream: `pull` calls the callback as PortAudio would."""

    def __init__(self, callback, **settings):
        self.callback, self.settings, self.running = callback, settings, False

    def start(self):
        self.running = True

    def stop(self):
        self.running = False

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


def test_no_device_is_a_clear_error():
    def no_device(**settings):
        raise RuntimeError("Error querying device -1")

    with pytest.raises(OmnideskError, match="cannot open the sound output"):
        Playback(RATE, stream_factory=no_device)
