"""float16's range on GPUs without bfloat16 (CUDA cards before Ampere, Apple's MPS).

float16 ends at ±65504. A residual stream that grows past it (a few channels of a transformer's
hidden state carry values in the thousands) becomes inf, the next norm makes it NaN, and the NaN
reaches the logits. `within_float16` holds a float16 residual at the range's edge instead, as
transformers' T5 does: values up to 1000 short of the edge are untouched, and other dtypes pass
through. The
Talker's and the DiT's blocks apply it to their residual sums. Logits that are still not finite
(`check_finite`) are said to be float16's doing, not a damaged file's.
"""

from __future__ import annotations

import torch

from model.errors import OmnideskError

FLOAT16_EDGE = torch.finfo(torch.float16).max - 1000  # room for the next small addition


def within_float16(h: torch.Tensor) -> torch.Tensor:
    """h, any shape: unchanged unless float16, where it is clamped to ±FLOAT16_EDGE (inf included)."""
    if h.dtype != torch.float16:
        return h
    return h.clamp(-FLOAT16_EDGE, FLOAT16_EDGE)


def check_finite(logits: torch.Tensor, stage: str, dtype: torch.dtype) -> None:
    """Raise an OmnideskError that says what to do when a float16 `stage`'s `logits` (any shape) hold
    inf or NaN; in other dtypes nothing is checked (a NaN there is a bug or a damaged file)."""
    if dtype == torch.float16 and not bool(torch.isfinite(logits).all()):
        raise OmnideskError(
            f"{stage} overflowed float16 on this GPU (it has no bfloat16): set speech to run on the CPU "
            "(Settings, or --speech-device cpu)"
        )
