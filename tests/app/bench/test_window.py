"""`omnidesk bench window` runs on the tiny bundle and ends with the line scripts read."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from model.files.bundle import Bundle

LAST_LINE = re.compile(r"window: the event loop stalled at most \d+ ms \(p99 \d+ ms\) over 1 spoken turns")


def test_prints_the_stalls_of_a_spoken_turn(tiny_bundle: Bundle):
    environ = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli.main",
            "bench",
            "window",
            "--models",
            str(tiny_bundle.root),
            "--turns",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
    )
    print(result.stdout, result.stderr)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("loading: worst ") and lines[1].startswith("turn 1 (")
    assert LAST_LINE.fullmatch(lines[-1])
