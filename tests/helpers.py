"""Small helpers shared by tests."""

from __future__ import annotations

import numpy as np


def max_abs_error(name: str, ours: np.ndarray, reference: np.ndarray) -> float:
    """Print and return the largest absolute difference (with the reference's scale for context)."""
    ours, reference = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    assert ours.shape == reference.shape, f"{name}: shape {ours.shape} != {reference.shape}"
    error = float(np.abs(ours - reference).max())
    scale = float(np.abs(reference).max())
    relative = error / max(scale, 1e-30)
    print(f"{name}: max abs error {error:.3e} (reference max |x| {scale:.3e}, relative {relative:.3e})")
    return error
