"""`NativeVisionEncoder`: the vision tower run by torch, behind the same interface as mtmd's.

Pixels are normalized and cut into patches as the reference's processor does (rescaled to 0..1,
OpenAI CLIP's mean and std, an image repeated as the two frames of one temporal patch, patches in
merged-block order), then `VisionTower` runs in the precision the plan chose: float32 (the
reference's), bfloat16 (where the CPU or GPU computes it natively), or int8 weights (weight-only,
one scale per output row; bfloat16 activations on the CPU's int8 kernel). Each one's error against
the reference tower is measured by `omnidesk bench vision` and written down in docs/performance.md.

Threads: `encode` blocks on the caller's thread while torch computes on its intra-op threads
(`VisionOptions.n_threads` of them for the call: the pool is the process's, so the speech stages
share that count while a picture is encoded); one call at a time per encoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.files.mmproj_gguf import IMAGE_MEAN, IMAGE_STD
from model.files.thinker_gguf import check_mmproj_gguf
from model.talker.quantize import quantize
from model.torch_threads import intra_op_threads
from model.vision import (
    MERGE_SIZE,
    PATCH_SIZE,
    TEMPORAL_PATCH,
    FrameEncoder,
    TowerPrecision,
    VisionOptions,
    check_bounds,
)
from model.vision_tower.network import VisionTower
from model.vision_tower.weights import vision_tower_from_mmproj

_MEAN = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGE_STD).view(3, 1, 1)


class NativeVisionEncoder(FrameEncoder):
    """The mmproj's vision tower in torch."""

    def __init__(
        self,
        mmproj: Path,
        n_embd: int,
        options: VisionOptions = VisionOptions(),
    ) -> None:
        """Runs the tower in `options.tower`'s precision (float32 on the CPU when it names none)."""
        check_mmproj_gguf(mmproj, width=n_embd)
        check_bounds(options)
        precision = options.tower or TowerPrecision()
        self.options, self.n_embd, self.precision = options, n_embd, precision
        tower: VisionTower = vision_tower_from_mmproj(mmproj)
        if precision.weights == "int8":
            quantize(tower, "int8")
        self.tower = tower.to(precision.device, precision.dtype if precision.weights == "float" else None)

    def _encode_pixels(self, frames: list[np.ndarray], rows: int, cols: int) -> np.ndarray:
        patches = patchify(frames).to(self.precision.device, self.precision.dtype)
        with torch.inference_mode(), intra_op_threads(self.options.n_threads):
            out = self.tower(patches, rows * MERGE_SIZE, cols * MERGE_SIZE)
        return out.float().cpu().numpy()


def patchify(frames: list[np.ndarray]) -> torch.Tensor:
    """One image or a temporal pair of frames, each (h, w, 3) uint8 with h, w multiples of 28, as the
    reference processor's `pixel_values`: (h/14 * w/14, 3 * 2 * 14 * 14) float32, in merged-block
    order (the four patches of each 2x2 block together, blocks in raster order)."""
    if len(frames) == 1:
        frames = frames * TEMPORAL_PATCH  # an image is two identical frames
    pixels = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0  # (2, 3, h, w)
    pixels = (pixels - _MEAN) / _STD
    _, channels, height, width = pixels.shape
    rows, cols, p, m = height // PATCH_SIZE, width // PATCH_SIZE, PATCH_SIZE, MERGE_SIZE
    grid = pixels.reshape(TEMPORAL_PATCH, channels, rows // m, m, p, cols // m, m, p)
    # -> (rows / 2, cols / 2, 2, 2, channels, frames, 14, 14)
    return grid.permute(2, 5, 3, 6, 1, 0, 4, 7).reshape(rows * cols, -1)
