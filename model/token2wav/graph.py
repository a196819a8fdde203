"""A DiT window's whole ODE as one CUDA graph: every sampler evaluation replayed at once.

A window is `SamplerOptions.evaluations` DiT calls (36 for the reference's RK4), each ~700 small
kernels (22 blocks of norms, modulations, projections, rotary and block attention); on a GPU their
launches cost more than their work, about 0.2 s a window. With windows at one fixed shape
(`StreamOptions.fixed_windows`) the integration reads only buffers whose shapes never change: the
window's conditioning (static projection, rotary tables, block attention masks) and its noise. So it is
captured once per window size and sampler on first use, and each window is then one replay.

The window's conditioning is computed outside the graph (`DiT.conditioning`) and copied in, so the
graph holds nothing of any one window. A replay cannot stop between evaluations: a cancelled turn
stops after the window (tens of milliseconds on a GPU).

Threads: capture and replays run on the Token2Wav stage's thread; capture is thread-local, so the
other stages' GPU work during it is not an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from model.token2wav.dit import Conditioning, DiT
from model.token2wav.sampler import SamplerOptions, guided_velocity, integrate

log = logging.getLogger(__name__)


class WindowGraph:
    """The ODE of one window of `frames` frames: (conditioning, noise) -> mel (frames, mel_dim).

    The mel is a buffer that the next call overwrites. Without `capture` it runs eagerly on its
    buffers: the path a graph replays."""

    def __init__(self, dit: DiT, frames: int, options: SamplerOptions) -> None:
        weight = dit.proj_out.weight
        cfg = dit.cfg
        self.dit = dit
        self.options = options

        def buffer(*shape: int, dtype: torch.dtype = weight.dtype) -> torch.Tensor:
            return torch.zeros(*shape, dtype=dtype, device=weight.device)

        self.noise = buffer(frames, cfg.mel_dim, dtype=torch.float32)  # the ODE's state stays float32
        # a window of real frames until a window's masks come in: no empty row while capturing
        masks = tuple(mask.clone() for mask in dit.block_masks(0, frames, weight.device, frames))
        self.cond = Conditioning(
            static=buffer(2, frames, cfg.hidden_size),
            cos=buffer(frames, cfg.head_dim),
            sin=buffer(frames, cfg.head_dim),
            masks=masks,
        )
        self._run: Callable[[], torch.Tensor] = self.integrate

    def __call__(self, cond: Conditioning, noise: torch.Tensor) -> torch.Tensor:
        """cond: the window's, from `DiT.conditioning`; noise: (frames, mel_dim) float32."""
        ours = self.cond
        ours.static.copy_(cond.static)
        ours.cos.copy_(cond.cos)
        ours.sin.copy_(cond.sin)
        for buffer, mask in zip(ours.masks, cond.masks, strict=True):
            buffer.copy_(mask)
        self.noise.copy_(noise)
        return self._run()

    def integrate(self) -> torch.Tensor:
        """The sampler's whole ODE on the buffers."""
        velocity = guided_velocity(self.dit, self.cond, self.options.guidance)
        return integrate(velocity, self.noise, self.options)

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture the ODE as a CUDA graph; each call is then one replay. Raises RuntimeError when the
        device or a kernel cannot be captured."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.integrate()  # kernels chosen, workspaces allocated
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            mel = self.integrate()

        def replay() -> torch.Tensor:
            graph.replay()
            return mel

        self._run = replay


def captured_window(dit: DiT, frames: int, options: SamplerOptions) -> WindowGraph | None:
    """A captured WindowGraph, or None when capture fails, logged: the window then runs eagerly."""
    window = WindowGraph(dit, frames, options)
    try:
        window.capture()
    except RuntimeError as exc:
        log.warning("a Token2Wav window could not be captured as a CUDA graph, so it runs eagerly: %s", exc)
        return None
    return window
