"""Weight-only quantization of a loaded Talker, applied from outside: the network never mentions it.

`quantize_int8` swaps every linear layer for an `Int8Linear` in place (the codec embedding stays).
"""

from __future__ import annotations

from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class Int8Linear(nn.Module):
    """A weight-only int8 linear layer: int8 weight (out, in) with one float32 scale per output row.

    On the CPU a few rows (decode) go through torch's int8 kernel, which is fast with bfloat16
    activations; more rows (prefill) and other devices use the dequantized weight.
    """

    weight: torch.Tensor
    scales: torch.Tensor
    scales_bf16: torch.Tensor

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        quantized = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
        self.register_buffer("weight", quantized)
        self.register_buffer("scales", scales)
        self.register_buffer("scales_bf16", scales.to(torch.bfloat16))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.device.type == "cpu" and flat.shape[0] <= 4:
            y = torch._weight_int8pack_mm(flat.to(torch.bfloat16), self.weight, self.scales_bf16).to(x.dtype)
        else:
            y = F.linear(flat, self.weight.to(flat.dtype)) * self.scales.to(flat.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1)


def quantize_int8(model: ModuleT) -> ModuleT:
    """Replace every linear layer (not the codec embedding) by its weight-only int8 version, in place."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child))
    return model
