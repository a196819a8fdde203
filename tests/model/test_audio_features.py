"""Audio loading, resampling and log-mel features against transformers' WhisperFeatureExtractor."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from model.audio_encoder import audio_token_count
from model.audio_features import (
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    MIN_SAMPLES,
    N_MELS,
    RELEASED_MAX_SAMPLES,
    WHISPER_CHUNK_SECONDS,
    check_recording,
    decode_audio,
    load_audio,
    load_recording,
    log_mel,
    mel_filters,
    mel_frame_count,
    recording_limit,
    resample,
)
from model.audio_rates import INPUT_SAMPLE_RATE
from model.errors import OmnideskError
from tests.fixtures.media_files import write_audio, write_float_wav, write_video
from tests.helpers import max_abs_error, speech_like

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed (FLAC/OGG decoding)")


@pytest.fixture(scope="module")
def extractor():
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=N_MELS)


@pytest.fixture(scope="module")
def released_extractor(tiny_checkpoint):
    """The reference's extractor as the checkpoint configures it (chunk_length 300, as released)."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor.from_pretrained(str(tiny_checkpoint.path))


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    """Real speech from espeak-ng (22.05 kHz, 16-bit mono WAV)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed: no real speech to test with")
    path = tmp_path_factory.mktemp("speech") / "question.wav"
    text = "What is the weather like in Paris today? Please answer briefly."
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return path


def _reference_features(extractor, audio: np.ndarray) -> np.ndarray:
    """What Qwen2.5-Omni's processor gives the audio tower: features padded to the extractor's
    n_samples, masked frames kept."""
    out = extractor(audio, sampling_rate=INPUT_SAMPLE_RATE, padding="max_length", return_attention_mask=True)
    return out["input_features"][0][:, out["attention_mask"][0].astype(bool)]


def _write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2) -> Path:
    """samples (channels, n) in [-1, 1] -> PCM WAV of `width` bytes per sample."""
    scale = 2 ** (8 * width - 1) - 1
    ints = np.round(samples.T * scale).astype(np.int64)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    elif width == 3:
        raw = np.ascontiguousarray(ints.astype("<i4")).view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        raw = ints.astype(f"<i{width}").tobytes()
    with wave.open(str(path), "wb") as f:
        f.setnchannels(samples.shape[0])
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(raw)
    return path


class TestFeatures:
    def test_mel_filters_equal_transformers(self, extractor):
        assert max_abs_error("mel filters", mel_filters(), extractor.mel_filters) < 1e-12

    @needs_espeak
    def test_speech_matches_whisper_extractor(self, extractor, speech_wav):
        audio = load_audio(speech_wav)
        ours = log_mel(audio).numpy()
        reference = _reference_features(extractor, audio)
        assert ours.shape == (N_MELS, mel_frame_count(len(audio)))
        assert max_abs_error("log-mel, espeak-ng speech", ours, reference) < 1e-4

    @pytest.mark.parametrize("n_samples", [1, 159, 160, 161, 48_000, 100_003])
    def test_noise_matches_whisper_extractor(self, extractor, n_samples):
        audio = (0.1 * np.random.default_rng(n_samples).standard_normal(n_samples)).astype(np.float32)
        ours = log_mel(audio).numpy()
        assert (
            max_abs_error(f"log-mel, noise {n_samples}", ours, _reference_features(extractor, audio)) < 1e-4
        )

    @pytest.mark.parametrize("seconds", [29, 31, 299, 301])
    def test_the_checkpoints_limit_as_reference(self, released_extractor, tiny_bundle, seconds):
        """The released preprocessor config keeps 300 s: shorter recordings whole, longer ones cut there
        (the last frames see the processor's own reflect padding)."""
        limit = recording_limit(tiny_bundle.preprocessor)
        assert limit == released_extractor.n_samples == 300 * INPUT_SAMPLE_RATE
        audio = speech_like(seconds, seed=seconds)
        ours = log_mel(audio, max_samples=limit).numpy()
        assert ours.shape == (N_MELS, min(seconds, 300) * FRAMES_PER_SECOND)
        reference = _reference_features(released_extractor, audio)
        assert max_abs_error(f"log-mel, {seconds} s, limit 300 s", ours, reference) < 1e-4

    def test_a_loud_end_past_the_limit_does_not_set_the_floor(self, released_extractor):
        audio = np.full(301 * INPUT_SAMPLE_RATE, 1e-4, np.float32)
        audio[300 * INPUT_SAMPLE_RATE + 100 :] = 1.0
        ours = log_mel(audio, max_samples=RELEASED_MAX_SAMPLES).numpy()
        reference = _reference_features(released_extractor, audio)
        assert max_abs_error("log-mel, quiet 300 s then loud", ours, reference) < 1e-4
        assert ours.min() < ours.max() - 0.5, "the quiet part keeps its own range"

    @pytest.mark.parametrize("offset", [-100, 0, 16_000])
    def test_a_checkpoint_that_says_30_s_is_heard_for_30_s(self, extractor, offset):
        """Whisper's own chunk_length: the limit follows the checkpoint (and a config without
        chunk_length means WhisperFeatureExtractor's default, 30 s)."""
        limit = recording_limit({"feature_size": N_MELS})
        assert limit == WHISPER_CHUNK_SECONDS * INPUT_SAMPLE_RATE == extractor.n_samples
        n_samples = limit + offset
        audio = (0.1 * np.random.default_rng(3).standard_normal(n_samples)).astype(np.float32)
        ours = log_mel(audio, max_samples=limit).numpy()
        assert ours.shape[1] == 3000
        reference = _reference_features(extractor, audio)
        assert max_abs_error(f"log-mel, {n_samples} samples, limit 30 s", ours, reference) < 1e-4

    def test_click_after_the_last_kept_frame_sets_the_range(self, extractor):
        """The reference's dynamic range uses frames past the recording's end too."""
        audio = np.full(16_000, 1e-4, np.float32)
        audio[-3:] = 1.0
        assert (
            max_abs_error("log-mel, end click", log_mel(audio).numpy(), _reference_features(extractor, audio))
            < 1e-4
        )

    def test_frame_count(self, extractor):
        assert mel_frame_count(3 * INPUT_SAMPLE_RATE) == 300
        for n in (1, 159, 160, 161, 47_999):
            mask = extractor(
                np.zeros(n, np.float32), sampling_rate=INPUT_SAMPLE_RATE, return_attention_mask=True
            )
            assert mel_frame_count(n) == int(mask["attention_mask"].sum()) == -(-n // HOP_LENGTH)


class TestRecordingLimit:
    def test_from_the_preprocessor_config(self):
        assert recording_limit({"chunk_length": 300, "n_samples": 4_800_000}) == 4_800_000
        assert recording_limit({"chunk_length": 40}) == 40 * INPUT_SAMPLE_RATE

    def test_a_bundle_without_one_hears_as_the_released_checkpoints(self):
        assert recording_limit(None) == RELEASED_MAX_SAMPLES == 300 * INPUT_SAMPLE_RATE

    @pytest.mark.parametrize("value", [0, -3, "300", None, True, 1e9])
    def test_a_bad_chunk_length_is_a_clear_error(self, value):
        with pytest.raises(OmnideskError, match="chunk_length .* not a number of seconds"):
            recording_limit({"chunk_length": value})


class TestResample:
    @pytest.mark.parametrize("orig_rate", [22_050, 44_100, 48_000, 8_000])
    def test_sine_stays_a_sine(self, orig_rate):
        n = orig_rate  # 1 s
        tone = np.sin(2 * np.pi * 1000 * np.arange(n) / orig_rate).astype(np.float32)
        out = resample(torch.from_numpy(tone), orig_rate, INPUT_SAMPLE_RATE).numpy()
        expected = np.sin(2 * np.pi * 1000 * np.arange(len(out)) / INPUT_SAMPLE_RATE)
        assert len(out) == INPUT_SAMPLE_RATE
        edge = 400  # the filter's reach at the ends, where the signal was cut
        assert (
            max_abs_error(f"1 kHz sine {orig_rate} Hz -> 16 kHz", out[edge:-edge], expected[edge:-edge])
            < 1e-3
        )

    def test_removes_what_16k_cannot_hold(self):
        tone = np.sin(2 * np.pi * 10_000 * np.arange(48_000) / 48_000).astype(np.float32)  # above 8 kHz
        out = resample(torch.from_numpy(tone), 48_000, INPUT_SAMPLE_RATE).numpy()
        assert np.abs(out[400:-400]).max() < 1e-3

    def test_same_rate_is_identity(self):
        x = torch.randn(100)
        assert resample(x, INPUT_SAMPLE_RATE, INPUT_SAMPLE_RATE) is x


class TestLoading:
    def test_pcm_wav_widths_and_stereo(self, tmp_path):
        tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16_000) / INPUT_SAMPLE_RATE)
        stereo = np.stack([tone, -0.5 * tone])
        for width, tolerance in ((1, 1e-2), (2, 1e-4), (3, 1e-6), (4, 1e-7)):
            path = _write_wav(tmp_path / f"tone{width}.wav", stereo, INPUT_SAMPLE_RATE, width)
            loaded = load_audio(path)
            assert loaded.dtype == np.float32
            assert max_abs_error(f"{8 * width}-bit stereo WAV", loaded, 0.25 * tone) < tolerance

    @needs_sox
    @pytest.mark.parametrize("suffix", [".flac", ".ogg"])
    def test_flac_and_ogg(self, tmp_path, suffix):
        tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(44_100) / 44_100)
        wav = _write_wav(tmp_path / "tone.wav", tone[None], 44_100)
        other = tmp_path / f"tone{suffix}"
        subprocess.run(["sox", str(wav), str(other)], check=True, capture_output=True)
        loaded, reference = load_audio(other), load_audio(wav)
        # FFmpeg's Vorbis decoder ends 126 samples (at 44.1 kHz) earlier than libvorbis.
        missing = len(reference) - len(loaded)
        assert missing == 0 if suffix == ".flac" else 0 <= missing <= 50
        tolerance = 1e-3 if suffix == ".flac" else 0.05  # Vorbis is lossy
        kept = slice(400, len(loaded) - 400)
        assert max_abs_error(f"{suffix} vs WAV", loaded[kept], reference[kept]) < tolerance


class TestCompressed:
    @pytest.mark.parametrize("suffix", [".mp3", ".m4a", ".opus", ".flac"])
    def test_compressed_audio_decodes_close_to_the_original(self, tmp_path, suffix):
        speech = speech_like(2.0, seed=2)
        loaded = load_audio(write_audio(tmp_path / f"speech{suffix}", speech, INPUT_SAMPLE_RATE))
        # Encoders add a little delay and padding (AAC: one 1024-sample frame); compare what overlaps.
        shift = _best_shift(loaded, speech)
        overlap = min(len(loaded) - shift, len(speech))
        tolerance = 1e-3 if suffix == ".flac" else 0.1  # lossless, or lossy at the default bit rate
        error = max_abs_error(f"{suffix} vs original", loaded[shift : shift + overlap], speech[:overlap])
        assert error < tolerance

    def test_the_sound_track_of_a_video(self, tmp_path):
        speech = speech_like(2.0, seed=3)
        frames = np.zeros((20, 32, 32, 3), np.uint8)
        loaded = load_audio(write_video(tmp_path / "talk.mp4", frames, np.arange(20) / 10, speech))
        assert abs(len(loaded) - len(speech)) <= 2048


class TestLongFiles:
    """Decoding stops at MAX_DECODED_SECONDS whatever the file's length (memory stays bounded), and
    the Audio says how long the whole recording is. The limit is lowered to 2 s here, so that the
    files can be short."""

    @pytest.fixture(autouse=True)
    def two_seconds(self, monkeypatch):
        monkeypatch.setattr("model.audio_features.MAX_DECODED_SECONDS", 2)

    @pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp3", ".mp4"])
    def test_only_the_start_is_decoded_and_the_length_is_kept(self, tmp_path, suffix):
        speech = speech_like(5.0, seed=4)
        if suffix == ".wav":
            path = _write_wav(tmp_path / "long.wav", speech[None], INPUT_SAMPLE_RATE)
        elif suffix == ".mp4":
            frames = np.zeros((50, 32, 32, 3), np.uint8)
            path = write_video(tmp_path / "long.mp4", frames, np.arange(50) / 10, speech)
        else:
            path = write_audio(tmp_path / f"long{suffix}", speech, INPUT_SAMPLE_RATE)
        audio = load_recording(path)
        print(f"{suffix}: decoded {audio.seconds:.3f} s of a {audio.recording_s:.3f} s recording")
        assert audio.seconds == pytest.approx(2.0, abs=1e-3)
        assert audio.length_s is not None and audio.recording_s == pytest.approx(5.0, abs=0.1)

    def test_a_recording_within_the_limit_is_whole(self, tmp_path):
        speech = speech_like(1.5, seed=5)
        audio = load_recording(_write_wav(tmp_path / "short.wav", speech[None], INPUT_SAMPLE_RATE))
        assert audio.length_s is None and audio.recording_s == audio.seconds == 1.5

    def test_a_cut_off_file_is_as_long_as_what_it_holds(self, tmp_path):
        """Its header promises 5 s; the file ends after 1 s: no notice of a longer recording."""
        path = _write_wav(tmp_path / "cut.wav", speech_like(5.0, seed=7)[None], INPUT_SAMPLE_RATE)
        path.write_bytes(path.read_bytes()[: 44 + 2 * INPUT_SAMPLE_RATE])
        audio = load_recording(path)
        assert audio.seconds == 1.0 and audio.length_s is None

    def test_many_channels_at_a_high_rate_decode_within_the_value_bound(self, tmp_path, monkeypatch):
        monkeypatch.setattr("model.audio_features.MAX_DECODED_VALUES", 8 * 48_000)  # 1 s of 8 at 48 kHz
        noise = 0.1 * np.random.default_rng(0).standard_normal((8, 2 * 48_000))
        sound = decode_audio(_write_wav(tmp_path / "eight.wav", noise, 48_000))
        assert sound.samples.shape == (8, 48_000) and sound.seconds == 2.0 and not sound.whole


def _best_shift(loaded: np.ndarray, original: np.ndarray, most: int = 4096) -> int:
    """The encoder's delay in samples: the shift that best aligns the decoded signal with the original."""
    head = original[:8000]
    errors = [np.abs(loaded[k : k + len(head)] - head).mean() for k in range(most)]
    return int(np.argmin(errors))


class TestBadInput:
    def test_empty_file(self, tmp_path):
        path = tmp_path / "empty.wav"
        path.write_bytes(b"")
        with pytest.raises(OmnideskError, match="empty"):
            load_audio(path)

    @pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
    def test_corrupt_file(self, tmp_path, suffix):
        path = tmp_path / f"corrupt{suffix}"
        path.write_bytes(b"RIFF\x00\x01junk" + bytes(range(256)) * 4)
        with pytest.raises(OmnideskError, match="not a readable"):
            load_audio(path)

    def test_zero_length_recording(self, tmp_path):
        path = _write_wav(tmp_path / "silence.wav", np.zeros((1, 0)), INPUT_SAMPLE_RATE)
        with pytest.raises(OmnideskError, match="empty"):
            load_audio(path)
        with pytest.raises(OmnideskError, match="empty"):
            log_mel(np.zeros(0, np.float32))

    @pytest.mark.parametrize("name", ["notes.txt", "noextension"])
    def test_unsupported_format(self, tmp_path, name):
        path = tmp_path / name
        path.write_bytes(b"ID3\x03\x00" + bytes(512))
        with pytest.raises(OmnideskError, match="unsupported audio format"):
            load_audio(path)

    @pytest.mark.parametrize("name", ["song.mp3", "clip.mp4"])
    def test_garbage_in_a_known_format(self, tmp_path, name):
        path = tmp_path / name
        path.write_bytes(b"ID3\x03\x00" + bytes(512))
        with pytest.raises(OmnideskError, match="not a readable audio file"):
            load_audio(path)

    def test_a_video_without_sound(self, tmp_path):
        frames = np.zeros((4, 32, 32, 3), np.uint8)
        path = write_video(tmp_path / "silent.mp4", frames, np.arange(4) / 4)
        with pytest.raises(OmnideskError, match="no sound track"):
            load_audio(path)

    def test_missing_file(self, tmp_path):
        with pytest.raises(OmnideskError, match="not found"):
            load_audio(tmp_path / "nothing.wav")


class TestUnhearable:
    """Float recordings that would feed the Thinker NaN, and recordings too short to make one embedding."""

    @pytest.mark.parametrize(
        ("bad", "expected"),
        [
            (np.nan, "not numbers"),
            (np.inf, "not numbers"),
            (-np.inf, "not numbers"),
            (1e30, r"samples reach 1e\+30, far beyond"),
            (32767.0, "wrongly scaled"),
        ],
    )
    def test_a_float_wav_that_is_not_sound(self, tmp_path, bad, expected):
        samples = speech_like(1.0)
        samples[8000:8010] = bad
        path = write_float_wav(tmp_path / "damaged.wav", samples)
        with pytest.raises(OmnideskError, match=expected) as raised:
            load_audio(path)
        assert str(raised.value).startswith(str(path))

    def test_a_float_wav_of_sound_is_heard(self, tmp_path):
        samples = speech_like(1.0) * 1.5  # a little beyond full scale, as processed sound may be
        loaded = load_audio(write_float_wav(tmp_path / "loud.wav", samples))
        assert np.abs(loaded - samples).max() < 1e-6

    def test_the_shortest_recording_makes_one_embedding(self):
        assert audio_token_count(mel_frame_count(MIN_SAMPLES)) == 1
        assert audio_token_count(mel_frame_count(MIN_SAMPLES - 1)) == 0

    @pytest.mark.parametrize("n", [1, 5, MIN_SAMPLES - 1])
    def test_a_few_samples_are_too_short(self, tmp_path, n):
        path = _write_wav(tmp_path / "blip.wav", np.full((1, n), 0.1), INPUT_SAMPLE_RATE)
        with pytest.raises(OmnideskError, match=r"too short \(\d+ ms\): at least 20 ms"):
            load_audio(path)
        with pytest.raises(OmnideskError, match="too short"):
            check_recording(np.full(n, 0.1, np.float32))
        check_recording(np.full(MIN_SAMPLES, 0.1, np.float32))

    def test_a_question_with_them_ends_in_one_clear_error(self, tiny_bundle):
        from model.media import Audio, Question
        from model.pipeline import Conversation, TurnFinished, TurnOptions
        from model.thinker_types import ThinkerOptions

        conversation = Conversation(tiny_bundle, ThinkerOptions(n_ctx=1024))
        try:
            for samples, expected in [
                (np.full(40, 0.1, np.float32), "too short"),
                (np.full(16_000, np.nan, np.float32), "not numbers"),
            ]:
                question = Question("what is this?", audios=(Audio(samples),))
                (finished,) = list(conversation.turn(question, TurnOptions(speak=False, max_tokens=4)))
                assert isinstance(finished, TurnFinished) and finished.reason == "error"
                assert expected in finished.error
        finally:
            conversation.close()
