"""load_audio on damaged WAV files: samples, or an OmnideskError naming the file, never another exception.

WAV files that fail Python's own PCM reader go on to sox when it is installed (as in CI),
so both decoders meet the damage.
"""

from __future__ import annotations

import io
import struct
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.audio_features import load_audio
from model.audio_rates import INPUT_SAMPLE_RATE
from model.errors import OmnideskError
from tests.hardening.fuzzing import fuzz

EXAMPLES = 200
FUZZ = fuzz(EXAMPLES)
HEADER = 44  # bytes of a plain PCM WAV header: RIFF, fmt and data chunk headers


def wav_bytes(rate: int, width: int, channels: int, frames: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(
            np.random.default_rng(0).integers(0, 256, frames * width * channels, np.uint8).tobytes()
        )
    return buffer.getvalue()


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def load_or_explain(path: Path, content: bytes) -> np.ndarray | None:
    path.write_bytes(content)
    try:
        samples = load_audio(path)
    except OmnideskError as exc:
        assert str(exc).startswith(str(path))
        return None
    assert samples.dtype == np.float32 and samples.ndim == 1
    return samples


valid_wavs = st.builds(
    wav_bytes,
    rate=st.sampled_from([8_000, 11_025, 16_000, 22_050, 44_100, 48_000]),
    width=st.sampled_from([1, 2, 3, 4]),
    channels=st.integers(1, 3),
    frames=st.integers(1, 800),
)


class TestDamagedWav:
    @FUZZ
    @given(original=valid_wavs, data=st.data())
    def test_header_bytes_changed(self, folder, original, data):
        damaged = bytearray(original)
        for _ in range(data.draw(st.integers(1, 6))):
            damaged[data.draw(st.integers(0, HEADER - 1))] = data.draw(st.integers(0, 255))
        load_or_explain(folder / "changed.wav", bytes(damaged))

    @FUZZ
    @given(
        original=valid_wavs,
        field=st.sampled_from(["channels", "rate", "width"]),
        value=st.integers(0, 2**32 - 1),
    )
    def test_any_value_in_a_format_field(self, folder, original, field, value):
        offset, fmt = {"channels": (22, "<H"), "rate": (24, "<I"), "width": (34, "<H")}[field]
        value %= 2 ** (8 * struct.calcsize(fmt))
        damaged = original[:offset] + struct.pack(fmt, value) + original[offset + struct.calcsize(fmt) :]
        load_or_explain(folder / "field.wav", damaged)

    @FUZZ
    @given(original=valid_wavs, fraction=st.floats(0, 1, exclude_max=True))
    def test_cut_short_anywhere(self, folder, original, fraction):
        load_or_explain(folder / "truncated.wav", original[: int(len(original) * fraction)])

    @FUZZ
    @given(content=st.binary(max_size=2000))
    def test_any_bytes(self, folder, content):
        load_or_explain(folder / "random.wav", content)


class TestFoundByFuzzing:
    """Sample rates that once crashed, or asked the resampler for gigabytes."""

    @pytest.mark.parametrize("rate", [0, 1, 3_999, 44_101, 22_222, 768_001, 4_000_000_007 % 2**32])
    def test_unusual_rates_are_refused(self, folder, rate):
        with pytest.raises(OmnideskError, match=f"unusual sample rate {rate} Hz. Convert it"):
            load_audio(write(folder / "rate.wav", wav_bytes(16_000, 2, 1, 100), rate))

    @pytest.mark.parametrize("rate", [4_000, 8_000, 11_025, 37_800, 44_100, 192_000, 768_000])
    def test_usual_rates_still_load(self, folder, rate):
        samples = load_audio(write(folder / "rate.wav", wav_bytes(16_000, 2, 1, rate // 10), rate))
        assert abs(len(samples) - INPUT_SAMPLE_RATE // 10) <= 1

    def test_a_wrong_chunk_size(self, folder):
        """Python's wave reader raises a bare RuntimeError when a chunk is longer than its parent;
        FFmpeg then gets the file, and says it cannot read it."""
        damaged = bytearray(wav_bytes(8_000, 1, 1, 1))
        damaged[17] = 1  # the fmt chunk's size: 16 + 256 bytes
        path = folder / "chunk.wav"
        path.write_bytes(bytes(damaged))
        with pytest.raises(OmnideskError, match="not a readable audio file"):
            load_audio(path)


def write(path: Path, content: bytes, rate: int) -> Path:
    path.write_bytes(content[:24] + struct.pack("<I", rate) + content[28:])
    return path
