"""A WAV file that is valid after every write: a crash keeps everything written so far.

16-bit PCM. The RIFF and data sizes in the header are rewritten after each chunk,
so the file on disk always describes exactly the samples it holds.
"""

from __future__ import annotations

import struct
from pathlib import Path
from types import TracebackType

import numpy as np

HEADER_BYTES = 44


class WavWriter:
    def __init__(self, path: Path, sample_rate: int, channels: int = 1) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames = 0
        self._file = path.open("wb")
        self._write_header()

    def write(self, samples: np.ndarray) -> None:
        """samples: (n,) or (n, channels) floats in [-1, 1] (clipped)."""
        pcm = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
        data = (pcm * 32767.0).round().astype("<i2").tobytes()
        self._file.seek(0, 2)
        self._file.write(data)
        self.frames += len(data) // (2 * self.channels)
        self._write_header()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _write_header(self) -> None:
        data_bytes = self.frames * 2 * self.channels
        block = 2 * self.channels
        header = b"RIFF" + struct.pack("<I", HEADER_BYTES - 8 + data_bytes) + b"WAVE"
        header += b"fmt " + struct.pack(
            "<IHHIIHH", 16, 1, self.channels, self.sample_rate, self.sample_rate * block, block, 16
        )
        header += b"data" + struct.pack("<I", data_bytes)
        self._file.seek(0)
        self._file.write(header)
        self._file.flush()
