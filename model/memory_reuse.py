"""Freed memory kept in the process for the next tensor (glibc's malloc, on Linux).

torch on a CPU allocates each intermediate tensor afresh, and speech makes many large ones: one
vocoder call on a later chunk's 336 frames makes hundreds of 1 to 16 MB. glibc's defaults hand
blocks that large back to the kernel on free (mmap above a threshold, a trimmed heap top, and
a thread's whole heap once it empties), so every new tensor's pages are faulted in and zeroed
again. On 2 Zen 4 cores such a call took 4.5 s with 1.5 million page faults, and 2.75 s with
these settings; in a whole turn, where one stage's faults overlap another's work, the gain is a
few percent (docs/performance.md).

`keep_freed_memory` sets glibc to serve blocks up to 32 MiB (the most it allows) from its heaps,
to give back only a free heap top above 256 MiB, and to keep one arena for every thread (the
speech stages' threads then reuse one heap instead of growing and dropping their own). The
resident memory stays near the largest working set speech has had, a few hundred MiB at most.
Elsewhere (macOS, Windows, other C libraries) it leaves the allocator as it is.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys

log = logging.getLogger(__name__)

# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
MMAP_THRESHOLD = 32 << 20  # glibc's limit: HEAP_MAX_SIZE / 2 on a 64-bit machine
TRIM_THRESHOLD = 256 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory for reuse, once per process. Returns whether it did
    (False: not glibc, or glibc refused a setting)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl's mallopt does nothing
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, 1))
    refused = [option for option, value in settings if libc.mallopt(option, value) != 1]
    if refused:
        log.warning("glibc refused the malloc settings %s; speech allocates memory afresh", refused)
    return not refused
