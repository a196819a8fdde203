"""The KV cache settings of a llama.cpp context, shared by the Thinker and the Talker's decoder."""

from __future__ import annotations

from typing import Any

import llama_cpp

KV_CACHE_TYPES = {"f32": 0, "f16": 1}  # ggml_type ids


def set_kv_cache_type(params: Any, kv_cache_type: str) -> None:
    """Give context `params` (llama_context_params) a KV cache of `kv_cache_type`: "f16" halves its
    memory; "f32", for exact float32 runs, also turns flash attention off, which rounds to f16 on
    the CPU."""
    params.type_k = params.type_v = KV_CACHE_TYPES[kv_cache_type]
    if kv_cache_type == "f32":
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
