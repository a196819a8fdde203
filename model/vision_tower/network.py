"""Qwen2.5-Omni's vision tower in PyTorch: image patches to the Thinker's input embeddings.

The reference is transformers' `Qwen2_5OmniVisionEncoder`: a 14x14x2 patch embedding (an image is
two identical frames), blocks of RMSNorm, attention with a 2D rotary embedding (height and width
ids, each on a quarter of the head) and a SiLU-gated MLP; attention is over windows of 4x4 merged
blocks, except in the `fullatt_block_indexes` blocks, which see the whole frame; then the merger
(RMSNorm, 2x2 patches concatenated, an MLP with GELU) into the Thinker's width.

Tokens are kept in window order between the blocks (what the reference does), so that each window
is a contiguous run; windows of the same length are attended to as one batch.

Shapes: patches (n, 3 * 2 * 14 * 14) in the processor's order (merged 2x2 blocks in raster order,
the four patches of each block in raster order) -> embeddings (n / 4, out_width), in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ROPE_THETA = 10000.0  # the reference's vision rotary base
WINDOW_PIXELS = 112  # a window's side (the released configs' window_size; clip.cpp fixes it too)


@dataclass(frozen=True)
class VisionConfig:
    depth: int  # blocks
    width: int  # hidden size
    mlp_width: int  # intermediate size
    heads: int
    out_width: int  # the Thinker's width
    full_attention: tuple[int, ...]  # blocks that attend across the whole frame
    patch: int = 14  # pixels per side
    frames: int = 2  # temporal patch
    merge: int = 2  # patches per side merged into one embedding
    channels: int = 3
    norm_eps: float = 1e-6
    window: int = WINDOW_PIXELS

    @property
    def patch_values(self) -> int:
        """Values in one patch: channels x frames x patch x patch (1176)."""
        return self.channels * self.frames * self.patch * self.patch

    @property
    def window_units(self) -> int:
        """Merged blocks per window side (4)."""
        return self.window // self.merge // self.patch


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class Attention(nn.Module):
    """Attention within groups of tokens; q, k and v in one matrix (fused at load)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], groups: list[torch.Tensor]
    ) -> torch.Tensor:
        """x (n, width); rope: cos, sin (n, head_dim); groups: (windows, length) token indices each."""
        n = x.shape[0]
        q, k, v = self.qkv(x).view(n, 3, self.heads, -1).unbind(1)  # each (n, heads, head_dim)
        q, k = _rotate(q, *rope), _rotate(k, *rope)
        out = torch.empty_like(q)
        for index in groups:
            attended = F.scaled_dot_product_attention(
                q[index].transpose(1, 2), k[index].transpose(1, 2), v[index].transpose(1, 2)
            )  # (windows, heads, length, head_dim)
            out[index] = attended.transpose(1, 2)
        return self.proj(out.reshape(n, -1))


class MLP(nn.Module):
    """SiLU-gated: gate and up in one matrix (fused at load)."""

    def __init__(self, width: int, mlp_width: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(width, 2 * mlp_width)
        self.down = nn.Linear(mlp_width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(config.width, config.norm_eps)
        self.attn = Attention(config.width, config.heads)
        self.norm2 = RMSNorm(config.width, config.norm_eps)
        self.mlp = MLP(config.width, config.mlp_width)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], groups: list[torch.Tensor]
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope, groups)
        return x + self.mlp(self.norm2(x))


class Merger(nn.Module):
    """RMSNorm, the 2x2 patches of a block side by side, an MLP into the Thinker's width."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        merged = config.width * config.merge**2
        self.norm = RMSNorm(config.width, config.norm_eps)
        self.fc1 = nn.Linear(merged, merged)
        self.fc2 = nn.Linear(merged, config.out_width)
        self.merged = merged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x).view(-1, self.merged))))


class VisionTower(nn.Module):
    inv_freq: torch.Tensor  # (head_dim / 4,) the rotary frequencies of each axis

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = nn.Linear(config.patch_values, config.width, bias=False)  # the 3-D convolution
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.merger = Merger(config)
        self.register_buffer("inv_freq", rotary_frequencies(config), persistent=False)

    def forward(self, patches: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """patches (rows * cols, patch_values) of one frame pair, rows and cols in patches (even)
        -> embeddings (rows / 2 * cols / 2, out_width), in raster order of the merged blocks."""
        c = self.config
        unit = c.merge**2
        order, windows = window_order(rows // c.merge, cols // c.merge, c.window_units)
        x = self.patch_embed(patches.to(self.patch_embed.weight.dtype))
        x = x.view(-1, unit, c.width)[order].reshape(-1, c.width)
        positions = patch_positions(rows, cols, c.merge).view(-1, unit, 2)[order].reshape(-1, 2)
        angles = (positions[..., None].float() * self.inv_freq).flatten(1)  # (n, head_dim / 2): h, then w
        angles = torch.cat([angles, angles], dim=-1)
        rope = (angles.cos(), angles.sin())
        whole = [torch.arange(x.shape[0])[None]]
        windowed = length_groups([w * unit for w in windows])
        for i, block in enumerate(self.blocks):
            x = block(x, rope, whole if i in c.full_attention else windowed)
        return self.merger(x)[torch.argsort(order)]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The rotary embedding, in float32 as the reference computes it: x (n, heads, head_dim)."""
    f = x.float()
    half = f.shape[-1] // 2
    rotated = torch.cat([-f[..., half:], f[..., :half]], dim=-1)
    return (f * cos[:, None] + rotated * sin[:, None]).to(x.dtype)


def patch_positions(rows: int, cols: int, merge: int) -> torch.Tensor:
    """(rows * cols, 2) long: each patch's (row, column), in the processor's block-major order."""
    h, w = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    shape = (rows // merge, merge, cols // merge, merge)
    return torch.stack(
        [h.reshape(shape).transpose(1, 2).flatten(), w.reshape(shape).transpose(1, 2).flatten()], 1
    )


def window_order(rows: int, cols: int, side: int) -> tuple[torch.Tensor, list[int]]:
    """Merged blocks (rows x cols, raster order) regrouped by window of side x side blocks: the
    blocks' indices in window order, and each window's block count (edge windows are smaller)."""
    blocks = torch.arange(rows * cols).view(rows, cols)
    windows = [
        blocks[top : top + side, left : left + side].flatten()
        for top in range(0, rows, side)
        for left in range(0, cols, side)
    ]
    return torch.cat(windows), [len(w) for w in windows]


def length_groups(lengths: list[int]) -> list[torch.Tensor]:
    """Consecutive runs of `lengths` tokens, grouped by length: one (runs, length) index tensor per
    distinct length, so that equal windows are attended to as one batch."""
    starts = torch.tensor([0, *lengths[:-1]]).cumsum(0)
    sizes = torch.tensor(lengths)
    return [starts[sizes == n][:, None] + torch.arange(n) for n in sorted(set(lengths))]


def rotary_frequencies(config: VisionConfig) -> torch.Tensor:
    """The 2-D rotary embedding's inverse frequencies (head_dim / 4,): a buffer computed, not stored."""
    head_dim = config.width // config.heads
    quarter = torch.arange(0, head_dim // 2, 2, dtype=torch.float32) / (head_dim // 2)
    return 1.0 / ROPE_THETA**quarter
