"""What benchmarks measure besides time: peak memory, and waiting for the device.

Peak memory is the peak resident set above the level at entry, sampled every
5 ms from /proc/self/statm (Linux; 0 elsewhere), or on CUDA the peak that torch
allocated during the block.
"""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@contextmanager
def peak_memory(device: torch.device) -> Iterator[list[int]]:
    """Yields a one-item list that holds, on exit, the peak memory above the level at entry (bytes)."""
    result = [0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        result[0] = torch.cuda.max_memory_allocated(device) - base
        return
    base = rss()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        result[0] = max(peak[0], rss()) - base


def rss() -> int:
    statm = Path("/proc/self/statm")
    if not statm.exists():
        return 0
    import resource

    return int(statm.read_text().split()[1]) * resource.getpagesize()


def peak_rss() -> int:
    """This process's peak resident set in bytes, loading included (macOS reports bytes, Linux KiB)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def median_seconds(
    run: Callable[[], object], repeats: int, device: torch.device, warm_up: bool = True
) -> float:
    """Median wall-clock seconds of `repeats` calls, the device synchronised around each; after one
    untimed call unless the caller has just made one (`warm_up=False`)."""
    if warm_up:
        run()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def in_own_process(run: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """`run(*args)` in a fresh process, so that each side's memory, peak RSS and warm caches are its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(run, *args).result()
