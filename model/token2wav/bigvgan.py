"""BigVGAN vocoder: log-amplitude mel (80 bins, 100 frames/s) -> 24 kHz waveform, 240 samples per frame.

Layout as in the checkpoint (`token2wav.code2wav_bigvgan_model.*`, plain weights, no weight
norm). Every activation is an anti-aliased SnakeBeta: 2x Kaiser-sinc upsampling (12 taps,
replicate padding), x + sin^2(alpha x) / beta, 2x downsampling. All convolutions are
symmetric, so an output sample depends on mel frames on both sides: `receptive_field_frames`
bounds how many, which is what a chunked run needs as context to equal a whole run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from model.token2wav.fused_snake import FusedSnake

MEL_FRAME_RATE = 100  # mel frames per second
MIN_DB, DB_OFFSET = -115.0, 20.0  # the mel's dB floor and offset, as the checkpoint was trained
AA_RATIO, AA_TAPS = 2, 12  # anti-aliasing: 2x oversampling, 12-tap Kaiser-sinc filters
SNAKE_EPS = 1e-9


@dataclass(frozen=True)
class BigVGANConfig:
    """transformers' Qwen2_5OmniBigVGANConfig (defaults: the package's)."""

    mel_dim: int = 80
    upsample_initial_channel: int = 1536
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_rates: tuple[int, ...] = (5, 3, 2, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (11, 7, 4, 4, 4, 4)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BigVGANConfig:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: v for k, v in raw.items() if k in known}
        for key, value in values.items():
            if isinstance(value, list):
                values[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        return cls(**values)

    @property
    def hop(self) -> int:
        """Waveform samples per mel frame (240)."""
        return math.prod(self.upsample_rates)


def kaiser_sinc_filter(cutoff: float, half_width: float, taps: int) -> torch.Tensor:
    """(taps,) low-pass filter, unit DC gain (the reference's kaiser_sinc_filter1d, even taps)."""
    half = taps // 2
    attenuation = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(taps, beta=beta, periodic=False, dtype=torch.float32)
    time = torch.arange(-half, half) + 0.5
    filt = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return filt / filt.sum()


def anti_aliasing_filter() -> torch.Tensor:
    """(1, 1, AA_TAPS): the activations' up- and down-sampling filter (BigVGAN's `aa_filter`)."""
    return kaiser_sinc_filter(0.5 / AA_RATIO, 0.6 / AA_RATIO, AA_TAPS).view(1, 1, -1)


def snake_factors(log_alpha: torch.Tensor, log_beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SnakeBeta's alpha and 1 / beta, (channels,), from the logs the checkpoint stores."""
    return torch.exp(log_alpha), 1.0 / (torch.exp(log_beta) + SNAKE_EPS)


# The up-sampler's output is cropped by as many samples on each side (conv_transpose's `padding`).
AA_PAD = AA_TAPS // AA_RATIO - 1
AA_CROP = AA_PAD * AA_RATIO + (AA_TAPS - AA_RATIO) // 2
assert AA_CROP == AA_PAD * AA_RATIO + (AA_TAPS - AA_RATIO + 1) // 2, "an even crop"


class AntiAliasedSnake(nn.Module):
    """x: (batch, channels, 1, samples) -> same (`BigVGAN`'s layout). alpha, beta are stored as logs."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.fused: FusedSnake | None = None  # the native kernel, where BigVGAN.fuse_activations set it

    def forward(self, x: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
        if self.fused is not None and self.fused.handles(x):
            return self.fused(x, filt, self.alpha, self.beta)
        if x.dtype == torch.bfloat16 and x.device.type == "cpu":
            # A CPU's depthwise filters in bfloat16 leave oneDNN's fast path: in float32 the
            # activation takes less than half the time, and it rounds less (docs/performance.md).
            return self._snake(x.float(), filt, self.alpha.float(), self.beta.float()).to(x.dtype)
        return self._snake(x, filt, self.alpha, self.beta)

    @staticmethod
    def _snake(
        x: torch.Tensor, filt: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor
    ) -> torch.Tensor:
        channels = x.shape[1]
        kernel = filt.to(x.dtype).view(1, 1, 1, -1).expand(channels, 1, 1, -1)
        # The reference scales the up-sampled signal by AA_RATIO, a power of two: in the kernel, the
        # same values, with no pass over the signal. The crop is conv_transpose's padding.
        up = F.conv_transpose2d(
            F.pad(x, (AA_PAD, AA_PAD, 0, 0), mode="replicate"),
            AA_RATIO * kernel,
            stride=(1, AA_RATIO),
            padding=(0, AA_CROP),
            groups=channels,
        )
        alpha, inv_beta = (f[None, :, None, None] for f in snake_factors(log_alpha, log_beta))
        wave = up * alpha  # up + sin^2(up * alpha) / beta, in the reference's order, in place
        up.add_(wave.sin_().pow_(2).mul_(inv_beta))
        down = F.pad(up, (AA_TAPS // 2 - 1, AA_TAPS // 2, 0, 0), mode="replicate")
        return F.conv2d(down, kernel, stride=(1, AA_RATIO), groups=channels)


def conv(layer: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """`layer` on x: (batch, channels, 1, samples), as the 2-D convolution of height 1 it is."""
    return F.conv2d(
        x,
        layer.weight.unsqueeze(2),
        layer.bias,
        stride=(1, layer.stride[0]),
        padding=(0, cast(int, layer.padding[0])),
        dilation=(1, layer.dilation[0]),
    )


def conv_transpose(layer: nn.ConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    """`layer` on x: (batch, channels, 1, samples), as a 2-D transposed convolution of height 1."""
    return F.conv_transpose2d(
        x,
        layer.weight.unsqueeze(2),
        layer.bias,
        stride=(1, layer.stride[0]),
        padding=(0, cast(int, layer.padding[0])),
    )


class AMPBlock(nn.Module):
    """Three (snake, dilated conv, snake, conv) residual units. x: (batch, channels, 1, samples)."""

    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=d * (kernel - 1) // 2)
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2) for _ in dilations
        )
        self.activations = nn.ModuleList(AntiAliasedSnake(channels) for _ in range(2 * len(dilations)))

    def forward(self, x: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
        for i, (conv1, conv2) in enumerate(zip(self.convs1, self.convs2, strict=True)):
            y = conv(cast(nn.Conv1d, conv1), self.activations[2 * i](x, filt))
            x = x + conv(cast(nn.Conv1d, conv2), self.activations[2 * i + 1](y, filt))
        return x


def mel_to_input(mel: torch.Tensor) -> torch.Tensor:
    """Log-amplitude mel -> the [-1, 1] dB scale the first conv expects (same shape)."""
    min_level = torch.exp(torch.tensor(MIN_DB / 20.0 * math.log(10), device=mel.device, dtype=mel.dtype))
    db = 20 * torch.log10(torch.clamp(torch.exp(mel), min=min_level)) - DB_OFFSET
    return torch.clamp(2 * ((db - MIN_DB) / -MIN_DB) - 1, -1, 1)


class BigVGAN(nn.Module):
    """mel: (batch, mel_dim, frames) log-amplitude -> waveform (batch, frames * hop) in [-1, 1]."""

    def __init__(self, cfg: BigVGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.upsample_initial_channel
        self.conv_pre = nn.Conv1d(cfg.mel_dim, ch, 7, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, r, padding=(k - r) // 2)
            for i, (r, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True))
        )
        self.resblocks = nn.ModuleList(
            AMPBlock(ch // 2 ** (i + 1), k, d)
            for i in range(len(cfg.upsample_rates))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True)
        )
        out_ch = ch // 2 ** len(cfg.upsample_rates)
        self.activation_post = AntiAliasedSnake(out_ch)
        self.conv_post = nn.Conv1d(out_ch, 1, 7, padding=3, bias=False)
        self.register_buffer("aa_filter", anti_aliasing_filter(), persistent=False)

    def fuse_activations(self, kernel: FusedSnake | None) -> None:
        """Make the anti-aliased activations with `kernel` (fused_snake.py) where it handles the signal
        (on the CPU), or with torch's operations again (None)."""
        for module in self.modules():
            if isinstance(module, AntiAliasedSnake):
                module.fused = kernel

    @property
    def fused(self) -> bool:
        return self.activation_post.fused is not None

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        # The 1-D layers run as 2-D ones of height 1 (what torch does inside a conv1d), and on a CPU in
        # channels-last memory: there oneDNN's depthwise anti-aliasing filters run 5 to 10 times
        # faster than in the 1-D layout, and the whole vocoder 1.6x (docs/performance.md).
        x = mel_to_input(mel).unsqueeze(2)
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        x = conv(self.conv_pre, x)
        per_stage = len(self.cfg.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = conv_transpose(cast(nn.ConvTranspose1d, up), x)
            blocks = self.resblocks[i * per_stage : (i + 1) * per_stage]
            x = sum(block(x, self.aa_filter) for block in blocks) / per_stage
        x = conv(self.conv_post, self.activation_post(x, self.aa_filter))
        return torch.clamp(x, -1.0, 1.0).flatten(1)


def receptive_field_frames(cfg: BigVGANConfig) -> int:
    """Mel frames on either side of a frame that its 240 output samples can depend on (a bound).

    Walks the layers backwards from the output, tracking for each output sample of one frame
    the first and last input index each layer reads. It is an upper bound: 34 for the released
    layout, where a perturbation test in float64 sees no influence beyond 26 frames.
    """
    hop = cfg.hop
    centre = 10_000  # a frame far from both edges
    lo = hi = 0
    worst = 0
    for offset in range(hop):
        lo = hi = centre * hop + offset
        lo, hi = _conv_span(lo, hi, 7, 1)  # conv_post
        lo, hi = _snake_span(lo, hi)  # activation_post
        for stage in reversed(range(len(cfg.upsample_rates))):
            lo, hi = _resblock_span(lo, hi, cfg)
            r, k = cfg.upsample_rates[stage], cfg.upsample_kernel_sizes[stage]
            pad = (k - r) // 2
            lo, hi = -((-(lo + pad - k + 1)) // r), (hi + pad) // r
        lo, hi = _conv_span(lo, hi, 7, 1)  # conv_pre
        worst = max(worst, centre - lo, hi - centre)
    return worst


def _conv_span(lo: int, hi: int, kernel: int, dilation: int) -> tuple[int, int]:
    reach = dilation * (kernel - 1) // 2
    return lo - reach, hi + reach


def _snake_span(lo: int, hi: int) -> tuple[int, int]:
    """Index span of an anti-aliased activation's input read by outputs lo..hi."""
    # downsample: out n reads up[2n - (taps/2 - 1) .. 2n + taps/2]
    up_lo, up_hi = AA_RATIO * lo - (AA_TAPS // 2 - 1), AA_RATIO * hi + AA_TAPS // 2
    # upsample: up j = y[j + AA_CROP], y[i] reads padded x[m] for i - m r in [0, taps)
    i_lo, i_hi = up_lo + AA_CROP, up_hi + AA_CROP
    return -((-(i_lo - AA_TAPS + 1)) // AA_RATIO) - AA_PAD, i_hi // AA_RATIO - AA_PAD


def _resblock_span(lo: int, hi: int, cfg: BigVGANConfig) -> tuple[int, int]:
    spans = []
    for k, dilations in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True):
        b_lo, b_hi = lo, hi
        for d in reversed(dilations):
            b_lo, b_hi = _snake_span(*_conv_span(b_lo, b_hi, k, 1))
            b_lo, b_hi = _snake_span(*_conv_span(b_lo, b_hi, k, d))
        spans.append((b_lo, b_hi))
    return min(s[0] for s in spans), max(s[1] for s in spans)
