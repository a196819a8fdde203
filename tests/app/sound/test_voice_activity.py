"""Voice activity: utterances cut from a stream with hysteresis, pre-roll and tail (on scripted
probabilities), then Silero VAD itself on a question spoken by espeak-ng."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.sound.voice_activity import FRAME, SileroVad, SpeechEnded, SpeechStarted, VoiceActivity, VoiceOptions

OPTIONS = VoiceOptions(threshold=0.5, silence_s=0.8, pre_roll_s=0.3, tail_s=0.2, min_speech_s=0.25)
# In frames of 32 ms: 0.3 s of pre-roll is 10, 0.2 s of tail 7, 0.25 s of speech 8, 0.8 s of silence 25.
PRE_ROLL, TAIL, MIN_SPEECH, SILENCE = 10, 7, 8, 25


class Scripted:
    """Probabilities by frame, in order; the frames' samples are their numbers (to find them again)."""

    def __init__(self, probabilities: list[float]) -> None:
        self.probabilities = probabilities
        self.resets = 0

    def __call__(self, frame: np.ndarray) -> float:
        assert frame.shape == (FRAME,) and frame.dtype == np.float32
        return self.probabilities[int(frame[0])]

    def reset(self) -> None:
        self.resets += 1

    @property
    def stream(self) -> np.ndarray:
        """Frame n holds the number n in every sample."""
        return np.repeat(np.arange(len(self.probabilities), dtype=np.float32), FRAME)


def frames(stream: np.ndarray, first: int, end: int) -> np.ndarray:
    return stream[first * FRAME : end * FRAME]


def run(scripted: Scripted, chunk: int | None = None, options: VoiceOptions = OPTIONS) -> list:
    voice = VoiceActivity(scripted, options)
    stream = scripted.stream
    chunk = chunk or len(stream)
    return [
        event for start in range(0, len(stream), chunk) for event in voice.feed(stream[start : start + chunk])
    ]


class TestUtterances:
    def test_an_utterance_keeps_its_pre_roll_and_tail_and_ends_after_the_silence(self):
        # 20 frames of silence, 30 of speech, then silence: speech starts at frame 20.
        scripted = Scripted([0.1] * 20 + [0.9] * 30 + [0.05] * 40)
        events = run(scripted)
        assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
        assert np.array_equal(events[1].samples, frames(scripted.stream, 20 - PRE_ROLL, 50 + TAIL))

    def test_it_starts_after_min_speech_and_ends_after_silence_s(self):
        scripted = Scripted([0.0] * 5 + [0.9] * 30 + [0.0] * 40)
        voice = VoiceActivity(scripted, OPTIONS)
        stream = scripted.stream
        told = {}
        for n in range(len(scripted.probabilities)):
            for event in voice.feed(frames(stream, n, n + 1)):
                told[type(event)] = n
        assert told == {SpeechStarted: 5 + MIN_SPEECH - 1, SpeechEnded: 35 + SILENCE - 1}

    def test_between_the_two_thresholds_speech_goes_on(self):
        """Silero's hysteresis: once started, only below threshold - 0.15 is silence."""
        scripted = Scripted([0.9] * 10 + [0.4] * 40 + [0.9] * 5 + [0.0] * 30)
        events = run(scripted)
        assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
        assert len(events[1].samples) == (55 + TAIL) * FRAME, "one utterance, the 0.4s inside it"

    def test_a_cough_starts_nothing(self):
        scripted = Scripted([0.0] * 5 + [0.9] * (MIN_SPEECH - 1) + [0.0] * 40 + [0.9] * 20 + [0.0] * 30)
        events = run(scripted)
        assert [type(e) for e in events] == [SpeechStarted, SpeechEnded], "only the later speech"
        start = 5 + MIN_SPEECH - 1 + 40
        assert np.array_equal(events[1].samples, frames(scripted.stream, start - PRE_ROLL, start + 20 + TAIL))

    def test_two_utterances_with_a_second_between(self):
        scripted = Scripted([0.0] * 10 + ([0.9] * 20 + [0.0] * 32) * 2)
        events = run(scripted)
        assert [type(e) for e in events] == [SpeechStarted, SpeechEnded] * 2
        assert np.array_equal(events[3].samples, frames(scripted.stream, 62 - PRE_ROLL, 82 + TAIL))

    @pytest.mark.parametrize("chunk", [320, 480, 1000, 7])
    def test_chunks_of_any_size_give_the_same_utterances(self, chunk):
        scripted = Scripted([0.1] * 20 + [0.9] * 30 + [0.05] * 40)
        whole, chunked = run(scripted), run(scripted, chunk)
        assert [type(e) for e in chunked] == [type(e) for e in whole]
        assert np.array_equal(chunked[1].samples, whole[1].samples)

    def test_a_longer_silence_setting_waits_longer(self):
        scripted = Scripted([0.9] * 20 + [0.0] * 30 + [0.9] * 20 + [0.0] * 50)
        assert len(run(scripted)) == 4, "0.8 s: two utterances"
        assert len(run(scripted, options=VoiceOptions(silence_s=1.5))) == 2, "1.5 s: one"


class TestInterruptAndReset:
    def test_interrupting_speech_gives_what_was_said_and_starts_afresh(self):
        scripted = Scripted([0.0] * 12 + [0.9] * 20 + [0.9] * 10)
        voice = VoiceActivity(scripted, OPTIONS)
        stream = scripted.stream
        heard = stream[: 32 * FRAME + 100]  # 100 samples of a frame not yet whole
        assert [type(e) for e in voice.feed(heard)] == [SpeechStarted]
        assert voice.hearing
        ended = voice.interrupt()
        assert ended is not None and np.array_equal(ended.samples, heard[(12 - PRE_ROLL) * FRAME :])
        assert not voice.hearing and scripted.resets == 1
        assert voice.feed(frames(stream, 32, 32 + MIN_SPEECH - 1)) == [], "a new stream: speech starts again"
        assert voice.feed(frames(stream, 32 + MIN_SPEECH - 1, 42)) == [SpeechStarted()]

    def test_interrupting_before_speech_started_gives_nothing(self):
        scripted = Scripted([0.0] * 5 + [0.9] * 3)
        voice = VoiceActivity(scripted, OPTIONS)
        assert voice.feed(scripted.stream) == []
        assert voice.interrupt() is None


@pytest.fixture(scope="module")
def silero():
    threads = torch.get_num_threads()
    vad = SileroVad()
    assert torch.get_num_threads() == threads, "loading it leaves torch's threads alone"
    return vad


class TestSilero:
    def test_a_spoken_question_is_one_utterance(self, silero, spoken_samples):
        silence = np.zeros(16_000, np.float32)
        voice = VoiceActivity(silero)
        voice.reset()
        events = voice.feed(np.concatenate([silence, spoken_samples, silence, silence]))
        assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
        spoken = np.flatnonzero(np.abs(spoken_samples) > 0.02)
        speech_s = (spoken[-1] - spoken[0]) / 16_000
        heard_s = len(events[1].samples) / 16_000
        print(f"speech {speech_s:.2f} s, utterance {heard_s:.2f} s")
        assert speech_s < heard_s < speech_s + 0.3 + 0.2 + 0.3, "the speech, its pre-roll and tail (and lag)"
        loud = np.flatnonzero(np.abs(events[1].samples) > 0.02)
        assert loud[0] >= 0.1 * 16_000, "the pre-roll is before the first sound"

    def test_silence_and_hum_are_not_speech(self, silero):
        rng = np.random.default_rng(0)
        t = np.arange(3 * 16_000) / 16_000
        hum = (0.05 * np.sin(2 * np.pi * 50 * t) + rng.normal(0, 0.003, t.size)).astype(np.float32)
        voice = VoiceActivity(silero)
        voice.reset()
        assert voice.feed(np.zeros(16_000, np.float32)) == []
        assert voice.feed(hum) == []
