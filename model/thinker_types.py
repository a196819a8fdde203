"""What goes into and comes out of the Thinker (model.thinker): its options, checked before
llama.cpp sees them; a prompt's segments (token runs and media embedding runs with their M-RoPE
positions); the events of a reply; and the states the Talker reads for a range of positions.

Plain frozen dataclasses of numpy arrays and ints: importable without llama.cpp.

Threads: none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from model.errors import OmnideskError

# Bounds checked before llama.cpp sees the options: it takes a context of -1 as 2^32 - 1 tokens and
# one of 2^31 - 1 as far as a failed allocation (std::bad_alloc), and with 100000 threads the OpenMP
# runtime cannot start them and the process dies.
MAX_THREADS = 512  # ggml's GGML_MAX_N_THREADS
MAX_GPU_LAYERS = 2**31 - 1  # a C int; more layers than the model has means all of them
DEFAULT_CONTEXT = 8192  # tokens, when none is asked for and the model was trained on as many or more


@dataclass(frozen=True)
class ThinkerOptions:
    # Tokens; None: DEFAULT_CONTEXT, or the model's trained context where that is smaller. One asked
    # for must be at most the trained context (the Thinker checks it against the file).
    n_ctx: int | None = None
    n_batch: int = 512
    n_gpu_layers: int = -1  # -1: all layers when the build can offload, else none
    # Default: half the logical CPUs (about the physical cores). The Talker and Token2Wav share the
    # CPU; llama.cpp's threads spin at their barriers, so oversubscribed cores slow it down badly
    # (measured here: 49 -> 2 tokens/s decoding on 2 busy cores with 2 threads instead of 1).
    n_threads: int | None = None
    n_threads_batch: int | None = None  # while decoding a prompt (nothing else runs then); None: n_threads
    kv_cache_type: str = "f16"  # "f16" halves the cache's memory; "f32" for exact float32 runs

    def __post_init__(self) -> None:
        if self.n_ctx is not None and self.n_ctx < 1:
            raise OmnideskError(f"a context of {self.n_ctx} tokens: give 1 or more")
        if self.n_threads is not None and not 1 <= self.n_threads <= MAX_THREADS:
            raise OmnideskError(
                f"{self.n_threads} threads: llama.cpp takes 1 to {MAX_THREADS} "
                f"(this machine has {os.cpu_count()} logical CPUs)"
            )
        if not -1 <= self.n_gpu_layers <= MAX_GPU_LAYERS:
            raise OmnideskError(f"{self.n_gpu_layers} GPU layers: give -1 (all) or a number from 0 up")

    def context_for(self, n_ctx_train: int) -> int:
        """The context in tokens for a model trained on `n_ctx_train` (0: the file does not say); one
        asked for above it is refused."""
        if self.n_ctx is None:
            return min(DEFAULT_CONTEXT, n_ctx_train) if n_ctx_train > 0 else DEFAULT_CONTEXT
        if 0 < n_ctx_train < self.n_ctx:
            raise OmnideskError(
                f"a context of {self.n_ctx} tokens: this model holds at most {n_ctx_train}, give that or less"
            )
        return self.n_ctx


@dataclass(frozen=True)
class TokenRun:
    """Text tokens; positions continue from the context's next position unless given.

    `positions` (n,): the same id on all three axes per token, where the prompt's layout sets them
    (the two markers around a video with its audio share one id).
    """

    ids: tuple[int, ...]
    positions: tuple[int, ...] | None = None


@dataclass(frozen=True)
class EmbeddingRun:
    """Media embeddings (n, n_embd) with explicit positions (3, n): time, height, width.

    `key` identifies the content (for example a hash of the media), so a later
    prompt holding the same run reuses its KV cache. `placeholder` is the token
    id the reference puts at these positions (for example <|IMAGE|>), or one id per row.

    llama.cpp refuses time ids that decrease, within a batch or after what the cache holds: a
    run's time ids must not decrease (`perception` puts interleaved video and sound in time order).
    """

    embeddings: np.ndarray = field(repr=False)
    positions: np.ndarray = field(repr=False)
    key: str
    placeholder: int | tuple[int, ...]


Segment = TokenRun | EmbeddingRun


@dataclass(frozen=True)
class Sampled:
    """A reply token was chosen (its text is complete UTF-8, possibly empty)."""

    token_id: int
    text: str


@dataclass(frozen=True)
class Decoded:
    """A reply token went through the model: its final hidden state and input embedding, (n_embd,)."""

    token_id: int
    index: int  # its index in the context
    hidden: np.ndarray = field(repr=False)
    embedding: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop", "length", "cancelled" or "context_full"
    reply_ids: tuple[int, ...]
    prompt_decoded: int  # prompt positions decoded for this call (the rest came from the cache)
    first_token_s: float | None  # seconds from the call to the first sampled token (perf_counter)
    tokens_per_s: float | None  # reply tokens per second after the first


ThinkerEvent = Sampled | Decoded | Finished


@dataclass(frozen=True)
class PositionStates:
    """What the Talker reads for a range of context positions."""

    token_ids: np.ndarray  # (n,) the token, or the media placeholder id
    hidden: np.ndarray  # (n, n_embd) final hidden states after the final norm
    embeddings: np.ndarray  # (n, n_embd) input embeddings, zero at media positions
    positions: np.ndarray  # (3, n) M-RoPE positions
    keys: tuple[object, ...] = ()  # what each position holds (a token id, or a media run and row)
