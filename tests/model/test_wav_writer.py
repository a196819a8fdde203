"""The WAV file is complete after every chunk, even if the process dies."""

from __future__ import annotations

import subprocess
import sys
import wave

import numpy as np

from model.wav_writer import WavWriter


def test_chunks_join_into_a_valid_file(tmp_path):
    path = tmp_path / "reply.wav"
    tone = np.sin(np.arange(24_000) * 2 * np.pi * 440 / 24_000).astype(np.float32) * 0.5
    with WavWriter(path, 24_000) as writer:
        for chunk in np.array_split(tone, 7):
            writer.write(chunk)
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (24_000, 1, 2)
        read = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2") / 32767.0
    assert np.abs(read - tone).max() < 1 / 32767


def test_a_killed_writer_leaves_what_it_wrote(tmp_path):
    path = tmp_path / "partial.wav"
    script = (
        "import os, sys, numpy as np; from pathlib import Path; from model.wav_writer import WavWriter\n"
        "w = WavWriter(Path(sys.argv[1]), 24000)\n"
        "w.write(np.full(4800, 0.25, np.float32)); w.write(np.full(2400, -0.25, np.float32))\n"
        "os._exit(9)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=False, timeout=60)
    with wave.open(str(path)) as wav:
        assert wav.getnframes() == 7200
