"""The native vision tower on the tiny checkpoint's mmproj, against transformers' `visual`, in each
precision the plan may pick; and its weights read from float16 and Q8_0 mmproj files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.files.mmproj_gguf import VISION_PREFIX, write_vision_gguf
from model.media import Image, Video
from model.vision import TowerPrecision, VisionEncoder, VisionOptions
from model.vision_tower import NativeVisionEncoder
from model.vision_tower.encoder import patchify
from model.vision_tower.network import window_order
from tests.helpers import photo_like
from tests.model.test_vision import reference_embeddings, reference_processor

# Relative to the output's largest magnitude. float32 is the reference's own arithmetic (only the
# order of sums differs); bfloat16 keeps 8 bits of mantissa, int8 weights 7 bits per row (with
# bfloat16 activations); float16 and Q8_0 files round the weights once.
TOLERANCE = {"float32": 1e-5, "bfloat16": 5e-2, "int8": 5e-2, "f16": 2e-3, "q8_0": 2e-2}
SIZES = [(112, 168), (300, 451), (57, 1000), (1, 1)]


def relative_error(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    scale = float(np.abs(ref).max())
    return float(np.abs(ours - ref).max()) / scale, scale


@pytest.fixture(scope="module")
def native(tiny_bundle, thinker) -> NativeVisionEncoder:
    return NativeVisionEncoder(tiny_bundle.file("mmproj"), thinker.n_embd)


@pytest.mark.parametrize(
    ("height", "width"), SIZES, ids=["multiple-of-28", "photo-size", "wide", "one-pixel"]
)
def test_float32_matches_the_reference(native, reference_model, height, width):
    pixels = photo_like(height, width, seed=height + width)
    ours = native.encode(Image(pixels))
    ref, grid = reference_embeddings(reference_model, pixels)
    assert [ours.grid.t, ours.grid.h, ours.grid.w] == grid
    error, scale = relative_error(ours.embeddings, ref)
    print(f"\n{width}x{height}: {ref.shape[0]} embeddings, max |ref| {scale:.3f}, relative error {error:.2e}")
    assert scale > 0.3, "the tiny ViT's output must be of meaningful size"
    assert error <= TOLERANCE["float32"]


@pytest.mark.parametrize("variant", ["bfloat16", "int8"])
def test_faster_precisions_stay_within_their_bound(tiny_bundle, thinker, reference_model, variant):
    precision = (
        TowerPrecision(dtype=torch.bfloat16) if variant == "bfloat16" else TowerPrecision(weights="int8")
    )
    encoder = NativeVisionEncoder(tiny_bundle.file("mmproj"), thinker.n_embd, VisionOptions(tower=precision))
    pixels = photo_like(300, 451, seed=7)
    ref, _ = reference_embeddings(reference_model, pixels)
    error, _ = relative_error(encoder.encode(Image(pixels)).embeddings, ref)
    print(f"\n{precision.label}: relative error {error:.2e}")
    assert 0 < error <= TOLERANCE[variant]


@pytest.mark.parametrize("dtype", ["f16", "q8_0"])
def test_weights_load_from_every_mmproj_type(tmp_path, thinker, reference_model, dtype):
    visual = reference_model.thinker.model.visual
    tensors = {f"{VISION_PREFIX}{name}": t for name, t in visual.state_dict().items()}
    mmproj = tmp_path / f"mmproj-{dtype}.gguf"
    write_vision_gguf(visual.config.to_dict(), thinker.n_embd, tensors, mmproj, dtype, "tiny")
    pixels = photo_like(112, 168, seed=3)
    ref, _ = reference_embeddings(reference_model, pixels)
    ours = NativeVisionEncoder(mmproj, thinker.n_embd).encode(Image(pixels)).embeddings
    error, _ = relative_error(ours, ref)
    print(f"\n{dtype} mmproj: relative error {error:.2e}")
    assert 0 < error <= TOLERANCE[dtype]


def test_a_video_matches_mtmd(native, tiny_bundle, thinker):
    frames = np.stack([photo_like(56, 84, seed=i) for i in range(3)])
    video = Video(frames, timestamps=np.arange(3) * 0.5)
    mtmd = VisionEncoder(tiny_bundle.file("mmproj"), thinker.llama_model, thinker.n_embd)
    ours, theirs = native.encode_video(video), mtmd.encode_video(video)
    assert ours.grid == theirs.grid and ours.key == theirs.key
    error, _ = relative_error(ours.embeddings, theirs.embeddings)
    print(f"\nvideo, native against mtmd: relative error {error:.2e}")
    assert error <= 1e-3


def test_patches_are_the_reference_processors(native):
    pixels = photo_like(84, 112, seed=2)
    batch = reference_processor()(images=[pixels], input_data_format="channels_last", return_tensors="pt")
    assert torch.allclose(patchify([pixels]), batch["pixel_values"], atol=1e-5)


def test_windows_cover_every_block_once_with_smaller_windows_at_the_edges():
    order, lengths = window_order(5, 6, 4)  # windows of 4x4 blocks: 4x4, 4x2, 1x4, 1x2
    assert sorted(order.tolist()) == list(range(30))
    assert lengths == [16, 8, 4, 2]
    assert order[:4].tolist() == [0, 1, 2, 3] and order[4:8].tolist() == [6, 7, 8, 9]


def test_a_layer_the_int8_kernel_cannot_take_stays_float():
    """The vision tower's patch embedding (1176 inputs) and MLP output (3420 inputs) crashed torch's
    int8 kernel (a segmentation fault): such layers keep their float weights."""
    from torch import nn

    from model.talker.quantize import Int8Linear, quantize

    model = nn.Sequential(nn.Linear(1176, 32), nn.Linear(32, 48))
    quantize(model, "int8")
    assert isinstance(model[0], nn.Linear) and isinstance(model[1], Int8Linear)
    assert model(torch.randn(5, 1176)).shape == (5, 48)
