"""A llama.cpp batch over numpy buffers: token ids or embeddings, with explicit positions.

llama.cpp reads the buffers during `llama_decode`; a `LlamaBatch` keeps them alive until it is
dropped. Every position outputs its logits and hidden state (the Talker needs them all), unless
only the last one's logits are asked for (the Talker's own decoder in llama.cpp).
"""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np


class LlamaBatch:
    """A llama_batch over numpy buffers it keeps alive; every position outputs logits and hidden state
    (the last one only, with `last_logits_only`)."""

    def __init__(
        self,
        n: int,
        token: np.ndarray | None,
        embd: np.ndarray | None,
        pos: np.ndarray,
        last_logits_only: bool = False,
    ) -> None:
        self._arrays = [a for a in (token, embd, pos) if a is not None]
        self._seq0 = (ctypes.c_int32 * 1)(0)
        self._seq_ids = (ctypes.POINTER(ctypes.c_int32) * n)(
            *([ctypes.cast(self._seq0, ctypes.POINTER(ctypes.c_int32))] * n)
        )
        self._n_seq = np.ones(n, dtype=np.int32)
        self._logits = np.ones(n, dtype=np.int8)
        if last_logits_only:
            self._logits[:-1] = 0
        self.struct = llama_cpp.llama_batch(
            n_tokens=n,
            token=_pointer(token, ctypes.c_int32),
            embd=_pointer(embd, ctypes.c_float),
            pos=_pointer(pos, ctypes.c_int32),
            n_seq_id=_pointer(self._n_seq, ctypes.c_int32),
            seq_id=self._seq_ids,
            logits=_pointer(self._logits, ctypes.c_int8),
        )

    @classmethod
    def tokens(cls, ids: np.ndarray, pos: np.ndarray) -> LlamaBatch:
        return cls(
            len(ids),
            np.ascontiguousarray(ids, dtype=np.int32),
            None,
            np.ascontiguousarray(pos, dtype=np.int32),
        )

    @classmethod
    def embeddings(cls, embd: np.ndarray, pos4: np.ndarray, last_logits_only: bool = False) -> LlamaBatch:
        return cls(
            len(embd),
            None,
            np.ascontiguousarray(embd, dtype=np.float32),
            np.ascontiguousarray(pos4, dtype=np.int32),
            last_logits_only,
        )


def _pointer(array: np.ndarray | None, ctype: type) -> object:
    if array is None:
        return None
    return array.ctypes.data_as(ctypes.POINTER(ctype))
