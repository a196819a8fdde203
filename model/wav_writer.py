"""A WAV file that is valid after every write: a crash keeps everything written so far.

16-bit PCM. The RIFF and data sizes in the header are rewritten after each chunk,
so the file on disk always describes exactly the samples it holds. When the disk
refuses a chunk (full, gone), the file is cut back to what its header describes and
the error says how much it holds: nothing written before is lost.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from pathlib import Path
from types import TracebackType

import numpy as np

from model.errors import OmnideskError

HEADER_BYTES = 44


def check_target(path: Path) -> None:
    """OmnideskError unless a WAV file can be written at `path`: checked before the work that fills it."""
    folder = path.parent
    if not folder.is_dir():
        raise OmnideskError(f"{path}: the folder {folder} does not exist; create it or write elsewhere")
    if path.is_dir():
        raise OmnideskError(f"{path} is a folder; give the name of a .wav file")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OmnideskError(f"{path}: no permission to write there; write elsewhere")


def pcm16(samples: np.ndarray) -> bytes:
    """Floats in [-1, 1] (clipped) as 16-bit little-endian PCM, as WAV files and audio APIs carry them."""
    pcm = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return (pcm * 32767.0).round().astype("<i2").tobytes()


def from_pcm16(data: bytes) -> np.ndarray:
    """16-bit little-endian PCM as float32 samples (n,) in [-1, 1]: `pcm16`'s inverse."""
    return np.frombuffer(data, "<i2").astype(np.float32) / 32767.0


class WavWriter:
    def __init__(self, path: Path, sample_rate: int, channels: int = 1) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames = 0
        try:
            self._file = path.open("wb", buffering=0)  # unbuffered: a failed write leaves nothing pending
            self._write_header(0)
        except OSError as exc:
            raise OmnideskError(f"{path}: cannot write the speech ({_why(exc)})") from None

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    def write(self, samples: np.ndarray) -> None:
        """samples: (n,) or (n, channels) floats in [-1, 1] (clipped). OmnideskError if the disk
        refuses them; the file then holds exactly the samples written before."""
        data = pcm16(samples)
        end = HEADER_BYTES + self.frames * 2 * self.channels
        try:
            self._file.seek(end)
            view = memoryview(data)
            while view:
                view = view[self._file.write(view) :]
            self._write_header(self.frames + len(data) // (2 * self.channels))
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._file.truncate(end)
                self._write_header(self.frames)
            raise OmnideskError(
                f"{self.path}: {_why(exc)} after {self.seconds:.1f} s of speech; the file holds those "
                f"{self.seconds:.1f} s"
            ) from None
        self.frames += len(data) // (2 * self.channels)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _write_header(self, frames: int) -> None:
        self._file.seek(0)
        if self._file.write(wav_header(frames, self.sample_rate, self.channels)) != HEADER_BYTES:
            raise OSError(errno.ENOSPC, "the header was not written whole")


def wav_header(frames: int, sample_rate: int, channels: int = 1) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV file holding `frames` frames."""
    data_bytes = frames * 2 * channels
    block = 2 * channels
    header = b"RIFF" + struct.pack("<I", HEADER_BYTES - 8 + data_bytes) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, 16)
    return header + b"data" + struct.pack("<I", data_bytes)


def _why(exc: OSError) -> str:
    return "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror or str(exc)
