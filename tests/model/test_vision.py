"""The vision path: the reference's resize, and llama.cpp's encoder on our converter's mmproj,
against transformers' processor and `visual` on the tiny checkpoint."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from model.errors import ModelFileError, OmnideskError
from model.media import Image
from model.vision import (
    MAX_DECODED_PIXELS,
    MAX_PIXELS,
    MIN_PIXELS,
    VisionEncoder,
    fit_image,
    load_image,
    smart_resize,
)
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


# -- loading image files within a memory bound --------------------------------------------------------

HUGE_PNG = (
    "import resource, struct, sys, zlib\n"
    "from pathlib import Path\n"
    "def chunk(kind, data):\n"
    "    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))\n"
    "side = int(sys.argv[2]); row = bytes(1 + 3 * side); packer = zlib.compressobj(9)\n"
    "body = b''.join(packer.compress(row) for _ in range(side)) + packer.flush()  # a valid black image\n"
    "header = struct.pack('>IIBBBBB', side, side, 8, 2, 0, 0, 0)\n"
    "png = b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', header) + chunk(b'IDAT', body) + chunk(b'IEND', b'')\n"
    "Path(sys.argv[1]).write_bytes(png)\n"
    "from model.errors import OmnideskError; from model.vision import load_image\n"
    "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "try:\n"
    "    load_image(sys.argv[1]); outcome = 'loaded'\n"
    "except OmnideskError as exc:\n"
    "    outcome = str(exc)\n"
    "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
    "print(grown // 1024); print(outcome)\n"  # KiB on Linux
)


def jpeg(path, pixels: np.ndarray, orientation: int = 1):
    from PIL import Image as PilImage

    picture = PilImage.fromarray(pixels)
    exif = picture.getexif()
    exif[0x0112] = orientation
    picture.save(path, quality=95, exif=exif)
    return path


class TestLoadImage:
    def test_a_13000_pixel_square_png_is_refused_from_its_header(self, tmp_path):
        """It was decoded whole: 2.2 GB. Its header says what it would take, so nothing is decoded."""
        path = tmp_path / "huge.png"
        result = subprocess.run(
            [sys.executable, "-c", HUGE_PNG, str(path), "13000"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        grown_mib, outcome = result.stdout.splitlines()
        print(f"peak memory growth while loading: {grown_mib} MiB; {outcome}")
        assert outcome.startswith(str(path)) and "13000 x 13000 pixels (169 Mpixel)" in outcome
        assert f"at most {MAX_DECODED_PIXELS / 1e6:.3g} Mpixel" in outcome
        assert int(grown_mib) < 64

    def test_a_large_jpeg_is_decoded_reduced(self, tmp_path):
        pixels = photo_like(1200, 1600, seed=3)
        path = jpeg(tmp_path / "photo.jpg", pixels)
        assert load_image(path).pixels.shape == (1200, 1600, 3)
        reduced = load_image(path, max_pixels=500_000).pixels  # 1/2 per side: 800 x 600
        assert reduced.shape == (600, 800, 3)
        halved = pixels.reshape(600, 2, 800, 2, 3).mean(axis=(1, 3))
        assert np.abs(reduced.astype(float) - halved).mean() < 8, "the same picture, smaller"
        assert load_image(path, max_pixels=40_000).pixels.shape == (150, 200, 3)  # 1/8
        with pytest.raises(OmnideskError, match="1600 x 1200 pixels"):
            load_image(path, max_pixels=20_000)  # even 1/8 is more

    def test_another_format_over_the_bound_is_refused(self, tmp_path):
        from PIL import Image as PilImage

        path = tmp_path / "shot.png"
        PilImage.fromarray(photo_like(300, 400)).save(path)
        assert load_image(path, max_pixels=120_000).pixels.shape == (300, 400, 3)
        with pytest.raises(OmnideskError, match=r"400 x 300 pixels .* at most 0.12 Mpixel"):
            load_image(path, max_pixels=119_999)

    def test_the_exif_orientation_turns_the_picture_upright(self, tmp_path):
        pixels = photo_like(120, 200, seed=4)
        path = jpeg(tmp_path / "turned.jpg", pixels, orientation=6)  # shown turned 90 degrees clockwise
        upright = load_image(path).pixels
        assert upright.shape == (200, 120, 3)
        expected = np.rot90(pixels, k=-1)
        assert np.abs(upright.astype(float) - expected).mean() < 8
