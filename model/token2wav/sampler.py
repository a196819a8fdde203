"""Flow-matching ODE sampling: integrate the DiT's guided velocity from noise (t=0) to mel (t=1).

`REFERENCE` is transformers' default: 10 time points swayed towards t=0, Kutta's 3/8-rule RK4
(4 velocity evaluations per interval, 36 in all), classifier-free guidance 0.5. `FAST` (the Fast
speech profile's) trades accuracy for 7x fewer evaluations: Euler on the same swayed grid in 5
steps, as MNN's default (the Qwen team's low-memory mode also uses Euler); its mel distance from
`REFERENCE` is measured by tests/model/test_token2wav.py and `omnidesk bench token2wav`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from model.token2wav.dit import Conditioning, DiT

MIN_GUIDANCE = 1e-5  # below this, one unguided pass per evaluation (as the reference)

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplerOptions:
    """num_steps: points of the time grid as the reference counts them (10 points, 9 intervals).
    sway: coefficient s of t <- t + s (cos(pi t / 2) - 1 + t); -1 packs the points near t=0."""

    solver: Literal["rk4", "euler"] = "rk4"
    num_steps: int = 10
    guidance: float = 0.5
    sway: float = -1.0

    @property
    def evaluations(self) -> int:
        """DiT calls per window (each on the conditional and unconditional rows when guided)."""
        return (self.num_steps - 1) * (4 if self.solver == "rk4" else 1)


REFERENCE = SamplerOptions()
FAST = SamplerOptions(solver="euler", num_steps=6)
# Named options measured against FAST and REFERENCE, in no plan: each trades more fidelity for speed
# (tests/model/test_token2wav.py bounds their error on the tiny model, `omnidesk bench token2wav`
# measures it at the real size). EULER_3: 3 evaluations instead of 5. UNGUIDED: FAST without
# classifier-free guidance, so each evaluation runs the conditional row alone (on a CPU the rows of
# a short window are nearly free beside reading the weights: the null row saves little there).
# At the real size, random weights, whole-utterance mel L1 against REFERENCE's: FAST 0.048, EULER_3
# 0.069, UNGUIDED 0.238 (mean |mel| 1.047); waveform 26.1, 24.9 and 17.9 dB (docs/performance.md).
EULER_3 = SamplerOptions(solver="euler", num_steps=4)
UNGUIDED = SamplerOptions(solver="euler", num_steps=6, guidance=0.0)


def time_grid(options: SamplerOptions, device: torch.device | None = None) -> torch.Tensor:
    """(num_steps,) float32 times from 0 to 1, computed as the reference does."""
    t = torch.linspace(0, 1, options.num_steps, device=device, dtype=torch.float32)
    return t + options.sway * (torch.cos(math.pi / 2 * t) - 1 + t)


def guided_velocity(dit: DiT, cond: Conditioning, guidance: float) -> Velocity:
    """v(t, x) = v_c + g (v_c - v_u); x: (frames, mel_dim) float32 -> (frames, mel_dim) float32.

    The network runs in its own dtype; the ODE's state and the guidance stay in float32, so that a
    half-precision DiT rounds each velocity once instead of the state at every step."""
    dtype = dit.proj_out.weight.dtype

    def velocity(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if guidance < MIN_GUIDANCE:
            return dit(x.to(dtype), t, cond, guided=False)[0].float()
        v_cond, v_uncond = dit(x.to(dtype), t, cond).float()
        return v_cond + (v_cond - v_uncond) * guidance

    return velocity


def _rk4_38_step(f: Velocity, t0: torch.Tensor, t1: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Kutta's 3/8 rule, with the reference's operation order (it sets the rounding)."""
    h = t1 - t0
    third, two_thirds = 1 / 3, 2 / 3
    k1 = f(t0, x)
    k2 = f(t0 + h * third, x + h * k1 * third)
    k3 = f(t0 + h * two_thirds, x + h * (k2 - k1 * third))
    k4 = f(t1, x + h * (k1 - k2 + k3))
    return x + (k1 + 3 * (k2 + k3) + k4) * h / 8


def _euler_step(f: Velocity, t0: torch.Tensor, t1: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x + (t1 - t0) * f(t0, x)


def integrate(f: Velocity, noise: torch.Tensor, options: SamplerOptions) -> torch.Tensor:
    """noise: (frames, mel_dim) at t=0 -> the mel at t=1, (frames, mel_dim)."""
    step = _rk4_38_step if options.solver == "rk4" else _euler_step
    t = time_grid(options, noise.device)
    x = noise
    for i in range(options.num_steps - 1):
        x = step(f, t[i], t[i + 1], x)
    return x
