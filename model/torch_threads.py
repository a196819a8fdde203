"""torch's intra-op threads for one block of work on the calling thread."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` (None: left as they are) for the block, then restored.

    For work that runs while nothing else computes (a picture or the Talker's prompt while the user
    speaks), so that it may take every core the plan gives a prompt."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
