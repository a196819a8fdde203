"""`omnidesk bench call` at toy shapes: a short call, then the question, and the line scripts read."""

from __future__ import annotations

import re

from model.bench import call

LAST_LINE = (
    r"call: first audio \d+\.\d\d s after the question, prefill \d+\.\d\d s behind real time, "
    r"context \d+ tokens"
)


def test_a_short_call_then_the_question(tmp_path, capfd):
    assert call.main(["--size", "tiny", "--quant", "Q8_0", "--seconds", "5", "--cache", str(tmp_path)]) == 0
    lines = capfd.readouterr().out.strip().splitlines()
    assert re.fullmatch(LAST_LINE, lines[-1]), lines[-1]
    frames = int(re.search(r"frames taken (\d+)", lines[-2]).group(1))
    assert frames >= 3, "one a second through the 2.9 s question (on a CPU, from when it is spoken)"
    context = int(lines[-1].split("context ")[1].split()[0])
    assert context > 2.9 * 25, "the question's sound and frames are in the prompt"
