"""A GPU that runs out of memory during a turn: which stage it was, told apart from a bug.

`Conversation` moves that stage to the CPU for the next turns (`Plan.without_gpu`); the turn in
progress ends with a message that says so. No threads here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from model.errors import OmnideskError


class StageOutOfMemory(OmnideskError):
    """`stage` ("talker", "token2wav", "audio_encoder", ...) ran out of GPU memory."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"the GPU ran out of memory in the {stage}")
        self.stage = stage


def out_of_gpu_memory(exc: BaseException) -> bool:
    """A CUDA or MPS allocation that failed: torch.OutOfMemoryError (CUDA, and MPS on recent torch),
    or the RuntimeError that older torch raises for MPS."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "MPS backend out of memory" in str(exc)


@contextmanager
def gpu_stage(stage: str) -> Iterator[None]:
    """Inside, a GPU out-of-memory error is raised again as StageOutOfMemory(stage)."""
    try:
        yield
    except RuntimeError as exc:
        if not out_of_gpu_memory(exc):
            raise
        raise StageOutOfMemory(stage) from None


def release_cached_gpu_memory() -> None:
    """Give what torch's allocator keeps cached back to the GPU (for llama.cpp and the other stages)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        torch.mps.empty_cache()
