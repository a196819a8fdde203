"""The Talker's network: a Qwen2-style decoder (GQA, SwiGLU, 3-section M-RoPE) in plain PyTorch.

It reads, per position, a vector in the Thinker's width (the Thinker's final hidden state plus its
input embedding, or a codec embedding plus that), projects it down by `proj` and writes codec
logits. The KV cache is allocated once (`setup_caches`) and written in place at the given slots,
so the one-token step has static shapes and can be compiled. Reads top-down: the config, the
modules from the outside in, then small pure functions (RoPE, positions).

Weights come from `weights.py`; quantization (`quantize.py`) swaps modules from outside.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.float16 import within_float16


@dataclass(frozen=True)
class TalkerConfig:
    """transformers' Qwen2_5OmniTalkerConfig fields that the network uses (defaults: the package's,
    which are Thinker-sized; the released checkpoints' configs set every one)."""

    embedding_size: int = 3584  # the Thinker's width: inputs and codec embeddings
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    head_dim: int = 128
    vocab_size: int = 8448
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    mrope_section: tuple[int, int, int] = (16, 24, 24)  # rotary frequency pairs on time, height, width

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TalkerConfig:
        """From the checkpoint's `talker_config`; missing fields take transformers' defaults."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: v for k, v in raw.items() if k in known and v is not None}
        rope = raw.get("rope_parameters") or {}
        legacy = raw.get("rope_scaling") or {}  # configs written by transformers 4.x
        if "rope_theta" in rope:
            values["rope_theta"] = rope["rope_theta"]
        section = rope.get("mrope_section") or legacy.get("mrope_section")
        if section:
            values["mrope_section"] = tuple(int(s) for s in section)
        return cls(**values)


# -- the network, outside in ----------------------------------------------------------------


class TalkerModel(nn.Module):
    """Thinker-width inputs (T, embedding_size) at cache slots `index` -> codec logits (T, vocab), float32."""

    inv_freq: torch.Tensor  # (head_dim/2,) float32
    rope_axis: torch.Tensor  # (head_dim/2,) which position (0 time, 1 height, 2 width) turns each pair

    def __init__(self, config: TalkerConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.embedding_size, config.hidden_size)
        # Codec ids, embedded in the Thinker's width.
        self.embed = nn.Embedding(config.vocab_size, config.embedding_size)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.max_positions = 0

    def setup_caches(self, max_positions: int) -> None:
        """Allocate the KV cache (once) and the rotary tables on the weights' device and dtype."""
        param = self.embed.weight  # never quantized
        c = self.config
        self.max_positions = max_positions
        for layer in cast(Iterable[Block], self.layers):
            layer.attention.cache = KVCache(
                c.num_key_value_heads, max_positions, c.head_dim, param.device, param.dtype
            )
        half = c.head_dim // 2
        if sum(c.mrope_section) != half:
            raise ValueError(f"mrope_section {c.mrope_section} must add up to head_dim/2 = {half}")
        self.register_buffer(
            "inv_freq", rope_frequencies(c.head_dim, c.rope_theta).to(param.device), persistent=False
        )
        axis = torch.repeat_interleave(torch.arange(3), torch.tensor(c.mrope_section))
        self.register_buffer("rope_axis", axis.to(param.device), persistent=False)

    def forward(
        self, x: torch.Tensor, index: torch.Tensor, positions: torch.Tensor, span: int
    ) -> torch.Tensor:
        """x: (T, embedding_size); index: (T,) cache slots; positions: (3, T) M-RoPE ids.

        Attention sees cache slots [0, span) up to each query's own slot; span must cover them all.
        """
        cos, sin = rope_cos_sin(positions, self.inv_freq, self.rope_axis, x.dtype)
        mask = torch.arange(span, device=x.device)[None, :] <= index[:, None]  # (T, span)
        h = self.proj(x)
        for layer in self.layers:
            h = layer(h, cos, sin, index, mask)
        return self.head(self.norm(h)).float()


class Block(nn.Module):
    def __init__(self, config: TalkerConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = Attention(config)
        self.mlp_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = FeedForward(config)

    def forward(
        self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, index: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        h = within_float16(h + self.attention(self.attention_norm(h), cos, sin, index, mask))
        return within_float16(h + self.mlp(self.mlp_norm(h)))


class Attention(nn.Module):
    cache: KVCache

    def __init__(self, config: TalkerConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q = nn.Linear(config.hidden_size, self.n_heads * self.head_dim)
        self.k = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim)
        self.v = nn.Linear(config.hidden_size, self.n_kv_heads * self.head_dim)
        self.o = nn.Linear(self.n_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, index: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """x: (T, hidden); cos, sin: (T, head_dim); index: (T,); mask: (T, span) -> (T, hidden)."""
        n = x.shape[0]
        q = self.q(x).view(n, self.n_heads, self.head_dim).transpose(0, 1)
        k = self.k(x).view(n, self.n_kv_heads, self.head_dim).transpose(0, 1)
        v = self.v(x).view(n, self.n_kv_heads, self.head_dim).transpose(0, 1)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        keys, values = self.cache.update(index, k, v, mask.shape[1])
        y = F.scaled_dot_product_attention(q[None], keys[None], values[None], attn_mask=mask, enable_gqa=True)
        return self.o(y[0].transpose(0, 1).reshape(n, -1))


class KVCache(nn.Module):
    """Keys and values (n_kv_heads, max_positions, head_dim), written in place at the given slots."""

    k: torch.Tensor
    v: torch.Tensor

    def __init__(
        self, n_kv_heads: int, max_positions: int, head_dim: int, device: torch.device, dtype: torch.dtype
    ):
        super().__init__()
        shape = (n_kv_heads, max_positions, head_dim)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    def update(
        self, index: torch.Tensor, k: torch.Tensor, v: torch.Tensor, span: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v: (n_kv_heads, T, head_dim) for slots `index` (T,) -> keys and values of slots [0, span).

        They are stored in the cache's dtype (a quantized layer's prompt rows come in bfloat16)."""
        self.k.index_copy_(1, index, k.to(self.k.dtype))
        self.v.index_copy_(1, index, v.to(self.v.dtype))
        return self.k[:, :span], self.v[:, :span]


class FeedForward(nn.Module):
    def __init__(self, config: TalkerConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class RMSNorm(nn.Module):
    """As Qwen2's: normalised in float32, cast back, then scaled."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


# -- small pure functions --------------------------------------------------------------------


def rope_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """Inverse frequencies (head_dim/2,), float32, computed as transformers does."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))


def rope_cos_sin(
    positions: torch.Tensor, inv_freq: torch.Tensor, axis: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """M-RoPE tables (T, head_dim): frequency pair i turns with the position of axis[i] (time, height, width).

    positions: (3, T); inv_freq, axis: (head_dim/2,). Computed in float32, then cast to `dtype`.
    """
    angles = positions[axis].T.float() * inv_freq  # (T, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (heads, T, head_dim), rotated by half-split pairs."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


def talker_positions(prompt_positions: np.ndarray, length: int) -> torch.Tensor:
    """M-RoPE ids (3, length) of the Talker's positions, the prompt's first.

    prompt_positions: (3, L), the Thinker's positions of its prompt. The reference
    computes the Talker's positions with its `get_rope_index` over the Thinker's
    prompt ids; for text (and audio, whose ids are sequential) that is
    0..L-1 on all three axes, exactly what the Thinker gives. Everything after the
    prompt (voice text-bos, the reply) is text: the same id on all three axes,
    counting on from one past the prompt's largest id. Media prompts (images,
    video, audio in video) pass their own 3-D ids through here once the
    perception issue makes the Thinker compute them as the reference does.
    """
    prompt = torch.as_tensor(np.asarray(prompt_positions, dtype=np.int64))
    start = int(prompt.max()) + 1 if prompt.numel() else 0
    text = torch.arange(start, start + length - prompt.shape[1]).expand(3, -1)
    return torch.cat([prompt, text], dim=1)
