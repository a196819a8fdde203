"""`omnidesk bench vision`: every vision encoder the plan may pick, at two image sizes, at the real size.

Random weights at Qwen2.5-Omni's vision size (the released `vision_config`: 32 blocks, width 1280,
16 heads, window attention with full attention every 8th block, the 2x2 merger into the Thinker's
width: 2048 for the 3B, 3584 for the 7B; about 0.67 B parameters). The same tensors are written as
mmproj GGUFs (float16, float32 and Q8_0 matrices, as `omnidesk models convert` and ggml-org's
downloads hold them) and run by llama.cpp's mtmd, bound to a one-layer Thinker GGUF of the same width
(mtmd checks the width only), and by our torch tower (`model.vision_tower`) in float32, bfloat16
(where the CPU has the kernels) and with int8 weights. Each variant: seconds per image at each side
(after one untimed call on a small image), and its largest difference from transformers' tower
(float32), relative to the largest value. Last, the time of each as a*n + b*n^2 over n embeddings
(the full-attention blocks are quadratic), which `model.placement` uses to size a screenshot.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.bench.parts.random_thinker import ThinkerShape, random_thinker, special_tokens
from model.files.mmproj_gguf import VISION_PREFIX, write_vision_gguf
from model.hardware import probe
from model.media import Image
from model.thinker import Thinker
from model.thinker_types import ThinkerOptions
from model.vision import FACTOR, FrameEncoder, TowerPrecision, VisionEncoder, VisionOptions
from model.vision_tower import NativeVisionEncoder

THINKER_WIDTHS = {"3b": 2048, "7b": 3584}
# The released checkpoints' vision_config (both sizes), where transformers' defaults differ.
RELEASED_VISION: dict[str, Any] = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "window_size": 112,
}
VARIANTS = ("mtmd-f16", "mtmd-f32", "mtmd-q8_0", "torch-float32", "torch-bfloat16", "torch-int8")
PRECISIONS = {
    "torch-float32": TowerPrecision(),
    "torch-bfloat16": TowerPrecision(dtype=torch.bfloat16),
    "torch-int8": TowerPrecision(weights="int8"),
}
HOST_HEAD = 128  # the host Thinker's head width: what the released M-RoPE sections split
WARM_UP_SIDE = 56  # pixels: one untimed call per encoder, so that first-call costs are not counted


@dataclass(frozen=True)
class Row:
    variant: str
    seconds: dict[int, float]  # side -> seconds per image
    error: dict[int, float]  # side -> largest difference from the reference, relative to its largest value

    def fit(self) -> tuple[float, float]:
        """(a, b): seconds = a * n + b * n^2 over n embeddings, through the two sides measured."""
        return fit_seconds({(side // FACTOR) ** 2: s for side, s in self.seconds.items()})


def fit_seconds(seconds: dict[int, float]) -> tuple[float, float]:
    """(a, b) of seconds = a * n + b * n^2 through the first two (embeddings, seconds) points; where
    the larger image cost less per embedding (fixed costs, or a busy machine), b = 0 and a is the
    least-squares slope through both."""
    (n1, t1), (n2, t2) = sorted(seconds.items())[:2]
    b = (t2 / n2 - t1 / n1) / (n2 - n1)
    if b < 0:
        return (t1 * n1 + t2 * n2) / (n1 * n1 + n2 * n2), 0.0
    return t1 / n1 - b * n1, b


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnidesk bench vision", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(THINKER_WIDTHS), default="3b", help="the Thinker's width")
    parser.add_argument("--sides", type=int, nargs="+", default=[448, 1008], help="image sides, pixels")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--no-reference", action="store_true", help="errors against torch-float32 instead")
    args = parser.parse_args(argv)
    if any(side % FACTOR for side in args.sides):
        parser.error(f"--sides must be multiples of {FACTOR}")
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    variants = [v for v in args.variants if v != "torch-bfloat16" or probe().cpu_bf16]
    rows = measure(
        RELEASED_VISION, THINKER_WIDTHS[args.size], args.sides, variants, threads, not args.no_reference
    )
    print(table(rows, args.sides))
    return 0


def measure(
    vision: dict[str, Any], width: int, sides: list[int], variants: list[str], threads: int, reference: bool
) -> list[Row]:
    """Each variant's row; errors against transformers' tower (`reference`) or torch-float32."""
    from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniVisionEncoderConfig
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniVisionEncoder

    if not reference:  # torch-float32 (within 1e-6 of the reference, tests/model) stands in for it
        variants = sorted(variants, key=lambda v: v != "torch-float32")
    torch.manual_seed(0)
    config = Qwen2_5OmniVisionEncoderConfig(**vision, out_hidden_size=width)
    tower: Any = Qwen2_5OmniVisionEncoder(config).eval()
    params = sum(p.numel() for p in tower.parameters())
    images = {side: _screen_like(side) for side in sides}
    print(f"vision tower: {config.depth} blocks, width {config.hidden_size}, {params / 1e9:.2f} B params")
    print(
        f"images: {', '.join(f'{s}x{s} ({(s // FACTOR) ** 2} embeddings)' for s in sides)}; {threads} threads"
    )
    rows: list[Row] = []
    expected: dict[int, np.ndarray] = {}
    if reference:
        seconds = {}
        for side in sides:
            seconds[side], expected[side] = _timed(_reference, tower, images[side])
        rows.append(Row("transformers float32", seconds, dict.fromkeys(sides, 0.0)))
        _print_row(rows[-1])
    tensors = {f"{VISION_PREFIX}{name}": t for name, t in tower.state_dict().items()}
    del tower
    gc.collect()
    with tempfile.TemporaryDirectory(prefix="omnidesk-bench-vision-") as folder:
        files = {dtype: Path(folder) / f"mmproj-{dtype}.gguf" for dtype in ("f32", "f16", "q8_0")}
        for dtype, path in files.items():
            if dtype == "f32" or f"mtmd-{dtype}" in variants:
                write_vision_gguf(config.to_dict(), width, tensors, path, dtype, "random vision tower")
        del tensors
        heads = width // HOST_HEAD  # the Qwen vocabulary (the special ids sit at its end); one layer
        host = ThinkerShape(
            f"vision-host-{width}", width, 1, heads, 2 if heads % 2 == 0 else 1, 256, 151936, True
        )
        thinker = Thinker(
            random_thinker(host, "Q8_0", Path(folder)), special_tokens(), ThinkerOptions(n_ctx=256)
        )
        options = VisionOptions(n_threads=threads, max_pixels=max(sides) ** 2)
        for variant in variants:
            if variant.startswith("mtmd-"):
                mmproj = files[variant.removeprefix("mtmd-")]
                encoder: FrameEncoder = VisionEncoder(mmproj, thinker.llama_model, width, options)
            else:
                tower = replace(options, tower=PRECISIONS[variant])
                encoder = NativeVisionEncoder(files["f32"], width, tower)
            encoder.encode(Image(_screen_like(WARM_UP_SIDE)))
            seconds, errors = {}, {}
            for side in sides:
                seconds[side], ours = _timed(_embeddings, encoder, images[side])
                if side not in expected:
                    expected[side] = ours
                scale = float(np.abs(expected[side]).max())
                errors[side] = float(np.abs(ours - expected[side]).max()) / scale
            rows.append(Row(variant, seconds, errors))
            _print_row(rows[-1])
            del encoder
            gc.collect()
        thinker.close()
    return rows


def table(rows: list[Row], sides: list[int]) -> str:
    head = (
        f"| variant | {' | '.join(f'{s}x{s} s' for s in sides)} | {' | '.join(f'error {s}' for s in sides)} |"
    )
    lines = [head, "|" + " --- |" * (1 + 2 * len(sides))]
    for row in rows:
        times = " | ".join(f"{row.seconds[s]:.2f}" for s in sides)
        errors = " | ".join(f"{row.error[s]:.1e}" for s in sides)
        lines.append(f"| {row.variant} | {times} | {errors} |")
    if len(sides) >= 2:
        lines.append("")
        for row in rows:
            a, b = row.fit()
            lines.append(
                f"{row.variant}: seconds = {a * 1e3:.2f} ms * n + {b * 1e6:.4f} us * n^2 (n embeddings)"
            )
    return "\n".join(lines)


def _print_row(row: Row) -> None:
    parts = ", ".join(f"{side}: {s:.2f} s (error {row.error[side]:.1e})" for side, s in row.seconds.items())
    print(f"{row.variant}: {parts}", flush=True)


def _timed(run: Callable[..., np.ndarray], *args: Any) -> tuple[float, np.ndarray]:
    """Seconds of `run(*args)` on the wall clock (CPU work only: no device to synchronise), and its output."""
    start = time.perf_counter()
    out = run(*args)
    return time.perf_counter() - start, out


def _embeddings(encoder: FrameEncoder, pixels: np.ndarray) -> np.ndarray:
    return encoder.encode(Image(pixels)).embeddings


def _reference(tower: Any, pixels: np.ndarray) -> np.ndarray:
    """transformers' image processor and tower on pixels already at a multiple of 28."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    area = pixels.shape[0] * pixels.shape[1]
    processor = Qwen2VLImageProcessorPil(min_pixels=FACTOR * FACTOR, max_pixels=area)
    batch = processor(images=[pixels], input_data_format="channels_last", return_tensors="pt")
    with torch.inference_mode():
        return tower(batch["pixel_values"], grid_thw=batch["image_grid_thw"]).pooler_output.numpy()


def _screen_like(side: int) -> np.ndarray:
    """(side, side, 3) uint8: flat panels and thin lines, as a screen has, with some noise."""
    rng = np.random.default_rng(side)
    pixels = np.full((side, side, 3), 235, dtype=np.uint8)
    for _ in range(12):
        top, left = rng.integers(0, side, 2)
        pixels[top : top + side // 5, left : left + side // 3] = rng.integers(0, 256, 3)
    pixels[:: side // 40 or 1, :] //= 2  # lines of "text"
    return np.clip(pixels + rng.integers(-8, 9, pixels.shape), 0, 255).astype(np.uint8)
