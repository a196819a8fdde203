"""`omnidesk bench pipeline` end to end on the tiny bundle: both sides run and keep the forced lengths."""

from __future__ import annotations

import re

import pytest

from model.bench import pipeline
from model.files.bundle import Bundle


def test_both_sides_run_the_forced_turns_and_the_report_compares_them(
    tiny_bundle: Bundle, capsys: pytest.CaptureFixture[str]
):
    argv = [
        "--tokens",
        "3,6",
        "--codes-per-token",
        "10",
        "--voice",
        "Ethan",
        "--plans",
        "exact",
        "--reference",
    ]
    assert pipeline.main(["--models", str(tiny_bundle.root), *argv]) == 0
    report = capsys.readouterr().out
    print(report)
    rows = re.findall(r"^\s*(\d+) t\s+(\d+) c .* (\d+\.\d)x$", report, re.MULTILINE)
    assert [(int(t), int(c)) for t, c, _ in rows] == [(3, 30), (6, 60)]
    assert all(float(ratio) > 0 for *_, ratio in rows)
    assert re.search(r"time to first audio: ours [+-]\d+\.\d\d s, the reference [+-]\d+\.\d s", report)
    assert re.search(r"peak RSS: ours \d+\.\d GiB, the reference \d+\.\d GiB", report)


def test_the_quick_plan_is_the_apps_with_its_first_sound_after_12_codes(
    tiny_bundle: Bundle, capfd: pytest.CaptureFixture[str]
):
    """Each plan runs in a process of its own, which writes to the file descriptor."""
    argv = [
        "--models",
        str(tiny_bundle.root),
        "--tokens",
        "3",
        "--codes-per-token",
        "10",
        "--plans",
        "app,quick",
    ]
    assert pipeline.main(argv) == 0
    report = capfd.readouterr().out
    print(report)
    firsts = re.findall(r"^  (\w+) plan: .*first sound after (\d+) codes", report, re.MULTILINE)
    assert [codes for _, codes in firsts] == ["24", "12"]  # this CPU's app plan is Fast
