"""The Talker's network with its decoder in llama.cpp: `TalkerModel`'s interface, for the CPU.

The decoder (`gguf_file.py`) runs in a llama.cpp context of its own; the input projection and the
codec embedding stay in torch (float32), so the Talker's code (`speech.py`) is the same for both.
One Talker step reads every weight once for one row: llama.cpp's 4-bit CPU kernels do that about
twice as fast as torch's (docs/performance.md). Its threads follow the calling thread's torch
thread count (what `pipeline.stages.SpeechThreads` sets for the Talker's stage).

Cache slots are the context's cells in order: a forward at slot s first drops what the context holds
from s on, so a prompt that starts as the cached one decodes only the rest (`Talker.prime`).
llama.cpp removes cells by time position, not by slot, and an image's rows share theirs: where slot s
falls inside such a run, the rows of the run before s are decoded again, from the projected rows kept
for each slot (the same inputs: the same keys and values). llama.cpp's causal mask compares M-RoPE
positions rather than slots, as it does for the Thinker (model/thinker.py): the same for text, whose
positions rise with its slots.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp
import numpy as np
import torch
from torch import nn

from model.errors import ComputeError, OmnideskError
from model.files.bundle import Bundle
from model.llama_batch import LlamaBatch
from model.llama_kv_cache import set_kv_cache_type
from model.llama_logs import route_llama_logs
from model.talker.gguf_file import GgufWeights, talker_gguf
from model.talker.network import TalkerConfig
from model.talker.weights import float_tensors

BATCH = 512  # rows per llama_decode call (a prompt is cut into batches of this many)


class LlamaTalkerNetwork(nn.Module):
    """Thinker-width inputs (T, embedding_size) at cache slots `index` -> the last row's codec
    logits (1, vocab), float32: what `Talker` takes from `TalkerModel`."""

    def __init__(
        self, gguf_path: Path, config: TalkerConfig, proj: nn.Linear, embed: nn.Embedding, kv_cache_type: str
    ) -> None:
        """`kv_cache_type`: "f32" (with float32 weights: the exact path) or "f16"."""
        super().__init__()
        self.config = config
        self._kv_cache_type = kv_cache_type
        self.proj, self.embed = proj, embed
        self.max_positions = 0
        self._gguf_path = gguf_path
        self._model: ctypes.c_void_p | None = None
        self._ctx: ctypes.c_void_p | None = None
        self._filled = 0  # slots the context holds
        self._rows = np.zeros((0, config.hidden_size), np.float32)  # each slot's projected row
        self._positions = np.zeros((3, 0), np.int32)  # each slot's M-RoPE positions
        self._threads = 0

    def setup_caches(self, max_positions: int) -> None:
        """Load the decoder and make its context of `max_positions` slots (once)."""
        if self._ctx is not None:
            return
        route_llama_logs()
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0  # the plan places this Talker on the CPU
        self._model = llama_cpp.llama_model_load_from_file(str(self._gguf_path).encode(), model_params)
        if not self._model:
            raise OmnideskError(
                f"llama.cpp could not load the Talker's file {self._gguf_path}: delete it, it is made again"
            )
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = max_positions
        params.n_batch = params.n_ubatch = BATCH
        params.n_seq_max = 1
        set_kv_cache_type(params, self._kv_cache_type)
        self._threads = params.n_threads = params.n_threads_batch = max(1, torch.get_num_threads())
        self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            self.close()
            raise OmnideskError(f"llama.cpp could not make the Talker a context of {max_positions} positions")
        self.max_positions = max_positions
        self._rows = np.zeros((max_positions, self.config.hidden_size), np.float32)
        self._positions = np.zeros((3, max_positions), np.int32)

    def forward(
        self, x: torch.Tensor, index: torch.Tensor, positions: torch.Tensor, span: int
    ) -> torch.Tensor:
        """x: (T, embedding_size); index: (T,) consecutive cache slots from at most the filled ones;
        positions: (3, T) M-RoPE ids. `span` (TalkerModel's attention bound) is implied here."""
        if self._ctx is None:
            raise OmnideskError("the Talker's context is not set up (setup_caches)")
        first, n = int(index[0]), len(index)
        if first > self._filled or not torch.equal(index.cpu(), torch.arange(first, first + n)):
            raise ValueError(f"slots {index.tolist()} do not follow the {self._filled} the Talker holds")
        self._follow_torch_threads()
        rows = self.proj(x.float()).numpy()
        pos = positions.cpu().numpy().astype(np.int32)
        if first + n > self.max_positions:
            raise OmnideskError(f"the Talker holds {self.max_positions} positions, not {first + n}")
        if first < self._filled:
            keep = self._drop_from(first)
            rows = np.concatenate([self._rows[keep:first], rows])
            pos = np.concatenate([self._positions[:, keep:first], pos], axis=1)
            first, n = keep, len(rows)
        self._rows[first : first + n] = rows
        self._positions[:, first : first + n] = pos
        self._filled = first
        for lo in range(0, n, BATCH):
            hi = min(n, lo + BATCH)
            pos4 = np.concatenate([pos[:, lo:hi], np.zeros((1, hi - lo), np.int32)]).reshape(-1)
            batch = LlamaBatch.embeddings(rows[lo:hi], pos4, last_logits_only=True)
            status = llama_cpp.llama_decode(self._ctx, batch.struct)
            if status != 0:
                raise ComputeError(f"llama.cpp failed to decode the Talker's batch (status {status})")
            self._filled = first + hi
        logits = llama_cpp.llama_get_logits_ith(self._ctx, -1)
        return torch.from_numpy(np.ctypeslib.as_array(logits, shape=(self.config.vocab_size,)).copy())[None]

    def _drop_from(self, slot: int) -> int:
        """Drop the cells of slots `slot` on, and before them those that share a time position with
        them (llama.cpp removes by position); return the first slot dropped."""
        assert self._ctx is not None
        times = self._positions[0, : self._filled]
        keep = slot
        while keep > 0 and times[:keep].max() >= times[keep:].min():
            keep -= 1
        memory = llama_cpp.llama_get_memory(self._ctx)
        if keep == 0:
            llama_cpp.llama_memory_clear(memory, True)
        else:
            llama_cpp.llama_memory_seq_rm(memory, 0, int(times[keep:].min()), -1)
        self._filled = keep
        return keep

    def _follow_torch_threads(self) -> None:
        threads = max(1, torch.get_num_threads())
        if threads != self._threads:
            assert self._ctx is not None
            llama_cpp.llama_set_n_threads(self._ctx, threads, threads)
            self._threads = threads

    def close(self) -> None:
        """Free the context and the model (a second call finds nothing to free)."""
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        self.close()


def load_llama_talker(bundle: Bundle, config: TalkerConfig, weights: GgufWeights) -> LlamaTalkerNetwork:
    """The bundle's Talker with its decoder as a llama.cpp GGUF of `weights` (made on first use)."""
    gguf_path = talker_gguf(bundle, config, weights)
    proj_weight, proj_bias, table = float_tensors(
        bundle.file("talker"), config, ("proj.weight", "proj.bias", "embed.weight")
    )
    proj = nn.Linear(config.embedding_size, config.hidden_size)
    proj.load_state_dict({"weight": proj_weight, "bias": proj_bias})
    embed = nn.Embedding.from_pretrained(table, freeze=True)
    kv_cache_type = "f32" if weights == "f32" else "f16"
    return LlamaTalkerNetwork(gguf_path, config, proj, embed, kv_cache_type).eval()
