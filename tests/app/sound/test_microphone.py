"""The microphone through an injected input stream: recording, level, overflow, device loss."""

from __future__ import annotations

import numpy as np
import pytest

from app.sound.microphone import BLOCK, DeviceLost, Microphone
from model.audio_rates import INPUT_SAMPLE_RATE
from model.errors import OmnideskError
from tests.app.fakes import MicrophoneFactory


class TestRecording:
    def test_a_spoken_question_is_recorded_whole(self, spoken_samples):
        factory = MicrophoneFactory(spoken_samples)
        mic = Microphone(stream_factory=factory)
        stream = factory.streams[0]
        assert stream.settings == {
            "samplerate": INPUT_SAMPLE_RATE,
            "channels": 1,
            "dtype": "float32",
            "blocksize": BLOCK,
            "device": None,
        }
        assert stream.fed.wait(10)
        assert mic.poll() == ""
        assert mic.level.peak > 0.1 and 0 < mic.level.rms < mic.level.peak
        audio = mic.stop()
        assert stream.closed
        assert np.array_equal(audio.samples, spoken_samples)
        assert mic.overflows == 0

    def test_blocks_beyond_the_queue_are_dropped_and_counted(self):
        factory = MicrophoneFactory()
        mic = Microphone(stream_factory=factory, queue_blocks=4)
        factory.streams[0].push(np.full(BLOCK * 6, 0.5, np.float32))
        assert mic.overflows == 2
        assert mic.stop().seconds == pytest.approx(4 * BLOCK / INPUT_SAMPLE_RATE)

    def test_stopping_at_once_gives_an_empty_recording(self):
        mic = Microphone(stream_factory=MicrophoneFactory())
        assert mic.stop().seconds == 0.0

    def test_no_device_is_a_clear_error(self):
        factory = MicrophoneFactory(unplugged={"USB mic"})
        with pytest.raises(OmnideskError, match="cannot open the microphone “USB mic”"):
            Microphone("USB mic", stream_factory=factory)


class TestDeviceLoss:
    def test_a_lost_device_falls_back_to_the_default_and_keeps_recording(self, spoken_samples):
        factory = MicrophoneFactory(spoken_samples, unplug_after=20)
        mic = Microphone("USB mic", stream_factory=factory)
        assert factory.streams[0].fed.wait(10)
        assert "went away" in mic.poll() and mic.device is None
        assert factory.streams[0].closed and factory.streams[1].settings["device"] is None
        factory.streams[1].push(np.full(BLOCK, 0.25, np.float32))
        mic.poll()
        samples = mic.stop().samples
        assert np.array_equal(samples[: 20 * BLOCK], spoken_samples[: 20 * BLOCK])
        assert np.all(samples[20 * BLOCK :] == np.float32(0.25))

    def test_losing_the_default_too_keeps_what_was_recorded(self, spoken_samples):
        factory = MicrophoneFactory(spoken_samples, unplug_after=20, unplugged={None})
        mic = Microphone("USB mic", stream_factory=factory)
        assert factory.streams[0].fed.wait(10)
        with pytest.raises(DeviceLost, match="went away and cannot open the microphone"):
            mic.poll()
        assert len(mic.stop().samples) == 20 * BLOCK
