"""Weight-only quantized layers (model/talker/quantize.py) and the bfloat16 copy they may keep for
prompts: many rows go through the copy, a few through the int kernels, and a prompt decoded with the
copy is closer to float32 than one decoded with the quantized weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.talker.quantize import PROMPT_ROWS, Int4Linear, Int8Linear, quantize


@pytest.fixture
def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(64, 48)  # int4 takes it: inputs in groups of 32, outputs in 16s


@pytest.mark.parametrize("kind", [Int8Linear, Int4Linear])
def test_few_rows_use_the_int_kernel_as_without_a_copy(linear, kind):
    x = torch.randn(PROMPT_ROWS - 1, 64)
    with_copy, without = kind(linear, prompt_copy=True), kind(linear)
    assert with_copy.prompt_weight is not None and without.prompt_weight is None
    assert torch.equal(with_copy(x), without(x))
    assert with_copy(x).dtype == torch.float32


@pytest.mark.parametrize("kind", [Int8Linear, Int4Linear])
def test_prompt_rows_use_the_bfloat16_copy_and_err_less_than_the_quantized_weight(linear, kind):
    x = torch.randn(3, PROMPT_ROWS, 64)
    exact = linear(x)
    with_copy, without = kind(linear, prompt_copy=True)(x), kind(linear)(x)
    bf16 = linear.weight.bfloat16()
    assert torch.equal(with_copy, F.linear(x.bfloat16(), bf16, linear.bias.bfloat16()))
    assert with_copy.dtype == torch.bfloat16 and with_copy.shape == (3, PROMPT_ROWS, 48)
    copy_error = (with_copy.float() - exact).abs().max() / exact.abs().max()
    quantized_error = (without - exact).abs().max() / exact.abs().max()
    print(f"\n{kind.__name__}: prompt rows' error, copy {copy_error:.2e}, quantized {quantized_error:.2e}")
    # bfloat16 keeps 8 significant bits: a 64-term sum of rounded products errs by a few 2^-8.
    assert 0 < copy_error < 0.02
    assert copy_error < quantized_error


def test_quantize_gives_every_linear_layer_a_copy_only_when_asked(linear):
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 48))
    copied = quantize(model, "int4", prompt_copy=True)
    layers = [m for m in copied if isinstance(m, Int4Linear)]
    assert len(layers) == 2 and all(m.prompt_weight is not None for m in layers)
    plain = quantize(nn.Sequential(nn.Linear(64, 64)), "int4")
    assert plain[0].prompt_weight is None
