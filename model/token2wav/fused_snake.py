"""The vocoder's anti-aliased activations in one native pass: the Fast profile's, on a CPU.

BigVGAN applies an anti-aliased SnakeBeta 109 times per call. torch makes each in seven passes over a
signal twice the input's length (up-sampling, four elementwise operations, down-sampling: see
bigvgan.AntiAliasedSnake), which on a CPU took a third of the vocoder's time, bound by memory traffic.
`fused_snake.c` makes each tile of output from the input while it is in the cache, in float32 as
torch's CPU path does for a bfloat16 signal. On one Zen 4 core: 3.6x torch's activations, the vocoder
1.3x (docs/performance.md).

Not bit-identical to torch's: the same float32 arithmetic in another order (and sin from a polynomial
where torch uses Sleef's), so results agree to float32 rounding, and a bfloat16 output may round to
the neighbouring value. tests/model/test_fused_snake.py bounds both; `load` checks the library it built
against torch's activation before anything uses it.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from model.native_library import NativeBuildError, cache_dir
from model.native_library import load as load_library
from model.token2wav.bigvgan import AntiAliasedSnake, anti_aliasing_filter, snake_factors

SOURCE = Path(__file__).with_name("fused_snake.c")
DTYPES = {torch.float32: 0, torch.bfloat16: 1}
CHECK_TOLERANCE = 1e-4  # float32 outputs of the self-check against torch's (seen: 3e-6 on values near 10)


class FusedSnake:
    """Calls `omnidesk_fused_snake` from the library built from fused_snake.c."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self._function = library.omnidesk_fused_snake
        self._function.restype = ctypes.c_int
        self._function.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int,
        ]

    def __deepcopy__(self, memo: dict[int, object]) -> FusedSnake:
        return self  # no state but the library's function: a copied vocoder shares it

    @staticmethod
    def handles(x: torch.Tensor) -> bool:
        """Whether `x` (batch, channels, 1, samples) is a signal this kernel computes: on the CPU, in
        float32 or bfloat16, outside autograd."""
        one_row = x.dim() == 4 and x.shape[2] == 1
        return x.device.type == "cpu" and x.dtype in DTYPES and one_row and not x.requires_grad

    def __call__(
        self, x: torch.Tensor, filt: torch.Tensor, log_alpha: torch.Tensor, log_beta: torch.Tensor
    ) -> torch.Tensor:
        """AntiAliasedSnake's activation of x: (batch, channels, 1, samples); filt: the 12 taps;
        log_alpha, log_beta: (channels,). Uses torch's thread count of the calling thread."""
        x = x.contiguous(memory_format=torch.channels_last)
        out = torch.empty_like(x, memory_format=torch.channels_last)
        alpha, inv_beta = snake_factors(log_alpha.detach().float(), log_beta.detach().float())
        taps = filt.detach().float().flatten().contiguous()
        batch, channels, _, samples = x.shape
        failed = self._function(
            x.data_ptr(),
            out.data_ptr(),
            DTYPES[x.dtype],
            batch,
            channels,
            samples,
            alpha.data_ptr(),
            inv_beta.data_ptr(),
            taps.data_ptr(),
            torch.get_num_threads(),
        )
        if failed:
            raise MemoryError("the vocoder's fused activation ran out of memory")
        return out


@functools.cache
def load() -> FusedSnake:
    """The kernel for this machine, built at first use (`native_library`) and checked against torch's
    activation. Raises NativeBuildError (what to install, or that the build disagrees) where it cannot
    be used."""
    kernel = FusedSnake(load_library(SOURCE))
    generator = torch.Generator().manual_seed(0)
    snake = AntiAliasedSnake(24)
    with torch.no_grad():
        snake.alpha.normal_(0.0, 0.5, generator=generator)
        snake.beta.normal_(0.0, 0.5, generator=generator)
    filt = anti_aliasing_filter()
    x = 3 * torch.randn(2, 24, 1, 601, generator=generator)
    with torch.inference_mode():
        expected = AntiAliasedSnake._snake(x, filt, snake.alpha, snake.beta)
        error = (kernel(x, filt, snake.alpha, snake.beta) - expected).abs().max().item()
    if not error <= CHECK_TOLERANCE:
        raise NativeBuildError(
            f"the vocoder's fused activation built here differs from torch's by {error:.2g}; "
            f"torch's is used (delete {cache_dir() / SOURCE.stem}-* to build it again)"
        )
    return kernel
