"""Weight-only quantization of a loaded Talker, applied from outside: the network never mentions it.

`quantize(model, "int8" | "int4")` swaps every linear layer for a quantized one in place (the codec
embedding stays, as it is read one row at a time). Both run on torch's own CPU kernels:

- int8: one scale per output row; `torch._weight_int8pack_mm` takes bfloat16 activations.
- int4: groups of `INT4_GROUP` input columns, each with a scale and a zero point (asymmetric, 16
  levels); `torch._weight_int4pack_mm_for_cpu` on the packed weight, bfloat16 activations.

Activations are rounded to bfloat16 on the way in and the result goes back to the caller's dtype.

Both kernels are made for a few rows (the Talker's one-code steps); for a prompt's hundreds of rows
they are 15x slower than a dense bfloat16 matmul on a CPU with bfloat16 matrix instructions
(AMX: 120 ms against 7.7 ms for 570 rows of the 7B Talker's 896x18944 layer, 2 threads of an
Intel Xeon family 6 model 207). With `prompt_copy` a layer also keeps its float weight in bfloat16
and computes inputs of `PROMPT_ROWS` rows or more with it: more exact than the quantized weight,
for 2 bytes per parameter of memory (the plan keeps a copy only where the memory allows it). Those
rows' results stay in bfloat16 (see `_prompt_rows`); fewer rows come back in the caller's dtype.
Which one is faster depends on the CPU's kernels (measured in docs/performance.md: int4 where the CPU has
bfloat16 instructions, int8 on AVX2); the errors against float32 are printed by the tests and the
Talker bench. Off the CPU the weight is dequantized for each call (no GPU runs these: the plan puts
a GPU's Talker in half precision instead).
"""

from __future__ import annotations

from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)
Weights = Literal["int8", "int4"]
INT4_GROUP = 32  # input columns per int4 scale (measured: 128 is no faster here, and less exact)
INT8_INPUTS = 16  # the int8 kernel takes input widths in multiples of this
# From this many rows the bfloat16 copy's matmul is faster (measured, 896x18944, 2 threads: 8 rows
# 1.08 ms against the int4 kernel's 1.63; 4 rows 1.06 against 0.82).
PROMPT_ROWS = 8


class Int8Linear(nn.Module):
    """A weight-only int8 linear layer: int8 weight (out, in) with one float32 scale per output row."""

    weight: torch.Tensor
    scales: torch.Tensor
    scales_bf16: torch.Tensor
    prompt_weight: torch.Tensor | None  # (out, in) bfloat16, with `prompt_copy`

    def __init__(self, linear: nn.Linear, prompt_copy: bool = False) -> None:
        super().__init__()
        self.register_buffer("prompt_weight", _bfloat16_copy(linear) if prompt_copy else None)
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        quantized = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
        self.register_buffer("weight", quantized)
        self.register_buffer("scales", scales)
        self.register_buffer("scales_bf16", scales.to(torch.bfloat16))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    @staticmethod
    def packs(linear: nn.Linear) -> bool:
        """Whether the kernel takes this layer's shape: inputs in 16s (torch 2.13's CPU kernel
        crashes the process on others, e.g. the vision tower's 1176-wide patch embedding)."""
        return linear.in_features % INT8_INPUTS == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if self.prompt_weight is not None and flat.shape[0] >= PROMPT_ROWS:
            return _prompt_rows(flat, self.prompt_weight, self.bias, x)
        elif flat.device.type == "cpu":
            y = torch._weight_int8pack_mm(flat.to(torch.bfloat16), self.weight, self.scales_bf16).to(x.dtype)
        else:
            y = F.linear(flat, self.weight.to(flat.dtype)) * self.scales.to(flat.dtype)
        return _output(y, self.bias, x)


class Int4Linear(nn.Module):
    """A weight-only int4 linear layer: 16 levels per group of INT4_GROUP inputs, each group with its
    own scale and zero point, packed as torch's CPU int4 kernel wants it."""

    packed: torch.Tensor
    scales_and_zeros: torch.Tensor  # (in / INT4_GROUP, out, 2) bfloat16
    prompt_weight: torch.Tensor | None  # (out, in) bfloat16, with `prompt_copy`

    def __init__(self, linear: nn.Linear, prompt_copy: bool = False) -> None:
        super().__init__()
        self.register_buffer("prompt_weight", _bfloat16_copy(linear) if prompt_copy else None)
        weight = linear.weight.detach().float()
        out_features, in_features = weight.shape
        if not self.packs(linear):
            raise ValueError(f"a {out_features}x{in_features} weight does not pack as int4")
        groups = weight.reshape(out_features, in_features // INT4_GROUP, INT4_GROUP)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)
        scales = (high - low).clamp(min=1e-12) / 15
        levels = torch.round((groups - low[..., None]) / scales[..., None]).clamp(0, 15)
        # The kernel computes (level - 8) * scale + zero: the zero is the value of level 8.
        zeros = low + 8 * scales
        self.register_buffer(
            "packed",
            torch._convert_weight_to_int4pack_for_cpu(
                levels.reshape(out_features, in_features).to(torch.int32), 1
            ),
        )
        self.register_buffer(
            "scales_and_zeros", torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous().bfloat16()
        )
        self.in_features, self.out_features = in_features, out_features
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    @staticmethod
    def packs(linear: nn.Linear) -> bool:
        """Whether the kernel takes this layer's shape: whole groups of inputs, outputs in 16s (true
        of every layer of the released Talkers)."""
        return linear.in_features % INT4_GROUP == 0 and linear.out_features % 16 == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if self.prompt_weight is not None and flat.shape[0] >= PROMPT_ROWS:
            return _prompt_rows(flat, self.prompt_weight, self.bias, x)
        elif flat.device.type == "cpu":
            y = torch._weight_int4pack_mm_for_cpu(
                flat.to(torch.bfloat16), self.packed, INT4_GROUP, self.scales_and_zeros
            ).to(x.dtype)
        else:
            y = F.linear(flat, self.dequantized().to(flat.device, flat.dtype))
        return _output(y, self.bias, x)

    def dequantized(self) -> torch.Tensor:
        """The weight (out, in) as the kernel computes with it, float32."""
        eye = torch.eye(self.in_features, dtype=torch.bfloat16)
        columns = torch._weight_int4pack_mm_for_cpu(eye, self.packed, INT4_GROUP, self.scales_and_zeros)
        return columns.float().T


def quantize(model: ModuleT, weights: Weights, prompt_copy: bool = False) -> ModuleT:
    """Replace every linear layer (not the codec embedding) by its weight-only `weights` version, in
    place; a layer that no kernel takes stays as it is."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, quantized(child, weights, prompt_copy))
    return model


def quantized(linear: nn.Linear, weights: Weights, prompt_copy: bool = False) -> nn.Module:
    """`linear` weight-only quantized (an int4 layer whose shape the kernel does not take, as in the
    tiny test model, gets int8; one that the int8 kernel does not take either stays float). With
    `prompt_copy` it keeps a bfloat16 copy for inputs of many rows (see the module)."""
    if weights == "int4" and Int4Linear.packs(linear):
        return Int4Linear(linear, prompt_copy)
    if Int8Linear.packs(linear):
        return Int8Linear(linear, prompt_copy)
    return linear


def _prompt_rows(
    flat: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor
) -> torch.Tensor:
    """Many rows through the bfloat16 copy; the result stays in bfloat16, so that what follows a
    layer (the feed-forward's activation and product, the next layer) works on half the bytes, and
    the caller's float32 residual sum promotes it back. Converting each layer's output back to
    float32 cost more than its matmul (the 18944-wide feed-forward: profiled on 2 threads)."""
    y = F.linear(flat.to(torch.bfloat16), weight, None if bias is None else bias.to(torch.bfloat16))
    return y.reshape(*x.shape[:-1], -1)


def _bfloat16_copy(linear: nn.Linear) -> torch.Tensor:
    return linear.weight.detach().to(torch.bfloat16).contiguous()


def _output(y: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], -1)
