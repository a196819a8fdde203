"""`omnidesk bench speakers` finds the gaps in what the speakers played, and runs on a real sound server."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from app.bench.speakers import OUTPUT_RATE, silent_runs, speech_like

LAST_LINE = re.compile(
    r"speakers: \d+ gaps \(\d+\.\d\d s in all\) and \d+ underruns in 2 s of speech, load \d+\.\d"
)


def test_speech_like_audio_is_never_silent_for_a_gap():
    assert silent_runs(speech_like(3.0), OUTPUT_RATE) == []


def test_silent_runs_inside_the_sound_are_gaps_and_the_edges_are_not():
    sound = speech_like(1.0)
    heard = np.concatenate(
        [np.zeros(OUTPUT_RATE), sound, np.zeros(2400), sound, np.zeros(240), sound, np.zeros(9)]
    )
    assert silent_runs(heard, OUTPUT_RATE) == pytest.approx([0.1], abs=2 / OUTPUT_RATE), (
        "10 ms is below GAP_S"
    )


def test_prints_the_gaps_of_speech_on_a_sound_server(sound_server):
    command = [sys.executable, "-m", "app.cli.main", "bench", "speakers", "--seconds", "2"]
    command += ["--threads", "1", "--processes", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    print(result.stdout, result.stderr)
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].startswith("CPU: ")
    assert LAST_LINE.fullmatch(result.stdout.splitlines()[-1])
