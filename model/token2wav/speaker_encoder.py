"""ECAPA-TDNN speaker encoder: a voice's reference mel -> one speaker vector.

Same layers and names as the checkpoint's `input_embed.spk_encoder.*`. It runs once per voice
(the reference runs it in every DiT evaluation although its input never changes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

STATS_EPS = 1e-12


@dataclass(frozen=True)
class SpeakerEncoderConfig:
    mel_dim: int = 80
    channels: tuple[int, ...] = (256, 256, 256, 256, 768)
    kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 1)
    dilations: tuple[int, ...] = (1, 2, 3, 4, 1)
    attention_channels: int = 64
    res2net_scale: int = 2
    se_channels: int = 64
    out_dim: int = 128


def _conv(in_ch: int, out_ch: int, kernel: int = 1, dilation: int = 1) -> nn.Conv1d:
    return nn.Conv1d(in_ch, out_ch, kernel, dilation=dilation, padding="same", padding_mode="reflect")


class TimeDelay(nn.Module):
    """Conv1d ('same', reflect padding) + ReLU. x: (batch, in_ch, frames) -> (batch, out_ch, frames)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv = _conv(in_ch, out_ch, kernel, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


class Res2Net(nn.Module):
    """Channels split in `scale` groups; group i > 0 goes through a TDNN after adding group i-1's output."""

    def __init__(self, channels: int, scale: int, kernel: int, dilation: int) -> None:
        super().__init__()
        width = channels // scale
        self.scale = scale
        self.blocks = nn.ModuleList(TimeDelay(width, width, kernel, dilation) for _ in range(scale - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(torch.chunk(x, self.scale, dim=1))
        out = [parts[0]]
        for i, block in enumerate(self.blocks, start=1):
            out.append(block(parts[i] if i == 1 else parts[i] + out[-1]))
        return torch.cat(out, dim=1)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, se_channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, se_channels)
        self.conv2 = _conv(se_channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(x.mean(dim=2, keepdim=True)))))
        return x * gate


class SERes2NetBlock(nn.Module):
    def __init__(
        self, in_ch: int, out_ch: int, scale: int, se_channels: int, kernel: int, dilation: int
    ) -> None:
        super().__init__()
        self.tdnn1 = TimeDelay(in_ch, out_ch, 1, 1)
        self.res2net_block = Res2Net(out_ch, scale, kernel, dilation)
        self.tdnn2 = TimeDelay(out_ch, out_ch, 1, 1)
        self.se_block = SqueezeExcitation(out_ch, se_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x)))) + x


def _mean_std(x: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and std over time. x, weights: (batch, ch, frames) -> each (batch, ch)."""
    mean = (weights * x).sum(2)
    std = torch.sqrt((weights * (x - mean.unsqueeze(2)).pow(2)).sum(2).clamp(STATS_EPS))
    return mean, std


class AttentiveStatsPooling(nn.Module):
    """x: (batch, ch, frames) -> (batch, 2 ch): attention-weighted mean and std over time."""

    def __init__(self, channels: int, attention_channels: int) -> None:
        super().__init__()
        self.tdnn = TimeDelay(channels * 3, attention_channels, 1, 1)
        self.conv = _conv(attention_channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[-1]
        uniform = torch.full_like(x[:, :1], 1.0 / frames)
        mean, std = _mean_std(x, uniform)
        context = torch.cat([x, mean.unsqueeze(2).expand_as(x), std.unsqueeze(2).expand_as(x)], dim=1)
        attention = F.softmax(self.conv(torch.tanh(self.tdnn(context))), dim=2)
        mean, std = _mean_std(x, attention)
        return torch.cat([mean, std], dim=1)


class SpeakerEncoder(nn.Module):
    """ECAPA-TDNN. ref_mel: (batch, frames, mel_dim) -> (batch, out_dim)."""

    def __init__(self, cfg: SpeakerEncoderConfig) -> None:
        super().__init__()
        ch, ks, ds = cfg.channels, cfg.kernel_sizes, cfg.dilations
        blocks: list[nn.Module] = [TimeDelay(cfg.mel_dim, ch[0], ks[0], ds[0])]
        blocks += [
            SERes2NetBlock(ch[i - 1], ch[i], cfg.res2net_scale, cfg.se_channels, ks[i], ds[i])
            for i in range(1, len(ch) - 1)
        ]
        self.blocks = nn.ModuleList(blocks)
        self.mfa = TimeDelay(ch[-1], ch[-1], ks[-1], ds[-1])
        self.asp = AttentiveStatsPooling(ch[-1], cfg.attention_channels)
        self.fc = _conv(ch[-1] * 2, cfg.out_dim)

    def forward(self, ref_mel: torch.Tensor) -> torch.Tensor:
        x = ref_mel.transpose(1, 2)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        x = self.mfa(torch.cat(outputs[1:], dim=1))
        return self.fc(self.asp(x).unsqueeze(2)).squeeze(2)
