"""model/memory_reuse.py: a thread's freed tensors are reused, not faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

# As a speech stage does: a thread of its own makes a chain of intermediates of a few MiB, growing and
# then shrinking (a vocoder's stages), and drops them, round after round; prints the page faults of
# 10 rounds after 6 untimed ones (with the settings, the heap settles at its size within the first 4).
ROUNDS = """
import resource, sys, threading
import torch
from model.memory_reuse import keep_freed_memory
if sys.argv[1] == "keep" and not keep_freed_memory():
    sys.exit("the settings were not taken")
def rounds(n):
    for _ in range(n):
        x = torch.ones(1 << 18)
        for mib in (2, 4, 8, 16, 12, 6, 3):
            x = torch.ones(mib << 18)
        del x
def work():
    rounds(6)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rounds(10)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
thread = threading.Thread(target=work)
thread.start()
thread.join()
"""
PAGES = 10 * (1 + 2 + 4 + 8 + 16 + 12 + 6 + 3) * (1 << 20) // 4096  # what the 10 rounds allocate


def _faults(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_threads_freed_tensors_are_reused_not_faulted_in_again():
    default, kept = _faults("default"), _faults("keep")
    print(f"page faults in 10 rounds: {default} by default, {kept} kept (of {PAGES} pages allocated)")
    assert default > PAGES / 4  # glibc's defaults give much of it back to the kernel and fault it in again
    assert kept < PAGES / 100
