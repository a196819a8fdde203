"""`omnidesk bench gpu` at toy shapes on the CPU: every part runs and reports, so the GPU check cannot rot."""

from __future__ import annotations

import re

import pytest

from app.bench import gpu


def test_every_part_runs_and_reports_at_the_tiny_size(tmp_path, capsys: pytest.CaptureFixture[str]):
    argv = ["--device", "cpu", "--size", "tiny", "--cache", str(tmp_path)]
    argv += ["--talker-steps", "20", "--codes", "48", "--tokens", "3", "--codes-per-token", "10"]
    argv += ["--call-seconds", "2"]
    assert gpu.main(argv) == 0
    report = capsys.readouterr().out
    print(report)
    assert re.search(r"tiny layout, eager: \d+\.\d codes/s", report)
    for precision in ("float32", "float16", "bfloat16"):
        assert re.search(rf"{precision}: first chunk \d+ ms after its last code; RTF \d+\.\d+", report)
    turn = re.search(
        r"on the CPU .*\n.*first audio (\d+) ms = prompt (\d+) \+ first code (\d+) \+ DiT window (\d+) "
        r"\+ vocoder (\d+)",
        report,
    )
    assert turn, "the turn's first audio and its parts"
    assert "Token2Wav's window graph captured at load in 0 ms (0: windows run eagerly)" in report
    first, *parts = (int(v) for v in turn.groups())
    assert abs(first - sum(parts)) <= 2  # each part rounded to a millisecond
    session = re.findall(
        r"^  (load|reload after Speech quality: Exact): ready in [\d.]+ s \((\w+) speech, "
        r".*captured in 0 ms.*first audio made ([\d.]+) s, heard ([\d.]+) s after the question; "
        r"memory in use ([\d.]+) GiB resident loaded, ([\d.]+) GiB resident after closing",
        report,
        re.M,
    )
    assert [(s[0], s[1]) for s in session] == [
        ("load", "fast"),
        ("reload after Speech quality: Exact", "exact"),
    ]
    for _, _, made, heard, _, _ in session:
        assert 0 < float(made) <= float(heard)  # the speakers start once the chunk is there, not before
    call = re.search(
        r"^  a call of 2 s \(.*\), then the question: call: first audio [\d.]+ s after the question, "
        r"prefill [\d.]+ s behind real time, context (\d+) tokens$",
        report,
        re.M,
    )
    assert call and int(call.group(1)) > 2.9 * 25, "the call's question, its sound and frames, in the prompt"
    goals = re.findall(
        r"^  (first audio|Talker codes/s|Token2Wav RTF|call's prefill).* (<=|>=) [\d.]+  (met|NOT met)$",
        report,
        re.M,
    )
    assert [g[0] for g in goals] == [
        "first audio",
        "Talker codes/s",
        "Token2Wav RTF",
        "first audio",
        "first audio",
        "call's prefill",
    ]
