"""float16 on GPUs without bfloat16 (CUDA before Ampere, MPS), run on the CPU's float16 kernels: a
residual stream pushed past float16's range stays finite in the Talker and the DiT, and logits that
are not finite say what to do instead of blaming the model's files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.errors import OmnideskError
from model.files.bundle import Bundle
from model.float16 import FLOAT16_EDGE, within_float16
from model.pipeline.stages import failure_message
from model.talker import SpeechOptions, Talker
from model.token2wav.synthesizer import Token2Wav
from model.voices import load_voices
from tests.model.test_talker import random_states

GREEDY_FEW = SpeechOptions(max_codes=8)


MASSIVE = 6e4  # a residual branch's output near float16's edge: two of them sum past it


def massive(module: torch.nn.Module) -> None:
    """`module`'s output (a residual branch) replaced by MASSIVE everywhere, as the few channels of a
    transformer's hidden state that carry huge values make it."""
    module.register_forward_hook(lambda module, inputs, output: torch.full_like(output, MASSIVE))


@pytest.fixture
def half_talker(tiny_bundle: Bundle) -> Talker:
    width = tiny_bundle.config["thinker_config"]["text_config"]["hidden_size"]
    rows = np.random.default_rng(0).standard_normal((1000, width)).astype(np.float32)
    return Talker.load(tiny_bundle, lambda ids: rows[list(ids)], dtype=torch.float16, max_positions=256)


def test_within_float16_changes_only_what_is_out_of_range():
    h = torch.tensor([1.0, -float("inf"), float("inf"), 60000.0], dtype=torch.float16)
    edge = torch.tensor(FLOAT16_EDGE, dtype=torch.float16).item()  # 64504 is 64512 in float16
    assert within_float16(h).tolist() == [1.0, -edge, edge, 60000.0]
    same = torch.tensor([1e6], dtype=torch.bfloat16)
    assert within_float16(same) is same


def test_a_talker_whose_residual_overflows_float16_still_speaks(half_talker: Talker):
    massive(half_talker.model.layers[0].attention)
    massive(half_talker.model.layers[0].mlp)
    prompt, reply = random_states(half_talker.model.config.embedding_size)
    steps = list(half_talker.steps([prompt, *reply], GREEDY_FEW))
    assert steps and all(bool(torch.isfinite(step.logits).all()) for step in steps)


def test_a_dit_whose_residual_overflows_float16_still_makes_a_finite_mel(tiny_bundle: Bundle):
    half = Token2Wav.load(tiny_bundle, dtype=torch.float16)
    block = half.dit.transformer_blocks[0]
    massive(block.attn)
    massive(block.ff)
    # gates of 1, so that each branch adds all of its output to the residual
    block.attn_norm.register_forward_hook(
        lambda module, inputs, output: tuple(
            torch.ones_like(o) if i in (2, 5) else o for i, o in enumerate(output)
        )
    )
    mel = half.mel(torch.arange(24) % 100, load_voices(tiny_bundle)["Chelsie"], seed=1)
    assert bool(torch.isfinite(mel).all())


def test_logits_that_are_not_finite_say_what_to_do(half_talker: Talker, tiny_bundle: Bundle, monkeypatch):
    head = half_talker.model.head
    monkeypatch.setattr(head, "forward", lambda h: torch.nn.Linear.forward(head, h) * float("nan"))
    prompt, reply = random_states(half_talker.model.config.embedding_size)
    with pytest.raises(OmnideskError) as raised:
        list(half_talker.steps([prompt, *reply], GREEDY_FEW))
    said = failure_message(raised.value, tiny_bundle)
    assert "overflowed float16" in said and "--speech-device cpu" in said and "damaged" not in said
