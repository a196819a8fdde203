"""Images to the Thinker's input embeddings: the reference's resize, then a vision encoder.

Resize: qwen-omni-utils' `fetch_image` (what the reference pipeline does before its processor): the
size is `smart_resize`d to multiples of 28 (one merged 2x2 block of 14-pixel patches) within
`MIN_PIXELS`..`max_pixels`, keeping the aspect ratio, and the pixels are resampled with Pillow's
bicubic filter. The processor then finds the size already right and only normalizes.

`FrameEncoder` holds what every encoder shares (the resize, video frames paired into temporal
patches, the content key); two encoders run the tower: `VisionEncoder` here (llama.cpp's mtmd, the
exact path) and `model.vision_tower.NativeVisionEncoder` (torch; faster on a CPU with bfloat16
kernels). The plan (`model.placement`) picks one per machine.

Encoding with mtmd: llama.cpp runs the mmproj (Qwen2.5-VL's ViT: window attention, 2x2 merge, MLP
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
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from llama_cpp import mtmd_cpp
from PIL import Image as PilImage
from PIL import ImageOps

from model.errors import ModelFileError, OmnideskError
from model.files.thinker_gguf import check_mmproj_gguf
from model.hardware import default_threads
from model.llama_logs import route_mtmd_logs
from model.media import Image, Video
from model.tmrope import ImageGrid, VideoGrid
from model.video import video_frame_bounds

PATCH_SIZE = 14  # pixels
MERGE_SIZE = 2  # patches merged per side into one embedding
FACTOR = PATCH_SIZE * MERGE_SIZE  # 28: image sides are multiples of this
MIN_PIXELS = 4 * FACTOR * FACTOR  # 3136: at least four embeddings
MAX_PIXELS = 16384 * FACTOR * FACTOR  # the reference's cap: 16384 embeddings (12.8 Mpixel)
# Our default: 1280 embeddings (1 Mpixel), Qwen's own advice for limited memory. At the reference's
# cap the vision encoder's full-attention layers need tens of GB, and the prompt outgrows the context.
DEFAULT_MAX_PIXELS = 1280 * FACTOR * FACTOR
MAX_ASPECT_RATIO = 200
# Loading costs 10 bytes per pixel at its peak (Pillow's 4-byte pixels, then the array's 3 bytes made
# through a 3-byte copy): larger images are decoded reduced or refused (load_image), so one file takes
# at most about 400 MB (382 MiB measured for an 8000 x 5000 PNG, RGB or RGBA). An 8K screenshot is
# 33 Mpixel; a 13000 x 13000 PNG took 2.2 GB.
MAX_DECODED_PIXELS = 40_000_000
TEMPORAL_PATCH = 2  # video frames per patch
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


def load_image(path: Path | str, max_pixels: int = MAX_DECODED_PIXELS) -> Image:
    """An image file (PNG, JPEG, WebP, BMP, GIF's first frame...) as RGB, turned upright as its
    EXIF orientation says (what the user sees in any viewer).

    Memory stays bounded: the size is read from the header first, and an image of more than
    `max_pixels` is decoded reduced (a JPEG, by its DCT scaling: 1/2, 1/4 or 1/8 per side) or refused
    (other formats cannot be decoded reduced), before any pixel is decoded."""
    path = Path(path)
    if not path.is_file():
        raise OmnideskError(f"{path}: image file not found.")
    try:
        with warnings.catch_warnings():  # Pillow warns of "decompression bombs": the bound below is ours
            warnings.simplefilter("ignore", PilImage.DecompressionBombWarning)
            opened = PilImage.open(path)
        with opened:
            _decode_within(opened, max_pixels, path)
            ImageOps.exif_transpose(opened, in_place=True)  # a copy only when it must turn
            if opened.mode == "RGB":
                return Image(np.asarray(opened, dtype=np.uint8))
            rgb = opened.convert("RGB")
            opened.close()  # frees the decoded original (leaving `with` does not) before the array copy
        return Image(np.asarray(rgb, dtype=np.uint8))
    except PilImage.DecompressionBombError:
        raise OmnideskError(f"{path}: the image is too large to open safely. Shrink it first.") from None
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        raise OmnideskError(f"{path}: not a readable image ({exc}).") from None


def _decode_within(opened: PilImage.Image, max_pixels: int, path: Path) -> None:
    """Arrange for `opened` to decode to at most `max_pixels` pixels, or raise OmnideskError."""
    width, height = opened.size
    if width * height <= max_pixels:
        return
    if opened.format == "JPEG":
        for scale in (2, 4, 8):  # what libjpeg decodes directly, each a fraction of the work
            if math.ceil(width / scale) * math.ceil(height / scale) <= max_pixels:
                opened.draft("RGB", (math.ceil(width / scale), math.ceil(height / scale)))
                return
    raise OmnideskError(
        f"{path}: the image is {width} x {height} pixels ({width * height / 1e6:.3g} Mpixel); at most "
        f"{max_pixels / 1e6:.3g} Mpixel can be opened. Scale it down first (a JPEG opens reduced)."
    )


def fit_image(pixels: np.ndarray, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """pixels (H, W, 3) uint8 RGB resized as the reference does: (h, w, 3) with h, w multiples of 28."""
    return resize_pixels(pixels, *smart_resize(pixels.shape[0], pixels.shape[1], min_pixels, max_pixels))


def resize_pixels(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pillow's bicubic resampling (with its antialiasing when shrinking), or the pixels as they are."""
    if pixels.shape[:2] == (height, width):
        return np.ascontiguousarray(pixels)
    resized = PilImage.fromarray(pixels, "RGB").resize((width, height), PilImage.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)


def _key(pixels: np.ndarray) -> str:
    """A hash of what was encoded, for reusing the KV cache of a prompt that holds it again."""
    return hashlib.blake2b(pixels.tobytes(), digest_size=16, person=b"omnidesk-vision").hexdigest()


@dataclass(frozen=True, eq=False)
class EncodedImage:
    """An image as the Thinker takes it: one embedding per merged 2x2 block of patches."""

    embeddings: np.ndarray = field(repr=False)  # (grid.h / 2 * grid.w / 2, n_embd) float32
    grid: ImageGrid  # in patches, before the merge
    key: str  # a hash of the pixels encoded, for reusing the KV cache


@dataclass(frozen=True, eq=False)
class EncodedVideo:
    """A video as the Thinker takes it: one embedding per merged 2x2 block of each temporal patch."""

    embeddings: np.ndarray = field(repr=False)  # (grid.t * grid.h / 2 * grid.w / 2, n_embd) float32
    grid: VideoGrid  # in patches, before the merge; t counts pairs of frames
    key: str


@dataclass(frozen=True)
class TowerPrecision:
    """How the native tower computes."""

    device: str = "cpu"  # a torch device
    dtype: torch.dtype = torch.float32  # activations (and float weights)
    weights: Literal["float", "int8"] = "float"  # int8: weight-only, the linear layers

    @property
    def label(self) -> str:
        """e.g. "torch float32", "torch bfloat16", "torch int8 weights"."""
        if self.weights == "int8":
            return "torch int8 weights"
        return f"torch {str(self.dtype).removeprefix('torch.')}"


@dataclass(frozen=True)
class VisionOptions:
    min_pixels: int = MIN_PIXELS
    max_pixels: int = DEFAULT_MAX_PIXELS  # more detail costs prefill time and memory; up to MAX_PIXELS
    n_threads: int | None = None  # None: as many as the Thinker's default
    use_gpu: bool = True  # mtmd: on llama.cpp's GPU backend where it has one
    tower: TowerPrecision | None = None  # None: llama.cpp's mtmd; else torch's tower in this precision


def check_bounds(options: VisionOptions) -> None:
    """Raise OmnideskError unless the options' pixel bounds lie within the reference's."""
    if not MIN_PIXELS <= options.min_pixels <= options.max_pixels <= MAX_PIXELS:
        raise OmnideskError(f"image size bounds must lie within {MIN_PIXELS} .. {MAX_PIXELS} pixels")


class FrameEncoder(ABC):
    """What every vision encoder shares: the reference's resize of an image or a video's frames,
    the frames paired into temporal patches, the content key. Subclasses encode one pair."""

    options: VisionOptions
    n_embd: int

    def encode(self, image: Image) -> EncodedImage:
        """Resize as the reference does and encode: embeddings (h/28 * w/28, n_embd)."""
        pixels = fit_image(image.pixels, self.options.min_pixels, self.options.max_pixels)
        height, width = pixels.shape[:2]
        rows, cols = height // FACTOR, width // FACTOR
        embeddings = self._encode_pixels([pixels], rows, cols)
        return EncodedImage(embeddings, ImageGrid(1, rows * MERGE_SIZE, cols * MERGE_SIZE), _key(pixels))

    def encode_video(self, video: Video) -> EncodedVideo:
        """Frames resized to `video.frame_size` (or within the reference's video bounds), encoded two by
        two (one temporal patch each; an odd last frame is doubled, as the reference's processor does):
        embeddings (frames / 2 * h/28 * w/28, n_embd), time-major."""
        frames = list(video.frames)
        if len(frames) % TEMPORAL_PATCH:
            frames.append(frames[-1])
        height, width = video.frame_size or smart_resize(
            frames[0].shape[0], frames[0].shape[1], *video_frame_bounds(len(frames))
        )
        resized = [resize_pixels(f, height, width) for f in frames]
        pairs = [resized[i : i + TEMPORAL_PATCH] for i in range(0, len(resized), TEMPORAL_PATCH)]
        embeddings = np.concatenate([self.encode_pair(pair, (height, width)) for pair in pairs])
        seconds = TEMPORAL_PATCH * video.seconds_per_frame
        grid = VideoGrid(len(pairs), height // PATCH_SIZE, width // PATCH_SIZE, seconds)
        return EncodedVideo(embeddings, grid, _key(np.stack(resized)))

    def encode_pair(self, frames: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
        """One temporal patch of a video: two frames (h, w, 3) uint8 RGB resized to `size` (height,
        width; multiples of 28) -> embeddings (height/28 * width/28, n_embd), as `encode_video` makes
        them (a live call encodes its frames pair by pair as they come)."""
        height, width = size
        resized = [resize_pixels(frame, height, width) for frame in frames]
        return self._encode_pixels(resized, height // FACTOR, width // FACTOR)

    @abstractmethod
    def _encode_pixels(self, frames: list[np.ndarray], rows: int, cols: int) -> np.ndarray:
        """One image (one frame) or the two frames of one temporal patch, each (rows * 28, cols * 28, 3)
        uint8 -> embeddings (rows * cols, n_embd) float32, merged blocks in raster order."""


class VisionEncoder(FrameEncoder):
    """llama.cpp's mtmd context for an mmproj, bound to the Thinker's loaded model."""

    def __init__(
        self,
        mmproj: Path,
        llama_model: ctypes.c_void_p,
        n_embd: int,
        options: VisionOptions = VisionOptions(),
    ) -> None:
        self._ctx: mtmd_cpp.mtmd_context_p | None = None
        check_mmproj_gguf(mmproj, width=n_embd)  # clip.cpp aborts the process on some damaged files
        check_bounds(options)
        self.options = options
        self.n_embd = n_embd
        route_mtmd_logs()
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = options.use_gpu
        params.n_threads = options.n_threads or default_threads()
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

    def _encode_pixels(self, frames: list[np.ndarray], rows: int, cols: int) -> np.ndarray:
        """One image, or the two frames of one temporal patch: mtmd merges consecutive bitmaps marked
        mergeable into one patch, the second frame through the second kernel."""
        height, width = frames[0].shape[:2]
        bitmaps = [
            mtmd_cpp.mtmd_bitmap_init(width, height, (ctypes.c_ubyte * f.size).from_buffer_copy(f.tobytes()))
            for f in frames
        ]
        chunks = mtmd_cpp.mtmd_input_chunks_init()
        try:
            for bitmap in bitmaps:
                mtmd_cpp.mtmd_bitmap_set_mergeable(bitmap, len(bitmaps) > 1)
            marker = self._marker * len(bitmaps)
            text = mtmd_cpp.mtmd_input_text()
            text.text, text.text_len = marker, len(marker)
            text.add_special, text.parse_special = False, True
            array = (mtmd_cpp.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            if mtmd_cpp.mtmd_tokenize(self._ctx, chunks, ctypes.byref(text), array, len(bitmaps)) != 0:
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
            for bitmap in bitmaps:
                mtmd_cpp.mtmd_bitmap_free(bitmap)

    @staticmethod
    def _image_chunk(chunks: mtmd_cpp.mtmd_input_chunks_p) -> mtmd_cpp.mtmd_input_chunk_p:
        """The one image chunk (two frames make two when mtmd does not merge them)."""
        every = [
            mtmd_cpp.mtmd_input_chunks_get(chunks, i) for i in range(mtmd_cpp.mtmd_input_chunks_size(chunks))
        ]
        found = [
            c for c in every if mtmd_cpp.mtmd_input_chunk_get_type(c) == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_IMAGE
        ]
        if len(found) != 1:
            raise OmnideskError(
                f"llama.cpp made {len(found)} image inputs where one was due: "
                "this llama-cpp-python is not the one Omnidesk supports"
            )
        return found[0]

    def close(self) -> None:
        if self._ctx:
            mtmd_cpp.mtmd_free(self._ctx)
            self._ctx = None

    def __del__(self) -> None:
        self.close()
