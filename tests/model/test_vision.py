"""The vision path: the reference's resize, and llama.cpp's encoder on our converter's mmproj,
against transformers' processor and `visual` on the tiny checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.errors import ModelFileError, OmnideskError
from model.media import Image
from model.vision import MAX_PIXELS, MIN_PIXELS, VisionEncoder, fit_image, smart_resize
from tests.helpers import photo_like

# Relative to the output's largest magnitude: llama.cpp's ggml kernels (flash attention, its
# GELU/SiLU approximations) against torch float32.
VISION_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def encoder(tiny_bundle, thinker) -> VisionEncoder:
    return VisionEncoder(tiny_bundle.file("mmproj"), thinker.llama_model, thinker.n_embd)


def reference_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)


def reference_embeddings(reference_model, pixels: np.ndarray) -> tuple[np.ndarray, list[int]]:
    batch = reference_processor()(images=[pixels], input_data_format="channels_last", return_tensors="pt")
    with torch.no_grad():
        out = reference_model.thinker.model.visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"])
    return out.pooler_output.numpy(), batch["image_grid_thw"][0].tolist()


@pytest.mark.parametrize(
    ("height", "width"),
    [(112, 168), (300, 451), (57, 1000), (1, 1)],
    ids=["multiple-of-28", "photo-size", "wide", "one-pixel"],
)
def test_image_embeddings_match_the_reference(encoder, reference_model, height, width):
    pixels = photo_like(height, width, seed=height + width)
    ours = encoder.encode(Image(pixels))
    ref, grid = reference_embeddings(reference_model, pixels)
    assert [ours.grid.t, ours.grid.h, ours.grid.w] == grid
    assert ours.embeddings.shape == ref.shape
    scale = float(np.abs(ref).max())
    error = float(np.abs(ours.embeddings - ref).max())
    print(f"\n{width}x{height}: {ref.shape[0]} embeddings, max |ref| {scale:.3f}, max abs error {error:.2e}")
    assert scale > 0.3, "the tiny ViT's output must be of meaningful size"
    assert error <= VISION_TOLERANCE * scale


def test_resize_matches_the_reference_processor():
    pixels = photo_like(333, 517, seed=5)
    ours = fit_image(pixels)
    batch = reference_processor()(images=[pixels], do_normalize=False, do_rescale=False, return_tensors="np")
    grid = batch["image_grid_thw"][0]
    assert ours.shape[:2] == (grid[1] * 14, grid[2] * 14)


@pytest.mark.parametrize(
    ("size", "expected"),
    [((1, 1), (56, 56)), ((28, 28), (56, 56)), ((1080, 1920), (1092, 1932)), ((100_000, 400), None)],
)
def test_smart_resize_bounds(size, expected):
    if expected is None:
        with pytest.raises(OmnideskError, match="too long and thin"):
            smart_resize(*size)
        return
    assert smart_resize(*size) == expected


def test_a_huge_image_is_brought_within_the_limit():
    height, width = smart_resize(20_000, 30_000)
    assert height % 28 == 0 and width % 28 == 0
    assert height * width <= MAX_PIXELS
    assert abs(width / height - 1.5) < 0.01


def test_the_same_pixels_give_the_same_key(encoder):
    pixels = photo_like(56, 84, seed=1)
    assert encoder.encode(Image(pixels)).key == encoder.encode(Image(pixels.copy())).key
    assert encoder.encode(Image(pixels)).key != encoder.encode(Image(pixels[::-1].copy())).key


def test_an_mmproj_of_another_width_is_refused(tiny_bundle, thinker):
    with pytest.raises(ModelFileError, match="same Qwen2.5-Omni size"):
        VisionEncoder(tiny_bundle.file("mmproj"), thinker.llama_model, thinker.n_embd * 2)


def test_a_thinker_gguf_is_not_an_mmproj(tiny_bundle, thinker):
    with pytest.raises(ModelFileError, match="not a vision projector"):
        VisionEncoder(tiny_bundle.file("thinker"), thinker.llama_model, thinker.n_embd)
