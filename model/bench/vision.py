"""`omnidesk bench vision`: one image through llama.cpp's vision encoder and transformers', at the real size.

Random weights at Qwen2.5-Omni's vision size (the released `vision_config`: 32 blocks, width 1280,
16 heads, window attention with full attention every 8th block, the 2x2 merger into the Thinker's
width: 2048 for the 3B, 3584 for the 7B; about 0.67 B parameters). The same tensors are written as
an mmproj GGUF (float16 or float32, as `omnidesk models convert` writes one) and run by mtmd, bound to
a one-layer Thinker GGUF of the same width (mtmd checks the width only). It prints the median time per
image, per embedding, the ratio to the reference and the largest difference of the outputs.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.bench.parts.measure import median_seconds
from model.bench.parts.random_thinker import ThinkerShape, random_thinker, special_tokens
from model.files.mmproj_gguf import VISION_PREFIX, write_vision_gguf
from model.media import Image
from model.thinker import Thinker
from model.thinker_types import ThinkerOptions
from model.vision import FACTOR, VisionEncoder, VisionOptions

CPU = torch.device("cpu")  # llama.cpp's build decides where mtmd runs; the reference runs here
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnidesk bench vision", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(THINKER_WIDTHS), default="3b", help="the Thinker's width")
    parser.add_argument("--side", type=int, default=448, help="image side, pixels (448: 256 embeddings)")
    parser.add_argument("--dtype", choices=("f16", "f32"), default="f16", help="the mmproj's matrices")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (default: 3)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--no-reference", action="store_true", help="skip transformers' vision tower")
    args = parser.parse_args(argv)
    if args.side % FACTOR:
        parser.error(f"--side must be a multiple of {FACTOR}")

    from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniVisionEncoderConfig
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniVisionEncoder

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    width = THINKER_WIDTHS[args.size]
    torch.manual_seed(0)
    config = Qwen2_5OmniVisionEncoderConfig(**RELEASED_VISION, out_hidden_size=width)
    reference: Any = Qwen2_5OmniVisionEncoder(config).eval()
    params = sum(p.numel() for p in reference.parameters())
    pixels = np.random.default_rng(0).integers(0, 256, (args.side, args.side, 3), dtype=np.uint8)
    embeddings = (args.side // FACTOR) ** 2
    print(f"vision tower: {config.depth} blocks, width {config.hidden_size}, {params / 1e9:.2f} B params")
    print(f"image: {args.side} x {args.side} -> {embeddings} embeddings of width {width}; {threads} threads")

    with tempfile.TemporaryDirectory(prefix="omnidesk-bench-vision-") as folder:
        mmproj = Path(folder) / "mmproj.gguf"
        tensors = {f"{VISION_PREFIX}{name}": t for name, t in reference.state_dict().items()}
        write_vision_gguf(config.to_dict(), width, tensors, mmproj, args.dtype, "random vision tower")
        # The Qwen vocabulary (the special ids sit at its end); one layer, since only the width counts.
        host = ThinkerShape(f"vision-host-{width}", width, 1, 16, 2, 256, 151936, tied=True)
        host_gguf = random_thinker(host, "Q8_0", Path(folder))
        thinker = Thinker(host_gguf, special_tokens(), ThinkerOptions(n_ctx=256, n_threads=threads))
        encoder = VisionEncoder(mmproj, thinker.llama_model, width, VisionOptions(n_threads=threads))
        ours = encoder.encode(Image(pixels)).embeddings
        ours_s = median_seconds(lambda: encoder.encode(Image(pixels)), args.repeats, CPU, warm_up=False)
        per_embedding = ours_s / embeddings * 1000
        print(f"ours (mtmd, {args.dtype}): {ours_s:7.2f} s per image, {per_embedding:.1f} ms per embedding")
        if args.no_reference:
            return 0
        patches, grid = _reference_input(pixels)

        def run_reference() -> torch.Tensor:
            with torch.inference_mode():
                return reference(patches, grid_thw=grid).pooler_output

        reference_s = median_seconds(run_reference, args.repeats, CPU, warm_up=False)
        expected = run_reference().numpy()
        error = float(np.abs(ours - expected).max() / np.abs(expected).max())
        print(f"reference (transformers, float32): {reference_s:7.2f} s per image")
        print(
            f"ours / reference: {ours_s / reference_s:.3f}; max difference {error:.2e} of the largest value"
        )
    return 0


def _reference_input(pixels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' image processor output for pixels already at a multiple of 28."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    area = pixels.shape[0] * pixels.shape[1]
    processor = Qwen2VLImageProcessorPil(min_pixels=FACTOR * FACTOR, max_pixels=area)
    batch = processor(images=[pixels], input_data_format="channels_last", return_tensors="pt")
    return batch["pixel_values"], batch["image_grid_thw"]
