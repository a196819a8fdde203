"""The WAV file is complete after every chunk, even if the process dies."""

from __future__ import annotations

import json
import subprocess
import sys
import wave

import numpy as np
import pytest

from model.errors import OmnideskError
from model.wav_writer import WavWriter, check_target
from tests.helpers import on_small_filesystem


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


FILL_UNTIL_REFUSED = (
    "import json, sys; import numpy as np; from pathlib import Path\n"
    "from model.errors import OmnideskError; from model.wav_writer import WavWriter\n"
    "w = WavWriter(Path(sys.argv[1]), 24000); error = ''\n"
    "for _ in range(200):\n"
    "    try:\n"
    "        w.write(np.full(2400, 0.25, np.float32))\n"
    "    except OmnideskError as exc:\n"
    "        error = str(exc); break\n"
    "w.close(); import wave; said = wave.open(sys.argv[1]).getnframes()\n"
    "print(json.dumps({'frames': w.frames, 'error': error, 'said': said,\n"
    "                  'size': Path(sys.argv[1]).stat().st_size}))\n"
)  # run where the file is (a small filesystem is only mounted for the script)


def assert_holds_what_it_says(outcome: dict, why: str) -> None:
    print(outcome)
    assert outcome["frames"] > 0 and why in outcome["error"]
    assert f"after {outcome['frames'] / 24_000:.1f} s of speech" in outcome["error"]
    assert outcome["said"] == outcome["frames"], "the header counts what was written"
    assert outcome["size"] == 44 + 2 * outcome["frames"], "and nothing lies past it"


def test_a_file_size_limit_stops_the_writing_with_one_error_and_keeps_what_was_written(tmp_path):
    """The operating system refuses more (RLIMIT_FSIZE: EFBIG), as a full disk does (ENOSPC)."""
    path = tmp_path / "limited.wav"
    limit = "import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    limit += "resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))\n"
    result = subprocess.run(
        [sys.executable, "-c", limit + FILL_UNTIL_REFUSED, str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_holds_what_it_says(json.loads(result.stdout), "File too large")


def test_a_full_disk(tmp_path):
    folder = tmp_path / "small"
    result = on_small_filesystem(folder, FILL_UNTIL_REFUSED, str(folder / "full.wav"), size_kib=64)
    assert result.returncode == 0, result.stderr
    assert_holds_what_it_says(json.loads(result.stdout), "the disk is full")


def test_a_target_that_cannot_be_written_is_named_before_any_work(tmp_path):
    with pytest.raises(OmnideskError, match="does not exist"):
        check_target(tmp_path / "missing" / "reply.wav")
    (tmp_path / "folder.wav").mkdir()
    with pytest.raises(OmnideskError, match="is a folder"):
        check_target(tmp_path / "folder.wav")
    check_target(tmp_path / "reply.wav")
    assert not (tmp_path / "reply.wav").exists(), "checking writes nothing"
