"""`omnidesk bench look` at toy shapes: both paths run, each in its own process, and the report ends
with the line scripts read."""

from __future__ import annotations

import re

import numpy as np

from model.bench import look

LAST_LINE = r"look: first audio \d+\.\d\d s after the question \(app plan\), \d+\.\d\d s \(today's path\)"


def test_both_paths_run_and_the_last_line_is_for_scripts(tmp_path, capfd):
    assert look.main(["--size", "tiny", "--quant", "Q8_0", "--cache", str(tmp_path)]) == 0
    lines = capfd.readouterr().out.strip().splitlines()
    assert re.fullmatch(LAST_LINE, lines[-1]), lines[-1]
    app = next(line for line in lines if line.strip().startswith("app plan "))
    today = next(line for line in lines if line.strip().startswith("today's path "))
    assert float(app.split()[2]) > 0, "the app plan encodes the picture while the question is spoken"
    assert float(today.split()[2]) == 0, "today's path encodes nothing before the release"


def test_the_screen_is_drawn_not_noise():
    screen = look.screenshot_like(1080, 1920)
    assert screen.shape == (1080, 1920, 3) and screen.dtype == np.uint8
    flat = np.mean(np.all(screen[:, 1:] == screen[:, :-1], axis=2))
    assert flat > 0.8, "mostly flat regions, as a screen (noise has almost none)"
    assert len(np.unique(screen.reshape(-1, 3), axis=0)) > 50, "text and shapes in several colours"
