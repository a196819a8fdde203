"""The flow-matching DiT: noisy mel + codes + voice + time -> velocity.

Layout as in the checkpoint (`token2wav.code2wav_dit_model.*`), adapted once at load time
(`weights.py`): the input projection is split by input (so the parts that do not change
during sampling are projected once per utterance), and head 0 of q/k is de-interleaved
(the checkpoint's RoPE layout) so the standard half-split rotation applies.

Attention is block-local (`block_attention`): frames form blocks of `block_size` (24 mel frames, 240 ms); in
most layers a frame sees its own block only, in `look_backward_layers` also the block before
and in `look_ahead_layers` also the block after. Rotary positions (head 0 only) and block
indices are absolute, so a window that starts on a block boundary at frame `first_frame`
computes what the whole utterance computes wherever the window holds the full context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from model.float16 import within_float16
from model.token2wav.speaker_encoder import SpeakerEncoderConfig

TIME_FREQ_DIM = 256
TIME_SCALE = 1000.0
NORM_EPS = 1e-6
MAX_KEPT_TIMES = 64  # time values whose modulations are kept: the reference's RK4 grid has 28


@dataclass(frozen=True)
class DiTConfig:
    """transformers' Qwen2_5OmniDiTConfig fields that the network uses (defaults: the package's)."""

    hidden_size: int = 1024
    num_hidden_layers: int = 22
    num_attention_heads: int = 16
    head_dim: int = 64
    ff_mult: int = 2
    emb_dim: int = 512
    num_embeds: int = 8193
    repeats: int = 2
    mel_dim: int = 80
    block_size: int = 24
    look_ahead_layers: tuple[int, ...] = (10,)
    look_backward_layers: tuple[int, ...] = (0, 20)
    rope_theta: float = 10000.0
    max_position_embeddings: int = 32768
    enc_emb_dim: int = 192
    enc_dim: int = 128
    enc_channels: tuple[int, ...] = (256, 256, 256, 256, 768)
    enc_kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 1)
    enc_dilations: tuple[int, ...] = (1, 2, 3, 4, 1)
    enc_attention_channels: int = 64
    enc_res2net_scale: int = 2
    enc_se_channels: int = 64

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DiTConfig:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known
        }
        rope = raw.get("rope_parameters") or {}
        if "rope_theta" in rope:
            values["rope_theta"] = float(rope["rope_theta"])
        return cls(**values)

    @property
    def speaker_encoder(self) -> SpeakerEncoderConfig:
        return SpeakerEncoderConfig(
            mel_dim=self.mel_dim,
            channels=self.enc_channels,
            kernel_sizes=self.enc_kernel_sizes,
            dilations=self.enc_dilations,
            attention_channels=self.enc_attention_channels,
            res2net_scale=self.enc_res2net_scale,
            se_channels=self.enc_se_channels,
            out_dim=self.enc_dim,
        )

    def span(self, layer: int) -> tuple[int, int]:
        """Blocks before and after its own that a frame of `layer` attends to."""
        return int(layer in self.look_backward_layers), int(layer in self.look_ahead_layers)

    @property
    def num_codes(self) -> int:
        """Rows of the codec table: codes 0..num_embeds (row 0 doubles as the 'dropped code')."""
        return self.num_embeds + 1


@dataclass(frozen=True)
class Conditioning:
    """What stays fixed while the ODE runs over one window, for the conditional and unconditional rows.

    static: (2, frames, hidden): input projection of speaker vector, codes and voice vector, plus bias.
    cos, sin: (frames, head_dim) rotary tables at the window's absolute positions.
    masks: layer index -> (heads x blocks, block_size, span) bool: for each head and block of the
    window (its last block padded to whole), True where a frame of the block may attend to a frame of
    the layer's span of blocks (`block_attention`).
    """

    static: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    masks: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class TimeModulation:
    """What the network computes from the time alone, the same for every window and both rows.

    blocks: per block its `attn_norm` modulations (6 tensors of (1, 1, hidden));
    scale, shift: the output norm's, (1, 1, hidden) each."""

    blocks: tuple[tuple[torch.Tensor, ...], ...]
    scale: torch.Tensor
    shift: torch.Tensor


class TimestepEmbedding(nn.Module):
    """t: (batch,) in [0, 1] -> (batch, hidden): sinusoids (256, scale 1000) -> MLP."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(TIME_FREQ_DIM, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = TIME_FREQ_DIM // 2
        freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
        args = TIME_SCALE * t.unsqueeze(1) * freqs.unsqueeze(0)
        emb = torch.cat((args.sin(), args.cos()), dim=-1).to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(emb)))


class AdaLayerNormZero(nn.Module):
    """SiLU(t) -> 6 modulations (shift, scale, gate for attention and for the MLP)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, hidden * 6)

    def forward(self, t_emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(m.unsqueeze(1) for m in torch.chunk(self.linear(F.silu(t_emb)), 6, dim=1))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    """x: (batch, frames, hidden) -> same; RoPE on head 0 only, as the checkpoint was trained.

    Each frame attends to the frames of its layer's span of blocks (`back` blocks before its own to
    `ahead` after it) where the window's mask allows."""

    def __init__(self, hidden: int, heads: int, head_dim: int, block: int, back: int, ahead: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.block, self.back, self.ahead = block, back, ahead
        # nn.Module: the Fast profile may make them int8 products (int8_dit.py), which read x once for
        # the three in `to_qkv`
        self.to_q: nn.Module = nn.Linear(hidden, inner)
        self.to_k: nn.Module = nn.Linear(hidden, inner)
        self.to_v: nn.Module = nn.Linear(hidden, inner)
        self.to_qkv: nn.Module | None = None
        self.to_out: nn.Module = nn.Linear(inner, hidden)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        batch, frames, _ = x.shape
        projected = (
            (self.to_q(x), self.to_k(x), self.to_v(x)) if self.to_qkv is None else self.to_qkv(x).chunk(3, -1)
        )
        q, k, v = (p.view(batch, frames, self.heads, self.head_dim).transpose(1, 2) for p in projected)
        q0, k0 = q[:, :1], k[:, :1]
        q = torch.cat([q0 * cos + _rotate_half(q0) * sin, q[:, 1:]], dim=1)
        k = torch.cat([k0 * cos + _rotate_half(k0) * sin, k[:, 1:]], dim=1)
        out = block_attention(q, k, v, mask, self.block, self.back, self.ahead)
        return self.to_out(out.transpose(1, 2).reshape(batch, frames, -1))


def block_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, block: int, back: int, ahead: int
) -> torch.Tensor:
    """q, k, v: (batch, heads, frames, head_dim); mask: (heads x blocks, block, span) bool, as
    `DiT.conditioning` makes it -> (batch, heads, frames, head_dim).

    The attention a (frames, frames) mask of the same blocks gives, with the work of the span only:
    each block's queries meet the keys of blocks i - back .. i + ahead (the window's ends filled with
    frames the mask hides), so a long window costs its span per block instead of every frame, and
    the whole utterance no longer costs the square of its length."""
    batch, heads, frames, dim = q.shape
    blocks = -(-frames // block)
    tail = blocks * block - frames
    span = (back + 1 + ahead) * block
    if tail:
        q = F.pad(q, (0, 0, 0, tail))
    # each block's keys and values: a view of the sequence, padded by the span's blocks beyond its ends
    k, v = (
        F.pad(t, (0, 0, back * block, ahead * block + tail))
        .unfold(2, span, block)
        .transpose(-1, -2)
        .reshape(batch, heads * blocks, span, dim)
        for t in (k, v)
    )
    # a mask given for each row runs several times faster than one broadcast over rows (torch 2.13, CPU)
    mask = mask.expand(batch, *mask.shape)
    out = F.scaled_dot_product_attention(q.reshape(batch, heads * blocks, block, dim), k, v, attn_mask=mask)
    return out.reshape(batch, heads, blocks * block, dim)[:, :, :frames]


class FeedForward(nn.Module):
    def __init__(self, hidden: int, mult: int) -> None:
        super().__init__()
        self.up: nn.Module = nn.Linear(hidden, hidden * mult)  # nn.Module: as Attention's projections
        self.activation: nn.Module = nn.GELU(approximate="tanh")  # an int8 `up` may apply it itself
        self.down: nn.Module = nn.Linear(hidden * mult, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.activation(self.up(x)))


class DiTBlock(nn.Module):
    """AdaLN-zero transformer block: gated attention then gated MLP, both modulated by time."""

    def __init__(self, cfg: DiTConfig, layer: int) -> None:
        super().__init__()
        back, ahead = cfg.span(layer)
        self.attn_norm = AdaLayerNormZero(cfg.hidden_size)
        self.attn = Attention(
            cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim, cfg.block_size, back, ahead
        )
        self.ff = FeedForward(cfg.hidden_size, cfg.ff_mult)

    def forward(
        self,
        x: torch.Tensor,
        modulation: tuple[torch.Tensor, ...],
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """modulation: this block's `attn_norm` of the time embedding (`TimeModulation.blocks`)."""
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = modulation
        norm = F.layer_norm(x, x.shape[-1:], eps=NORM_EPS) * (1 + scale_a) + shift_a
        x = within_float16(x + gate_a * self.attn(norm, cos, sin, mask))
        norm = F.layer_norm(x, x.shape[-1:], eps=NORM_EPS) * (1 + scale_f) + shift_f
        return within_float16(x + gate_f * self.ff(norm))


class DiT(nn.Module):
    """Velocity network. See `conditioning` and `forward` for the shapes."""

    inv_freq: torch.Tensor  # (head_dim / 2,) rotary frequencies

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hidden = cfg.hidden_size
        self.time_embed = TimestepEmbedding(hidden)
        self.codec_embed = nn.Embedding(cfg.num_codes, cfg.emb_dim)
        self.input_x = nn.Linear(cfg.mel_dim, hidden)
        self.input_speaker = nn.Linear(cfg.enc_dim, hidden, bias=False)
        self.input_code = nn.Linear(cfg.emb_dim, hidden, bias=False)
        self.input_voice = nn.Linear(cfg.enc_emb_dim, hidden, bias=False)
        self.transformer_blocks = nn.ModuleList(DiTBlock(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm_out = nn.Linear(hidden, hidden * 2)
        self.proj_out = nn.Linear(hidden, cfg.mel_dim)
        inv_freq = 1.0 / (
            cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float) / cfg.head_dim)
        )
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._modulations: dict[float, TimeModulation] = {}  # see `time_modulation`

    def _apply(self, fn: Any, recurse: bool = True) -> DiT:
        self._modulations.clear()  # a new dtype or device: kept modulations no longer apply
        return super()._apply(fn, recurse)

    def conditioning(
        self,
        codes: torch.Tensor,
        speaker: torch.Tensor,
        voice: torch.Tensor,
        first_frame: int,
        real_codes: int | None = None,
    ) -> Conditioning:
        """codes: (n_codes,) int64; speaker: (2, enc_dim) ECAPA outputs for the conditional and
        unconditional rows; voice: (enc_emb_dim,); first_frame: absolute mel frame of codes[0]
        (a multiple of block_size); real_codes: with fewer than n_codes, the codes after them are
        padding (a window made to a fixed shape), which real frames never attend to (see `block_masks`)."""
        cfg = self.cfg
        frames = codes.shape[0] * cfg.repeats
        code_emb = self.codec_embed(torch.stack([codes, torch.zeros_like(codes)]))
        code_emb = code_emb.repeat_interleave(cfg.repeats, dim=1)  # (2, frames, emb_dim)
        voice_rows = torch.stack([voice, torch.zeros_like(voice)])  # (2, enc_emb_dim)
        static = (
            self.input_code(code_emb) + (self.input_speaker(speaker) + self.input_voice(voice_rows))[:, None]
        )
        positions = torch.arange(first_frame, first_frame + frames, device=codes.device, dtype=torch.float)
        angles = positions[:, None] * self.inv_freq[None, :]
        angles = torch.cat([angles, angles], dim=-1)
        dtype = static.dtype
        return Conditioning(
            static=static,
            cos=angles.cos().to(dtype),
            sin=angles.sin().to(dtype),
            masks=self.block_masks(
                first_frame, frames, codes.device, frames if real_codes is None else real_codes * cfg.repeats
            ),
        )

    def block_masks(
        self, first_frame: int, frames: int, device: torch.device, real_frames: int
    ) -> tuple[torch.Tensor, ...]:
        """Each layer's `block_attention` mask: a frame sees the frames of its layer's span of blocks
        that are in the window and of its own kind: real (before `real_frames`), padding (a window made
        to a fixed shape: real and padded frames never attend to each other, so the real frames compute
        what they would without it, every other operation being per frame), or the fill that makes the
        last block whole. Each frame sees at least itself (no empty row)."""
        cfg = self.cfg
        size = cfg.block_size
        if first_frame % size:
            raise ValueError(f"a DiT window starts on a block boundary, not at frame {first_frame}")
        blocks = -(-frames // size)
        index = torch.arange(blocks * size, device=device)
        kind = (index >= real_frames).long() + (index >= frames).long()
        query_kind = kind.view(blocks, size, 1)
        cache: dict[tuple[int, int], torch.Tensor] = {}
        masks = []
        for layer in range(cfg.num_hidden_layers):
            span = cfg.span(layer)
            if span not in cache:
                back, ahead = span
                first_key = (torch.arange(blocks, device=device) - back) * size  # (blocks,)
                keys = first_key[:, None] + torch.arange((back + 1 + ahead) * size, device=device)
                inside = (keys >= 0) & (keys < blocks * size)
                key_kind = kind[keys.clamp(0, blocks * size - 1)]
                allowed = inside[:, None, :] & (key_kind[:, None, :] == query_kind)
                cache[span] = allowed.repeat(cfg.num_attention_heads, 1, 1)
            masks.append(cache[span])
        return tuple(masks)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning, guided: bool = True
    ) -> torch.Tensor:
        """x: (frames, mel_dim) noisy mel; t: () time in [0, 1]. Returns the velocity for the
        conditional and (if guided) unconditional rows: (2 or 1, frames, mel_dim)."""
        time = self.time_modulation(t)
        h = self.input_x(x).unsqueeze(0) + cond.static[: 2 if guided else 1]
        for block, modulation, mask in zip(self.transformer_blocks, time.blocks, cond.masks, strict=True):
            h = block(h, modulation, cond.cos, cond.sin, mask)
        h = F.layer_norm(h, h.shape[-1:], eps=NORM_EPS) * (1 + time.scale) + time.shift
        return self.proj_out(h)

    def time_modulation(self, t: torch.Tensor) -> TimeModulation:
        """t: () time in [0, 1] -> what every block takes from it.

        On the CPU it is kept per time value: the sampler's grid is the same in every window, and
        these modulations (22 x 6 x hidden^2 weights, 139 M of the released 334 M) are nearly half
        of what an evaluation reads from memory, which is what a window's few rows of frames wait
        on. Kept values are the very ones computed (nothing changes but when); the weights are
        fixed once loaded, and a move to another dtype or device forgets them (`_apply`). On a GPU
        they are computed each time: a CUDA graph replays them, and reading t's value would stop
        its capture."""
        if t.device.type != "cpu":
            return self._time_modulation(t)
        key = float(t)
        if key not in self._modulations:
            if len(self._modulations) >= MAX_KEPT_TIMES:
                self._modulations.clear()
            self._modulations[key] = self._time_modulation(t)
        return self._modulations[key]

    def _time_modulation(self, t: torch.Tensor) -> TimeModulation:
        t_emb = self.time_embed(t.reshape(1))  # (1, hidden), shared by both rows
        scale, shift = torch.chunk(self.norm_out(F.silu(t_emb)), 2, dim=1)
        blocks = tuple(cast(DiTBlock, block).attn_norm(t_emb) for block in self.transformer_blocks)
        return TimeModulation(blocks, scale[:, None], shift[:, None])
