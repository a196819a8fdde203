"""Images to the Thinker's input embeddings: the reference's resize, then llama.cpp's vision encoder.

Resize: qwen-omni-utils' `fetch_image` (what the reference pipeline does before its processor): the
size is `smart_resize`d to multiples of 28 (one merged 2x2 block of 14-pixel patches) within
`MIN_PIXELS`..`max_pixels`, keeping the aspect ratio, and the pixels are resampled with Pillow's
bicubic filter. The processor then finds the size already right and only normalizes.

Encoding: llama.cpp's mtmd runs the mmproj (Qwen2.5-VL's ViT: window attention, 2x2 merge, MLP
projector) on the resized pixels. Its own resize sees a size it accepts and keeps it, so the rows
come out in the reference's order: merged blocks in raster order, (rows / 2) x (columns / 2).
Measured on the tiny checkpoint: within 1e-3 of transformers' `visual`, relative to the largest
value (tests/model/test_vision.py prints it).

Threads: `VisionEncoder.encode` blocks while llama.cpp encodes (on its own threads); one call at a
time per encoder.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from llama_cpp import mtmd_cpp
from PIL import Image as PilImage

from model.errors import ModelFileError, OmnideskError
from model.files.thinker_gguf import check_mmproj_gguf, mmproj_projection_dim
from model.llama_logs import route_mtmd_logs
from model.media import Image
from model.tmrope import ImageGrid

PATCH_SIZE = 14  # pixels
MERGE_SIZE = 2  # patches merged per side into one embedding
FACTOR = PATCH_SIZE * MERGE_SIZE  # 28: image sides are multiples of this
MIN_PIXELS = 4 * FACTOR * FACTOR  # 3136: at least four embeddings
MAX_PIXELS = 16384 * FACTOR * FACTOR  # the reference's cap: 16384 embeddings (12.8 Mpixel)
MAX_ASPECT_RATIO = 200
_GET_MMPROJ = "Download the model again (omnidesk models download) or convert it from the checkpoint"


def smart_resize(
    height: int, width: int, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> tuple[int, int]:
    """The reference's target size: sides multiples of 28, pixels within bounds, aspect ratio kept."""
    if min(height, width) < 1:
        raise OmnideskError(f"the image is empty ({width} x {height} pixels)")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise OmnideskError(
            f"the image is too long and thin ({width} x {height} pixels): crop it to an aspect ratio "
            f"under {MAX_ASPECT_RATIO}:1"
        )
    h_bar = round(height / FACTOR) * FACTOR
    w_bar = round(width / FACTOR) * FACTOR
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(FACTOR, math.floor(height / beta / FACTOR) * FACTOR)
        w_bar = max(FACTOR, math.floor(width / beta / FACTOR) * FACTOR)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / FACTOR) * FACTOR
        w_bar = math.ceil(width * beta / FACTOR) * FACTOR
    return h_bar, w_bar


def fit_image(pixels: np.ndarray, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """pixels (H, W, 3) uint8 RGB resized as the reference does: (h, w, 3) with h, w multiples of 28."""
    height, width = pixels.shape[:2]
    target = smart_resize(height, width, min_pixels, max_pixels)
    if target == (height, width):
        return np.ascontiguousarray(pixels)
    resized = PilImage.fromarray(pixels, "RGB").resize((target[1], target[0]), PilImage.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)


@dataclass(frozen=True, eq=False)
class EncodedImage:
    """An image as the Thinker takes it: one embedding per merged 2x2 block of patches."""

    embeddings: np.ndarray = field(repr=False)  # (grid.h / 2 * grid.w / 2, n_embd) float32
    grid: ImageGrid  # in patches, before the merge
    key: str  # a hash of the pixels encoded, for reusing the KV cache


@dataclass(frozen=True)
class VisionOptions:
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS  # lower it to trade detail for prefill time (screenshots are large)
    n_threads: int = 1
    use_gpu: bool = True


class VisionEncoder:
    """llama.cpp's mtmd context for an mmproj, bound to the Thinker's loaded model."""

    def __init__(
        self,
        mmproj: Path,
        llama_model: ctypes.c_void_p,
        n_embd: int,
        options: VisionOptions = VisionOptions(),
    ) -> None:
        self._ctx: mtmd_cpp.mtmd_context_p | None = None
        check_mmproj_gguf(mmproj)
        projected = mmproj_projection_dim(mmproj)
        if projected != n_embd:
            raise ModelFileError(
                mmproj,
                f"this vision projector gives {projected}-wide embeddings but the Thinker takes {n_embd}",
                "Use the mmproj GGUF of the same Qwen2.5-Omni size as the Thinker",
            )
        self.options = options
        self.n_embd = n_embd
        route_mtmd_logs()
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = options.use_gpu
        params.n_threads = options.n_threads
        params.print_timings = False
        params.warmup = False
        # The reference's token bounds, so mtmd keeps the size `fit_image` chose.
        params.image_min_tokens = options.min_pixels // (FACTOR * FACTOR)
        params.image_max_tokens = options.max_pixels // (FACTOR * FACTOR)
        self._ctx = mtmd_cpp.mtmd_init_from_file(str(mmproj).encode(), llama_model, params)
        if not self._ctx:
            raise ModelFileError(mmproj, "llama.cpp could not load this vision projector", _GET_MMPROJ)
        if not mtmd_cpp.mtmd_support_vision(self._ctx):
            self.close()
            raise ModelFileError(mmproj, "this projector has no vision encoder", _GET_MMPROJ)
        self._marker = mtmd_cpp.mtmd_default_marker()

    def encode(self, image: Image) -> EncodedImage:
        """Resize as the reference does and encode: embeddings (h/28 * w/28, n_embd)."""
        pixels = fit_image(image.pixels, self.options.min_pixels, self.options.max_pixels)
        height, width = pixels.shape[:2]
        rows, cols = height // FACTOR, width // FACTOR
        embeddings = self._encode_pixels(pixels, rows, cols)
        key = hashlib.blake2b(pixels.tobytes(), digest_size=16, person=b"omnidesk-image").hexdigest()
        return EncodedImage(embeddings, ImageGrid(1, rows * MERGE_SIZE, cols * MERGE_SIZE), key)

    def _encode_pixels(self, pixels: np.ndarray, rows: int, cols: int) -> np.ndarray:
        height, width = pixels.shape[:2]
        data = (ctypes.c_ubyte * pixels.size).from_buffer_copy(pixels.tobytes())
        bitmap = mtmd_cpp.mtmd_bitmap_init(width, height, data)
        chunks = mtmd_cpp.mtmd_input_chunks_init()
        try:
            text = mtmd_cpp.mtmd_input_text()
            text.text, text.text_len = self._marker, len(self._marker)
            text.add_special, text.parse_special = False, True
            bitmaps = (mtmd_cpp.mtmd_bitmap_p_ctypes * 1)(bitmap)
            if mtmd_cpp.mtmd_tokenize(self._ctx, chunks, ctypes.byref(text), bitmaps, 1) != 0:
                raise OmnideskError(f"llama.cpp could not prepare the {width} x {height} image")
            chunk = self._image_chunk(chunks)
            tokens = mtmd_cpp.mtmd_input_chunk_get_tokens_image(chunk)
            got = (mtmd_cpp.mtmd_image_tokens_get_ny(tokens), mtmd_cpp.mtmd_image_tokens_get_nx(tokens))
            if got != (rows, cols):
                raise OmnideskError(
                    f"llama.cpp resized the {width} x {height} image to {got[1]} x {got[0]} blocks, not "
                    f"{cols} x {rows}: this llama-cpp-python is not the one Omnidesk supports"
                )
            if mtmd_cpp.mtmd_encode_chunk(self._ctx, chunk) != 0:
                raise OmnideskError(f"llama.cpp could not encode the {width} x {height} image")
            n = rows * cols
            output = mtmd_cpp.mtmd_get_output_embd(self._ctx)
            return np.ctypeslib.as_array(output, shape=(n * self.n_embd,)).reshape(n, self.n_embd).copy()
        finally:
            mtmd_cpp.mtmd_input_chunks_free(chunks)
            mtmd_cpp.mtmd_bitmap_free(bitmap)

    @staticmethod
    def _image_chunk(chunks: mtmd_cpp.mtmd_input_chunks_p) -> mtmd_cpp.mtmd_input_chunk_p:
        for i in range(mtmd_cpp.mtmd_input_chunks_size(chunks)):
            chunk = mtmd_cpp.mtmd_input_chunks_get(chunks, i)
            if mtmd_cpp.mtmd_input_chunk_get_type(chunk) == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                return chunk
        raise OmnideskError("llama.cpp made no image input from the picture")

    def close(self) -> None:
        if self._ctx:
            mtmd_cpp.mtmd_free(self._ctx)
            self._ctx = None

    def __del__(self) -> None:
        self.close()
