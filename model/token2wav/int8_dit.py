"""The DiT's block projections as int8 matrix products: the Fast profile's, on an x86 CPU with int8
dot-product instructions (VNNI, AMX).

A window's DiT evaluation multiplies each weight by hundreds of rows (its frames, for the conditional
and the unconditional row). On a CPU that is bound by multiply-adds, and an int8 product does twice
as many per instruction as a bfloat16 one. Weights get one scale per output row, set when the model
loads; each projection's input gets one scale and zero point as it comes in (its range mapped onto
0..255). oneDNN's quantized linear (the kernel torch's own x86 quantization lowers to) multiplies,
scales back, adds the bias and writes the activation's dtype in one pass. On 2 Zen 4 cores, a
projection of 720 rows: 1.4x to 1.7x bfloat16's, quantizing its input included.

Not exact: the error against the bfloat16 DiT and against Exact is measured at the released size by
`omnidesk bench token2wav` and bounded on the tiny model by tests/model/test_token2wav.py. The time
embedding and the input and output projections keep their weights: they read few rows, or run once
per window.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from model.token2wav.dit import DiT, DiTBlock

INT8_MAX = 127
UINT8_MAX = 255
TINY = 1e-12  # the scale of an all-zero row or input, which then stays zero


def available() -> bool:
    """torch has oneDNN's quantized linear (x86 builds)."""
    return hasattr(torch.ops.onednn, "qlinear_pointwise") and torch.backends.mkldnn.is_available()


class DynamicInt8Linear(nn.Module):
    """`linear` with int8 weights (a scale per output row) and uint8 inputs (a scale and zero point
    per call). Several linears of one input make one product, their outputs side by side: the input
    is quantized and read once. `gelu`: the feed-forward's tanh GELU applied by the product as it
    writes its output, on the float32 sums (one rounding fewer, and no pass of its own)."""

    packed: torch.Tensor  # oneDNN's layout of the (out, in) int8 weight
    scales: torch.Tensor  # (out,) float32
    zero_points: torch.Tensor  # (out,) int64 zeros: the weights are symmetric
    bias: torch.Tensor | None  # (out,) float32

    def __init__(self, *linears: nn.Linear, gelu: bool = False) -> None:
        super().__init__()
        weight = torch.cat([linear.weight.detach().float() for linear in linears])
        scales = weight.abs().amax(dim=1).clamp_min(TINY) / INT8_MAX
        quantized = torch.round(weight / scales[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
        # a linear without a bias adds zeros beside those with one
        biases = [torch.zeros(f.out_features) if f.bias is None else f.bias.detach().float() for f in linears]
        self.register_buffer("packed", torch.ops.onednn.qlinear_prepack(quantized, None))
        self.register_buffer("scales", scales)
        self.register_buffer("zero_points", torch.zeros(len(scales), dtype=torch.long))
        self.register_buffer("bias", None if all(f.bias is None for f in linears) else torch.cat(biases))
        self.post_op, self.algorithm = ("gelu", "tanh") if gelu else ("none", "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        low, high = (float(v) for v in torch.aminmax(rows))
        low, high = min(low, 0.0), max(high, 0.0)  # zero stays exact
        scale = max((high - low) / UINT8_MAX, TINY)
        zero_point = round(-low / scale)
        quantized = (rows * (1 / scale)).round_().add_(zero_point).clamp_(0, UINT8_MAX)
        # through int16: torch's own cast of a float to uint8 is not vectorised (4x as long, torch 2.13)
        quantized = quantized.to(torch.int16).to(torch.uint8)
        out = torch.ops.onednn.qlinear_pointwise(
            quantized, scale, zero_point, self.packed, self.scales, self.zero_points, self.bias,
            1.0, 0, x.dtype, self.post_op, [], self.algorithm,
        )  # fmt: skip
        return out.reshape(*x.shape[:-1], -1)


def int8_projections(dit: DiT) -> DiT:
    """Swap each block's attention and feed-forward projections for int8 ones, in place: q, k and v as
    one product (`Attention.to_qkv`), the feed-forward's first with its GELU."""
    for module in dit.transformer_blocks:
        block = cast(DiTBlock, module)
        attn, ff = block.attn, block.ff
        attn.to_qkv = DynamicInt8Linear(*(cast(nn.Linear, p) for p in (attn.to_q, attn.to_k, attn.to_v)))
        del attn.to_q, attn.to_k, attn.to_v  # their weights are in to_qkv
        attn.to_out = DynamicInt8Linear(cast(nn.Linear, attn.to_out))
        ff.up, ff.activation = DynamicInt8Linear(cast(nn.Linear, ff.up), gelu=True), nn.Identity()
        ff.down = DynamicInt8Linear(cast(nn.Linear, ff.down))
    return dit
