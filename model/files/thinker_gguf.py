"""The Thinker as GGUF: writing it from a checkpoint, and checking a file before llama.cpp loads it.

Layout: llama.cpp's `qwen2vl` architecture (Qwen2 blocks with M-RoPE sections),
the tensor names of llama.cpp's own converter, and the tokenizer as `gpt2`
BPE with the `qwen2` pre-tokenizer. Tensors are streamed to disk one at a time.
Quantization is llama.cpp's own (`llama_model_quantize`).
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np
import torch

from model.errors import ModelFileError
from model.files.checkpoint import Checkpoint
from model.files.gguf_layout import check_qwen2vl, check_qwen25o_vision
from model.files.tokenizer import TokenizerSpec

ARCHITECTURE = "qwen2vl"
DTYPES = ("f32", "f16")
QUANT_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_M", "Q4_K_S", "Q4_K_M", "Q5_K_M", "Q6_K")

_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_LAYER_PATTERN = re.compile(r"thinker\.model\.layers\.(\d+)\.(.+)")
_GET_THINKER = "Download the Thinker again (omnidesk models download) or convert it from the checkpoint"


def gguf_name(checkpoint_name: str) -> str | None:
    """The llama.cpp tensor name of a checkpoint tensor of the Thinker's language model."""
    fixed = {
        "thinker.model.embed_tokens.weight": "token_embd.weight",
        "thinker.model.norm.weight": "output_norm.weight",
        "thinker.lm_head.weight": "output.weight",
    }
    if checkpoint_name in fixed:
        return fixed[checkpoint_name]
    match = _LAYER_PATTERN.fullmatch(checkpoint_name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"blk.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"
    return None


def rope_settings(text_config: dict[str, Any]) -> tuple[float, list[int]]:
    """(rope theta, M-RoPE sections) from either config style (transformers 4 or 5)."""
    params = text_config.get("rope_parameters") or {}
    scaling = text_config.get("rope_scaling") or {}
    theta = params.get("rope_theta", text_config.get("rope_theta", 1e6))
    sections = params.get("mrope_section") or scaling.get("mrope_section")
    if not sections:
        raise ValueError("the text config has no mrope_section")
    return float(theta), [int(s) for s in sections]


def write_thinker_gguf(
    checkpoint: Checkpoint, tokenizer: TokenizerSpec, out_path: Path, dtype: str, name: str
) -> None:
    """Write the Thinker's language model as a float GGUF (`dtype` "f32" or "f16")."""
    cfg = checkpoint.text_config
    theta, sections = rope_settings(cfg)
    writer = gguf.GGUFWriter(str(out_path), ARCHITECTURE)
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    add_qwen2vl_layout(
        writer,
        context=int(cfg["max_position_embeddings"]),
        hidden=int(cfg["hidden_size"]),
        layers=int(cfg["num_hidden_layers"]),
        ffn=int(cfg["intermediate_size"]),
        heads=int(cfg["num_attention_heads"]),
        kv_heads=int(cfg["num_key_value_heads"]),
        theta=theta,
        eps=float(cfg["rms_norm_eps"]),
        sections=sections,
    )

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokenizer.tokens)
    writer.add_token_types(tokenizer.token_types)
    writer.add_token_merges(tokenizer.merges)
    writer.add_bos_token_id(tokenizer.special_ids["endoftext"])
    writer.add_eos_token_id(tokenizer.special_ids["im_end"])
    writer.add_pad_token_id(tokenizer.special_ids["endoftext"])
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)

    names = [n for n in checkpoint.names("thinker.") if gguf_name(n) is not None]
    if cfg.get("tie_word_embeddings"):
        names = [n for n in names if n != "thinker.lm_head.weight"]

    def convert(tensor: torch.Tensor) -> np.ndarray:
        target = torch.float16 if dtype == "f16" and tensor.dim() > 1 else torch.float32
        return tensor.to(target).numpy()

    # Pass 1: tensor infos (shapes and types) without holding any data.
    for ckpt_name, tensor in checkpoint.tensors(names):
        array_dtype = np.float16 if dtype == "f16" and tensor.dim() > 1 else np.float32
        nbytes = tensor.numel() * np.dtype(array_dtype).itemsize
        writer.add_tensor_info(gguf_name(ckpt_name) or "", list(tensor.shape), np.dtype(array_dtype), nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    # Pass 2: the data, one tensor at a time.
    for _, tensor in checkpoint.tensors(names):
        writer.write_tensor_data(convert(tensor))
    writer.close()


def add_qwen2vl_layout(
    writer: gguf.GGUFWriter,
    *,
    context: int,
    hidden: int,
    layers: int,
    ffn: int,
    heads: int,
    kv_heads: int,
    theta: float,
    eps: float,
    sections: Sequence[int],
    head_dim: int | None = None,
) -> None:
    """The `qwen2vl` hyperparameters llama.cpp reads (`head_dim`: written where given; llama.cpp
    otherwise takes hidden / heads)."""
    writer.add_context_length(context)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    if head_dim is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(theta)
    writer.add_layer_norm_rms_eps(eps)
    writer.add_rope_dimension_sections([*sections, 0][:4])


def quantize(in_path: Path, out_path: Path, quant: str, n_threads: int | None = None) -> None:
    """Quantize a float GGUF of the Thinker with llama.cpp's own quantizer."""
    if quant not in QUANT_TYPES:
        raise ValueError(f"unknown quantization {quant}; choose one of {', '.join(QUANT_TYPES)}")
    llama_quantize(in_path, out_path, quant, _GET_THINKER, n_threads)


def llama_quantize(
    in_path: Path, out_path: Path, quant: str, advice: str, n_threads: int | None = None
) -> None:
    """Quantize a float GGUF to llama.cpp's type `quant` (e.g. "Q4_K_M", "IQ4_NL"); `advice`: what to
    do if llama.cpp cannot."""
    import llama_cpp

    from model.llama_logs import route_llama_logs

    route_llama_logs()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}")
    params.nthread = n_threads or os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(
        str(in_path).encode(), str(out_path).encode(), ctypes.byref(params)
    )
    if status != 0:
        raise ModelFileError(in_path, f"llama.cpp could not quantize it to {quant} (status {status})", advice)


@dataclass(frozen=True)
class ThinkerFileInfo:
    """What a checked Thinker GGUF holds; `reader` stays open for reading tensor data."""

    path: Path
    n_embd: int
    n_vocab: int
    n_ctx_train: int
    reader: gguf.GGUFReader

    def embedding_rows(self) -> Callable[[np.ndarray], np.ndarray]:
        """A function from token ids (n,) to their input embeddings (n, n_embd), float32."""
        tensor = next(t for t in self.reader.tensors if t.name == "token_embd.weight")
        data, qtype = tensor.data, tensor.tensor_type

        def rows(ids: np.ndarray) -> np.ndarray:
            raw = np.asarray(data[np.asarray(ids, dtype=np.int64)])
            if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                return raw.astype(np.float32)
            return gguf.quants.dequantize(raw, qtype).astype(np.float32).reshape(len(ids), self.n_embd)

        return rows


def check_thinker_gguf(path: Path) -> ThinkerFileInfo:
    """Check that `path` is a complete GGUF of the Qwen2.5-Omni Thinker that llama.cpp can load and
    run (every tensor it takes present, in the shape its header implies); raise ModelFileError if not."""
    info = read_thinker_gguf(path)
    check_thinker_layout(info)
    return info


def read_thinker_gguf(path: Path) -> ThinkerFileInfo:
    """Read a complete GGUF of architecture qwen2vl that has token embeddings (its whole layout is
    `check_thinker_layout`'s); raise ModelFileError if it is not one."""
    if not path.is_file():
        raise ModelFileError(path, "Thinker file not found", _GET_THINKER)
    reader = _read_gguf(path, _GET_THINKER)
    arch = _field_str(reader, "general.architecture")
    if arch != ARCHITECTURE:
        raise ModelFileError(
            path,
            f"a GGUF of architecture {arch!r}, not the Qwen2.5-Omni Thinker ({ARCHITECTURE})",
            _GET_THINKER,
        )
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise ModelFileError(path, "the GGUF has no token embeddings", _GET_THINKER)
    _check_complete(path, reader, _GET_THINKER)
    embd = tensors["token_embd.weight"]
    return ThinkerFileInfo(
        path=path,
        n_embd=int(embd.shape[0]),
        n_vocab=int(embd.shape[1]),
        n_ctx_train=int(_field_int(reader, f"{ARCHITECTURE}.context_length")),
        reader=reader,
    )


def check_thinker_layout(info: ThinkerFileInfo) -> None:
    """Check that llama.cpp can load and run the Thinker GGUF that `info` was read from."""
    check_qwen2vl(info.path, info.reader, _GET_THINKER)


def check_mmproj_gguf(path: Path, width: int | None = None) -> None:
    """Check that `path` is a llama.cpp multimodal projector GGUF (architecture "clip") of Qwen2.5-Omni's
    vision tower that clip.cpp can load and run, giving embeddings `width` wide if given; raise
    ModelFileError if not."""
    advice = "Download the mmproj GGUF of the same Qwen2.5-Omni size again"
    reader = _read_gguf(path, advice)
    arch = _field_str(reader, "general.architecture")
    if arch != "clip":
        raise ModelFileError(path, f"a GGUF of architecture {arch!r}, not a vision projector (clip)", advice)
    projected = _field_int(reader, "clip.vision.projection_dim")
    if width is not None and projected != width:
        raise ModelFileError(
            path,
            f"this vision projector gives {projected}-wide embeddings but the Thinker takes {width}",
            "Use the mmproj GGUF of the same Qwen2.5-Omni size as the Thinker",
        )
    _check_complete(path, reader, advice)
    check_qwen25o_vision(path, reader, advice)


def check_gguf_matches(info: ThinkerFileInfo, tokenizer: TokenizerSpec, text_config: dict[str, Any]) -> None:
    """Check that a Thinker GGUF made elsewhere fits the checkpoint: width, vocabulary, special tokens."""
    advice = "Use the GGUF of the same Qwen2.5-Omni size as the checkpoint"
    if info.n_embd != int(text_config["hidden_size"]) or info.n_vocab != len(tokenizer.tokens):
        raise ModelFileError(
            info.path,
            f"width {info.n_embd} and vocabulary {info.n_vocab} do not match the checkpoint's "
            f"{text_config['hidden_size']} and {len(tokenizer.tokens)}",
            advice,
        )
    field = info.reader.get_field("tokenizer.ggml.tokens")
    if field is None:
        raise ModelFileError(info.path, "the GGUF has no tokenizer", advice)
    for role, token_id in tokenizer.special_ids.items():
        token = bytes(field.parts[field.data[token_id]]).decode("utf-8", errors="replace")
        if token != tokenizer.tokens[token_id]:
            raise ModelFileError(
                info.path, f"token {token_id} is {token!r}, the checkpoint's {role} is not", advice
            )


def gguf_file_type(info: ThinkerFileInfo) -> str:
    """The GGUF's quantization as llama.cpp names it (e.g. "Q4_K_M"), or "unknown"."""
    value = _field_int(info.reader, "general.file_type")
    try:
        name = gguf.LlamaFileType(value).name
    except ValueError:
        return "unknown"
    return {"ALL_F32": "f32", "MOSTLY_F16": "f16", "MOSTLY_BF16": "bf16"}.get(
        name, name.removeprefix("MOSTLY_")
    )


def _read_gguf(path: Path, advice: str) -> gguf.GGUFReader:
    """The file's GGUF reader, or a ModelFileError if it is not a readable GGUF."""
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelFileError(path, "not a GGUF file", advice)
    try:
        return _BoundedReader(str(path), "r")
    except Exception as exc:  # GGUFReader raises ValueError, IndexError, struct errors... on damage
        raise ModelFileError(path, f"damaged or truncated GGUF ({type(exc).__name__})", advice) from None


class _BoundedReader(gguf.GGUFReader):
    """A GGUFReader that stops at the first read past the end of the file. The stock reader gets an
    empty array there and, when a count in the file is damaged, loops on taking memory without bound."""

    def _get(
        self, offset: int, dtype: Any, count: int = 1, override_order: Literal["I", "S", "<"] | None = None
    ) -> np.ndarray:
        values = super()._get(offset, dtype, count, override_order)
        if len(values) != int(count):
            raise EOFError(f"the file ends before byte {offset + values.itemsize * int(count)}")
        return values


def _check_complete(path: Path, reader: gguf.GGUFReader, advice: str) -> None:
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if end > path.stat().st_size:
        raise ModelFileError(path, "truncated (the file ends before its last tensor)", advice)


def _field_str(reader: gguf.GGUFReader, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def _field_int(reader: gguf.GGUFReader, key: str) -> int:
    field = reader.get_field(key)
    return int(field.parts[field.data[0]][0]) if field is not None else 0
