"""The Talker's one-token decode step at static shapes and addresses: a CUDA graph on CUDA.

A decode step launches a few hundred small kernels (24 layers of norms, projections, rotary and
attention) for one token; on a GPU their launch costs more than their work. `StaticStep` holds the
step's inputs in buffers allocated once (the code, the Thinker's row, the cache slot, the M-RoPE
position), attends over a fixed span of the cache (masked past the slot), and so runs the same
kernels on the same addresses every step: on CUDA it is captured once per span as a
`torch.cuda.CUDAGraph` and each step is one replay. Capture needs no compiler (torch.compile's
"reduce-overhead" needs Triton, which Windows builds of torch lack). Elsewhere the same step is
handed to `torch.compile` (what `omnidesk bench talker --compile` measures on a CPU).

Spans are powers of two from `SMALLEST_SPAN` up to the cache's size, each its own graph (they share
one memory pool): a step attends over the smallest span that holds its slot, so a short turn does
not read the whole cache every step.

A step's only host synchronisation is its caller reading the logits (`Talker.steps` copies them to
the CPU for the sampler); the inputs go in without one: the code, slot and position as kernel
arguments (`fill_`), the row through a pinned buffer, copied asynchronously (the previous step's
copy is complete, since its logits were read after it).

Threads: capture runs on the thread that builds the Talker (before any turn); replays run on the
Talker's thread. Capture is thread-local, so other threads' GPU work during it is not an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import torch

from model.talker.network import TalkerModel

log = logging.getLogger(__name__)

SMALLEST_SPAN = 1024  # cache slots attended by the first graph
WARM_UP_RUNS = 3  # eager runs on a side stream before capture (cuBLAS workspaces, allocator)


class StaticStep:
    """One decode step: (code, row, slot, position) -> logits (1, vocab) float32, on the model's device.

    The logits are a buffer that the next call overwrites: read them (`.cpu()`) before calling again.
    Without `capture` or `compile` it runs eagerly on its buffers: the path a graph replays.
    """

    def __init__(self, model: TalkerModel, max_positions: int) -> None:
        weight = model.embed.weight
        device = weight.device
        self.model = model
        self.dtype = weight.dtype
        self.spans = spans(max_positions)
        self.code = torch.zeros(1, dtype=torch.int64, device=device)
        self.row = torch.zeros(1, model.config.embedding_size, device=device)  # float32, as the Thinker's
        self.slot = torch.zeros(1, dtype=torch.int64, device=device)
        self.positions = torch.zeros(3, 1, dtype=torch.int64, device=device)
        pinned = device.type == "cuda"
        self._host_row = torch.zeros(1, model.config.embedding_size, pin_memory=pinned)
        self._runs: dict[int, Callable[[], torch.Tensor]] = {
            span: partial(self.forward, span) for span in self.spans
        }

    def __call__(self, code: int, row: torch.Tensor, slot: int, position: int) -> torch.Tensor:
        """code: the codec id just chosen; row: (embedding_size,) float32 on the CPU, the Thinker's
        part of the step; slot: the cache slot written; position: its M-RoPE id (text: all three)."""
        self.code.fill_(code)
        self.slot.fill_(slot)
        self.positions.fill_(position)
        self._host_row.copy_(row[None])
        self.row.copy_(self._host_row, non_blocking=True)
        span = next(s for s in self.spans if s > slot)
        return self._runs[span]()

    def forward(self, span: int) -> torch.Tensor:
        """The step on the buffers, attending over cache slots [0, span): (1, vocab) float32."""
        x = self.model.embed.weight[self.code] + self.row.to(self.dtype)
        return self.model(x, self.slot, self.positions, span)

    def compile(self) -> None:
        """Each step through torch.compile (static shapes: one compilation per span)."""
        compiled = torch.compile(self.forward, fullgraph=True, dynamic=False)
        self._runs = {span: partial(compiled, span) for span in self.spans}

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture one CUDA graph per span; each step is then one replay. Raises RuntimeError when
        the device or a kernel cannot be captured.

        The warm-up and capture write the cache's last slot (the slot buffer points there), which no
        step reads before writing it itself."""
        self.slot.fill_(self.spans[-1] - 1)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(WARM_UP_RUNS):
                self.forward(self.spans[-1])
        torch.cuda.current_stream().wait_stream(stream)
        pool = torch.cuda.graph_pool_handle()
        runs: dict[int, Callable[[], torch.Tensor]] = {}
        for span in self.spans:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
                logits = self.forward(span)
            runs[span] = _replay(graph, logits)
        self._runs = runs


def static_step(model: TalkerModel, max_positions: int, graphs: bool) -> StaticStep | None:
    """The decode step of `Talker(compile=True)`: captured CUDA graphs when `graphs` (CUDA), else
    torch.compile; None when capture fails, logged: the Talker then decodes eagerly."""
    step = StaticStep(model, max_positions)
    if not graphs:
        step.compile()
        return step
    try:
        step.capture()
    except RuntimeError as exc:
        log.warning(
            "the Talker's decode step could not be captured as a CUDA graph, so it runs eagerly: %s", exc
        )
        return None
    return step


def spans(max_positions: int) -> tuple[int, ...]:
    """The attention spans that get a graph: powers of two from SMALLEST_SPAN, then the whole cache."""
    found = []
    span = SMALLEST_SPAN
    while span < max_positions:
        found.append(span)
        span *= 2
    return (*found, max_positions)


def _replay(graph: torch.cuda.CUDAGraph, logits: torch.Tensor) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        graph.replay()
        return logits

    return run
