"""Audio files to the 128-bin log-mel spectrogram of Whisper-large-v3, as Qwen2.5-Omni's processor makes it.

This module knows nothing of the network: it decodes, resamples and computes features.

What the reference processor (transformers' `Qwen2_5OmniProcessor`, whose `WhisperFeatureExtractor` is
configured from the checkpoint's preprocessor config) feeds the audio tower, and what `log_mel` reproduces
for a limit of `max_samples` (the extractor's `n_samples`: `chunk_length` seconds, 300 in the released
checkpoints, see `recording_limit`):
- the waveform is truncated to `max_samples` and zero-padded to `max_samples` ("max_length" padding);
- the log-mel of the padded waveform is computed (`torch.stft`, centred with reflect padding, last frame
  dropped), its floor set to (largest value over all of it) - `DYNAMIC_RANGE`, then scaled by (x + 4) / 4;
- the attention mask keeps `ceil(n_samples / HOP_LENGTH)` frames and the model drops the rest, so the
  audio tower sees exactly `mel_frame_count(n_samples)` frames, never the silent padding.
Zero-padding only changes frames that reach past the end of the recording, so padding to
n_samples + N_FFT instead of the limit gives the same kept frames and the same largest value (padded
silence sits at the floor 1e-10 -> -10, the lowest a frame can have).

Loading: WAV (integer PCM) with the standard library; every other format (FLAC, OGG, Opus, MP3, AAC,
float WAV, and the sound track of a video: MP4, MKV, WebM, MOV...) with PyAV, whose wheels carry
FFmpeg's decoders. Decoding keeps the file's own rate; resampling is ours.

Resampling: a windowed-sinc polyphase resampler in torch (the algorithm of torchaudio's
`sinc_interp_kaiser`, with the "kaiser_best" settings of resampy/librosa: 64 zero crossings, roll-off
0.9476, Kaiser beta 14.77). Chosen because nothing suitable is installed (no scipy, soxr or torchaudio)
and it is exact to write: one conv1d with a stride, float64 filter design, passband ripple far below
what the features can see.
"""

from __future__ import annotations

import math
import wave
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.audio_rates import INPUT_SAMPLE_RATE
from model.errors import OmnideskError
from model.media import Audio

N_FFT = 400  # samples: the 25 ms analysis window
HOP_LENGTH = 160  # samples: 10 ms between frames
FRAMES_PER_SECOND = INPUT_SAMPLE_RATE // HOP_LENGTH  # 100 mel frames per second
N_MELS = 128  # Whisper-large-v3's mel bins
N_FREQS = N_FFT // 2 + 1  # 201 STFT bins, 0 .. INPUT_SAMPLE_RATE / 2
MEL_FMIN, MEL_FMAX = 0.0, INPUT_SAMPLE_RATE / 2  # Hz, range of the mel filters
# The reference processor truncates (and pads) every recording to its extractor's chunk_length: 300 s in
# the released checkpoints' preprocessor_config.json; WhisperFeatureExtractor's own default is 30 s.
RELEASED_MAX_SECONDS = 300
WHISPER_CHUNK_SECONDS = 30
RELEASED_MAX_SAMPLES = RELEASED_MAX_SECONDS * INPUT_SAMPLE_RATE
LOG_FLOOR = 1e-10  # mel power floor before log10
DYNAMIC_RANGE = 8.0  # log10 units (80 dB) kept below the loudest value
# The audio tower makes its first embedding from 3 mel frames (a stride-2 convolution, then pairs of
# frames averaged: audio_encoder.audio_token_count); fewer give none, and no prompt can hold that.
MIN_MEL_FRAMES = 3
MIN_SAMPLES = (MIN_MEL_FRAMES - 1) * HOP_LENGTH + 1  # 321 samples: 20 ms
# Recorded sound spans -1..1 (a little beyond after processing). Far louder is damage or a wrong
# scale (integer PCM stored as floats reaches 32767); from about 1e17 the float32 power spectrum
# overflows and the Thinker is fed NaN.
MAX_PEAK = 100.0

# Resampler: "kaiser_best" (resampy / librosa / torchaudio's documented equivalent).
RESAMPLE_ZERO_CROSSINGS = 64
RESAMPLE_ROLLOFF = 0.9475937167399596
RESAMPLE_KAISER_BETA = 14.769656459379492
# A file's rate reduced against INPUT_SAMPLE_RATE to up/down sets the filter's size (up phases of more than
# `down` taps): an odd rate such as 44101 Hz would need gigabytes, so such rates are refused.
MAX_RESAMPLE_RATIO_TERMS = 1 << 20  # up * down; 11025 Hz, the largest common case, needs 640 * 441
MIN_INPUT_RATE = 4_000  # Hz: lower rates hold no speech, and resampling would multiply their length
MAX_INPUT_RATE = 768_000  # Hz, the highest rate audio interfaces record at

# Decoding stops here whatever the file's length, so that its memory is bounded: twice what the
# released models hear (RELEASED_MAX_SECONDS), and at most 230 MB of float32 samples (10 minutes of
# 48 kHz stereo) however many channels or however high a rate the file has.
MAX_DECODED_SECONDS = 2 * RELEASED_MAX_SECONDS
MAX_DECODED_VALUES = MAX_DECODED_SECONDS * 48_000 * 2
_WAV_SUFFIXES = frozenset({".wav", ".wave"})


@dataclass(frozen=True, eq=False)
class Sound:
    """A file's sound as decoded: `samples` (channels, n) float32 in [-1, 1] at `rate` Hz, at most its
    first `decoded_frames(rate, channels)` frames; `frames`, the whole track's."""

    samples: np.ndarray
    rate: int
    frames: int

    @property
    def whole(self) -> bool:
        return self.samples.shape[1] >= self.frames

    @property
    def seconds(self) -> float:
        return self.frames / self.rate


def decoded_frames(rate: int, channels: int) -> int:
    """The most frames of a track at `rate` Hz with `channels` channels that are decoded."""
    return min(MAX_DECODED_SECONDS * rate, MAX_DECODED_VALUES // max(channels, 1))


# What FFmpeg (through PyAV) decodes: audio files, and the sound track of video files.
AUDIO_SUFFIXES = _WAV_SUFFIXES | {
    ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".wma",
    ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64",
}  # fmt: skip
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".mpg", ".mpeg", ".wmv"})


def recording_limit(preprocessor: Mapping[str, Any] | None) -> int:
    """The samples (at INPUT_SAMPLE_RATE) of a recording that the reference hears, from the checkpoint's
    preprocessor config: its extractor's n_samples, `chunk_length` seconds (WHISPER_CHUNK_SECONDS where the
    config omits it, as WhisperFeatureExtractor does). Without a config (bundles made before it was kept,
    all from released checkpoints) RELEASED_MAX_SECONDS, what every released checkpoint says."""
    if preprocessor is None:
        return RELEASED_MAX_SAMPLES
    seconds = preprocessor.get("chunk_length", WHISPER_CHUNK_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds < 1e6:
        raise OmnideskError(
            f"the model bundle's preprocessor config has chunk_length {seconds!r}, not a number of seconds. "
            "Build the bundle again (omnidesk models convert) from the original checkpoint"
        )
    return int(seconds * INPUT_SAMPLE_RATE)


def mel_frame_count(n_samples: int, max_samples: int = RELEASED_MAX_SAMPLES) -> int:
    """Mel frames the reference feeds the audio tower for a recording of `n_samples` at INPUT_SAMPLE_RATE,
    when it hears at most `max_samples` of it."""
    return math.ceil(min(n_samples, max_samples) / HOP_LENGTH)


def load_recording(path: Path | str) -> Audio:
    """An audio file (or a video's sound) as the model hears it: mono at INPUT_SAMPLE_RATE, at most its
    first MAX_DECODED_SECONDS; a longer recording's Audio says how long it is."""
    path = Path(path)
    return recording(decode_audio(path), path)


def load_audio(path: Path | str) -> np.ndarray:
    """Decode an audio file, mix it to mono, resample it: float32 samples (n,) at INPUT_SAMPLE_RATE,
    in [-1, 1] (at most its first MAX_DECODED_SECONDS)."""
    return load_recording(path).samples


def recording(sound: Sound, path: Path) -> Audio:
    """Decoded sound mixed to mono and resampled to INPUT_SAMPLE_RATE, with the whole track's length
    where only its start was decoded."""
    samples = resample_to_model_rate(sound.samples, sound.rate, path)
    return Audio(samples, None if sound.whole else sound.seconds)


def resample_to_model_rate(samples: np.ndarray, rate: int, path: Path) -> np.ndarray:
    """Decoded samples (channels, n) at `rate` mixed to mono and resampled: (n',) at INPUT_SAMPLE_RATE."""
    if samples.shape[1] == 0:
        raise OmnideskError(f"{path}: the recording is empty (no samples). Record or choose another file.")
    check_rate(rate, path)
    mono = torch.from_numpy(samples.mean(axis=0, dtype=np.float32))
    resampled = resample(mono, rate, INPUT_SAMPLE_RATE).numpy()
    check_recording(resampled, path)
    return resampled


def check_rate(rate: int, path: Path) -> None:
    """OmnideskError unless `rate` (Hz) is one a recording can have and the resampler can take."""
    gcd = math.gcd(rate, INPUT_SAMPLE_RATE)
    if (
        not MIN_INPUT_RATE <= rate <= MAX_INPUT_RATE
        or (rate // gcd) * (INPUT_SAMPLE_RATE // gcd) > MAX_RESAMPLE_RATIO_TERMS
    ):
        raise OmnideskError(
            f"{path}: unusual sample rate {rate} Hz. Convert it to a common rate (16, 44.1 or 48 kHz)."
        )


def check_recording(samples: np.ndarray, path: Path | None = None) -> None:
    """OmnideskError (naming `path`, when given) unless the audio tower can hear `samples` (n,) at
    INPUT_SAMPLE_RATE: some sound, finite, within MAX_PEAK, at least MIN_SAMPLES long."""
    where = f"{path}: " if path is not None else ""
    if len(samples) == 0:
        raise OmnideskError(f"{where}the recording is empty: record something, or choose another file.")
    if not np.isfinite(samples).all():
        raise OmnideskError(
            f"{where}the recording holds samples that are not numbers (NaN or infinite): "
            "the file is damaged; export it again."
        )
    peak = float(np.abs(samples).max())
    if peak > MAX_PEAK:
        raise OmnideskError(
            f"{where}the samples reach {peak:.3g}, far beyond the -1..1 of recorded sound: the file is "
            "damaged or wrongly scaled; export it again (16-bit PCM WAV, for example)."
        )
    if len(samples) < MIN_SAMPLES:
        raise OmnideskError(
            f"{where}the recording is too short ({1000 * len(samples) / INPUT_SAMPLE_RATE:.0f} ms): "
            f"at least {1000 * MIN_SAMPLES / INPUT_SAMPLE_RATE:.0f} ms of sound can be heard; record longer."
        )


def decode_audio(path: Path) -> Sound:
    """The file's sound, at most its first MAX_DECODED_SECONDS."""
    if not path.is_file():
        raise OmnideskError(f"{path}: audio file not found.")
    if path.stat().st_size == 0:
        raise OmnideskError(f"{path}: the audio file is empty (0 bytes). Choose another file.")
    suffix = path.suffix.lower()
    if suffix not in AUDIO_SUFFIXES | VIDEO_SUFFIXES:
        raise OmnideskError(
            f"{path}: unsupported audio format {suffix or '(no extension)'}. "
            "Use WAV, FLAC, OGG, MP3 or M4A, or a video with sound."
        )
    if suffix in _WAV_SUFFIXES:
        try:
            return _decode_pcm_wav(path)
        except (wave.Error, EOFError, ValueError, RuntimeError):  # float WAV, or damage: FFmpeg decides
            pass
    return decode_with_ffmpeg(path)


def _decode_pcm_wav(path: Path) -> Sound:
    with wave.open(str(path), "rb") as f:
        channels, width, rate, n = f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()
        check_rate(rate, path)  # before the rate sizes anything
        limit = decoded_frames(rate, channels)
        raw = f.readframes(min(n, limit))
    if width == 1:  # unsigned 8-bit
        ints = np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0
    elif width == 3:  # little-endian 24-bit: widen to 32-bit by putting the bytes in the top three
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        wide = b[:, 0].astype(np.int32) << 8 | b[:, 1].astype(np.int32) << 16 | b[:, 2].astype(np.int32) << 24
        ints = wide.astype(np.float32) / 256.0
    elif width in (2, 4):
        ints = np.frombuffer(raw, np.dtype(f"<i{width}")).astype(np.float32)
    else:
        raise ValueError(f"{8 * width}-bit samples")
    full_scale = float(2 ** (8 * width - 1))
    usable = len(ints) // channels * channels
    samples = (ints[:usable] / full_scale).reshape(-1, channels).T.copy()
    # Past the limit the header's count is the track's length; short of it, the file held no more
    # than was read (a header may promise frames a cut-off file does not hold).
    return Sound(samples, rate, n if samples.shape[1] >= limit else samples.shape[1])


def decode_with_ffmpeg(path: Path) -> Sound:
    """The first sound track of any file FFmpeg reads, at most its first MAX_DECODED_SECONDS. Past
    that the track is only measured: by the container's duration where it states one, else by
    decoding on without keeping the samples."""
    import av

    pieces: list[np.ndarray] = []
    kept = total = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise OmnideskError(f"{path}: the file has no sound track.")
            stream = container.streams.audio[0]
            # No codec context (or no rate) when FFmpeg has no decoder for the track.
            rate = stream.rate if stream.codec_context is not None else 0
            if not rate:
                raise OmnideskError(f"{path}: not a readable audio file (an unknown sound format).")
            check_rate(rate, path)
            to_float = av.AudioResampler(format="fltp")  # the same layout and rate, as float planes
            for frame in _float_frames(container, stream, to_float):
                samples = frame.to_ndarray()
                room = decoded_frames(rate, samples.shape[0]) - kept
                if room <= 0 and container.duration is not None:
                    total = max(total, round(container.duration / av.time_base * rate))
                    break
                total += samples.shape[1]
                if room > 0:
                    pieces.append(samples[:, :room])
                    kept += pieces[-1].shape[1]
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise OmnideskError(f"{path}: not a readable audio file ({exc}).") from None
    if not pieces:
        raise OmnideskError(f"{path}: not a readable audio file (no sound could be decoded).")
    return Sound(np.concatenate(pieces, axis=1).astype(np.float32, copy=False), rate, total)


def _float_frames(container: Any, stream: Any, to_float: Any) -> Iterator[Any]:
    """The track's frames as float planes, one at a time, the resampler's remainder last."""
    for packet in container.demux(stream):
        for frame in stream.decode(packet):
            yield from to_float.resample(frame)
    yield from to_float.resample(None)


def resample(audio: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Windowed-sinc polyphase resampling of audio (..., n) -> (..., ceil(n * new_rate / orig_rate))."""
    if orig_rate == new_rate:
        return audio
    gcd = math.gcd(orig_rate, new_rate)
    up, down = new_rate // gcd, orig_rate // gcd
    kernel, width = _sinc_kernel(down, up)
    shape = audio.shape
    flat = audio.reshape(-1, 1, shape[-1])
    padded = torch.nn.functional.pad(flat, (width, width + down))
    out = torch.nn.functional.conv1d(padded, kernel.to(audio.dtype), stride=down)  # (b, up, frames)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    target = math.ceil(up * shape[-1] / down)
    return out[:, :target].reshape(*shape[:-1], target)


def _sinc_kernel(down: int, up: int) -> tuple[torch.Tensor, int]:
    """Kaiser-windowed sinc filters, one per output phase: ((up, 1, 2 * width + down), width)."""
    cutoff = min(down, up) * RESAMPLE_ROLLOFF  # in units of the reduced rates
    width = math.ceil(RESAMPLE_ZERO_CROSSINGS * down / cutoff)
    taps = torch.arange(-width, width + down, dtype=torch.float64)[None, :] / down
    t = (torch.arange(0, -up, -1, dtype=torch.float64)[:, None] / up + taps) * cutoff
    t = t.clamp(-RESAMPLE_ZERO_CROSSINGS, RESAMPLE_ZERO_CROSSINGS)
    beta = torch.tensor(RESAMPLE_KAISER_BETA, dtype=torch.float64)
    window = torch.i0(beta * torch.sqrt(1 - (t / RESAMPLE_ZERO_CROSSINGS) ** 2)) / torch.i0(beta)
    kernel = torch.special.sinc(t) * window * (cutoff / down)
    return kernel[:, None, :].float(), width


def mel_filters(n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular filters (N_FREQS, n_mels), float64, as transformers'."""
    mels = np.linspace(_hz_to_mel(MEL_FMIN), _hz_to_mel(MEL_FMAX), n_mels + 2)
    edges = _mel_to_hz(mels)  # (n_mels + 2,) Hz
    fft_freqs = np.linspace(0, INPUT_SAMPLE_RATE // 2, N_FREQS)
    slopes = edges[None, :] - fft_freqs[:, None]
    spacing = np.diff(edges)
    down, up = -slopes[:, :-2] / spacing[:-1], slopes[:, 2:] / spacing[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]


_SLANEY_HZ_PER_MEL = 200.0 / 3  # linear below 1 kHz
_SLANEY_LOG_HZ = 1000.0
_SLANEY_LOG_MEL = _SLANEY_LOG_HZ / _SLANEY_HZ_PER_MEL  # 15 mel
_SLANEY_LOG_STEP = math.log(6.4) / 27.0  # natural-log Hz per mel above 1 kHz


def _hz_to_mel(hz: float) -> float:
    if hz < _SLANEY_LOG_HZ:
        return hz / _SLANEY_HZ_PER_MEL
    return _SLANEY_LOG_MEL + math.log(hz / _SLANEY_LOG_HZ) / _SLANEY_LOG_STEP


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    linear = _SLANEY_HZ_PER_MEL * mels
    logarithmic = _SLANEY_LOG_HZ * np.exp(_SLANEY_LOG_STEP * (mels - _SLANEY_LOG_MEL))
    return np.where(mels >= _SLANEY_LOG_MEL, logarithmic, linear)


def log_mel(
    audio: np.ndarray | torch.Tensor, n_mels: int = N_MELS, max_samples: int = RELEASED_MAX_SAMPLES
) -> torch.Tensor:
    """The reference's features of a 16 kHz recording (n,), of which it hears at most `max_samples`:
    mel (n_mels, mel_frame_count(n, max_samples)) float32."""
    samples = torch.as_tensor(audio, dtype=torch.float32).flatten()[:max_samples]
    if samples.numel() == 0:
        raise OmnideskError("The recording is empty (zero length): nothing to hear.")
    n_frames = mel_frame_count(samples.numel(), max_samples)
    padded = torch.nn.functional.pad(samples, (0, min(N_FFT, max_samples - samples.numel())))
    power = _power_spectrum(padded)
    if padded.numel() == max_samples:
        power = power[:, : max_samples // HOP_LENGTH]  # the reference drops the frame past the limit
    mel = torch.from_numpy(mel_filters(n_mels)).float().T @ power
    log_spec = torch.clamp(mel, min=LOG_FLOOR).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - DYNAMIC_RANGE)
    return ((log_spec + 4.0) / 4.0)[:, :n_frames]


def _power_spectrum(samples: torch.Tensor) -> torch.Tensor:
    """|STFT|^2 of samples (n,): (N_FREQS, 1 + n // HOP_LENGTH), centred frames, reflect padding."""
    window = torch.hann_window(N_FFT)
    stft = torch.stft(samples, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    return stft.abs() ** 2
