"""`omnidesk bench audio`: one 2 s block through our audio tower and transformers', at the real size.

Random weights at Qwen2.5-Omni's audio-tower size (`Qwen2_5OmniAudioEncoderConfig` defaults: 32 layers,
d_model 1280, 20 heads, output 3584; 0.64 B parameters). Ours shares the reference's tensors, so both
run the same weights in this process. It prints the median time per 2 s block (200 mel frames -> 50
embeddings), the real-time factor (RTF), the ratio to the reference and the largest difference of the outputs.
In a dtype other than float32 it also prints ours' largest difference from ours in float32 (the exact
path: same weights, the dtype's arithmetic alone), relative to the largest value.
Times are wall-clock, `time.perf_counter`, after a device synchronisation; one warm-up run each.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from model.audio_encoder import AudioEncoderConfig, audio_encoder_from_tensors
from model.audio_features import FRAMES_PER_SECOND
from model.bench.parts.measure import median_seconds

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnidesk bench audio", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps (default: cpu)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (default: 5)")
    parser.add_argument("--layers", type=int, default=32, help="encoder layers (default: 32, the real size)")
    parser.add_argument("--no-reference", action="store_true", help="skip transformers' audio tower")
    args = parser.parse_args(argv)

    from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniAudioEncoderConfig
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniAudioEncoder

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    torch.manual_seed(0)
    reference_config = Qwen2_5OmniAudioEncoderConfig(encoder_layers=args.layers)
    reference: Any = Qwen2_5OmniAudioEncoder(reference_config)  # transformers' typed `.to` confuses mypy
    reference = reference.to(device=device, dtype=dtype).eval()
    ours = audio_encoder_from_tensors(reference.state_dict(), AudioEncoderConfig(encoder_layers=args.layers))
    ours = ours.to(device)
    config = ours.config
    params = sum(p.numel() for p in ours.parameters())
    mel = torch.randn(config.num_mel_bins, config.block_frames, device=device).clamp(-1.5, 1.5)
    block_seconds = config.block_frames / FRAMES_PER_SECOND
    size = f"{config.encoder_layers} layers, d_model {config.d_model}, {params / 1e9:.2f} B params"
    print(f"audio tower: {size}; {device}, {args.dtype}, {torch.get_num_threads()} threads")
    print(f"one block: {config.block_frames} mel frames = {block_seconds:.0f} s")

    out = ours.encode_block(mel)
    ours_s = median_seconds(lambda: ours.encode_block(mel), args.repeats, device)
    print(f"ours:      {ours_s * 1000:8.1f} ms per block (RTF {ours_s / block_seconds:.3f})")
    if dtype != torch.float32:  # what the faster dtype costs against the exact path, same weights
        exact = ours.float().encode_block(mel)
        relative = (out.float() - exact).abs().max().item() / exact.abs().max().item()
        print(f"ours {args.dtype} vs ours float32: largest difference {relative:.2e} of the largest value")
        ours = ours.to(dtype)
    if args.no_reference:
        return 0
    lengths = torch.tensor([config.block_frames], device=device)

    def run_reference() -> torch.Tensor:
        with torch.inference_mode():
            return reference(mel.to(dtype), feature_lens=lengths).last_hidden_state

    reference_s = median_seconds(run_reference, args.repeats, device)
    error = (out.float() - run_reference().float()).abs().max().item()
    print(f"reference: {reference_s * 1000:8.1f} ms per block (RTF {reference_s / block_seconds:.3f})")
    print(f"ours / reference: {ours_s / reference_s:.3f}; max abs difference {error:.2e}")
    return 0
