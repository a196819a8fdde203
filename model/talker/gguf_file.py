"""The Talker's decoder as a GGUF for llama.cpp (`llama_network.py` runs it).

The Talker is a Qwen2 decoder with 3-section M-RoPE: llama.cpp's `qwen2vl` architecture, the
Thinker's. The file holds the decoder layers, the final norm and the codec head, under llama.cpp's
tensor names; the input projection and the codec embedding, which read Thinker-width rows, stay in
torch, and the decoder is fed the projected rows as embeddings. llama.cpp's loader still wants a
vocabulary and a token table: the codec ids as placeholder tokens and a table of zeros, never read.

It is made from the bundle's `talker.safetensors` the first time a plan asks for it and kept in the
bundle folder under `.derived/`, named by the talker file's sha256 and the weights, so a new talker
file makes a new one (and the old one is removed). Quantized files are written in float16 first, then
quantized by llama.cpp's own quantizer: once per bundle, when the model loads (the 3B Talker on 2 Zen 4
cores: 3 s to write, 35 s to quantize to `iq4_nl`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import gguf
import numpy as np
import torch

from model.errors import ModelFileError
from model.files.bundle import Bundle
from model.files.thinker_gguf import ARCHITECTURE, add_qwen2vl_layout, llama_quantize
from model.talker.network import TalkerConfig, TalkerModel
from model.talker.weights import float_tensors

# "f32": every weight as the checkpoint has it (the exact path, for tests); "iq4_nl": llama.cpp's
# 4-bit non-linear type, blocks of 32 inputs each with a scale, which its CPU kernels repack for
# their fastest product (measured: the 3B Talker's step 14 ms on one Zen 4 core, against 32 ms for
# torch's int4 kernel, docs/performance.md).
GgufWeights = Literal["f32", "iq4_nl"]
GGUF_WEIGHTS: tuple[GgufWeights, ...] = ("f32", "iq4_nl")
DERIVED = ".derived"
LEFTOVER_AGE_S = 3600  # a build takes seconds; a partial file this old is left from one cut short
_REBUILD = (
    "Check the bundle folder is writable and has room, or build the bundle again (omnidesk models convert)"
)

_LAYER_NAMES = {
    "attention_norm.weight": "attn_norm.weight",
    "attention.q.weight": "attn_q.weight",
    "attention.q.bias": "attn_q.bias",
    "attention.k.weight": "attn_k.weight",
    "attention.k.bias": "attn_k.bias",
    "attention.v.weight": "attn_v.weight",
    "attention.v.bias": "attn_v.bias",
    "attention.o.weight": "attn_output.weight",
    "mlp_norm.weight": "ffn_norm.weight",
    "mlp.gate.weight": "ffn_gate.weight",
    "mlp.up.weight": "ffn_up.weight",
    "mlp.down.weight": "ffn_down.weight",
}
TORCH_SIDE = ("proj", "embed")  # the modules that stay in torch


def runs_in_llama(config: TalkerConfig) -> bool:
    """Whether llama.cpp's qwen2vl takes this layout: its attention as wide as its hidden state (the
    3B Talker's 14 heads of 64 in 896; not the 7B's 12 heads of 128)."""
    return config.num_attention_heads * config.head_dim == config.hidden_size


def gguf_name(name: str) -> str | None:
    """Our parameter name -> llama.cpp's tensor name; None for the torch side's."""
    if name.split(".")[0] in TORCH_SIDE:
        return None
    if name.startswith("layers."):
        _, number, rest = name.split(".", 2)
        return f"blk.{number}.{_LAYER_NAMES[rest]}"
    return {"norm.weight": "output_norm.weight", "head.weight": "output.weight"}[name]


def talker_gguf(bundle: Bundle, config: TalkerConfig, weights: GgufWeights) -> Path:
    """The bundle's Talker decoder as a GGUF of `weights`, made now if it is not there yet."""
    folder = bundle.root / DERIVED
    digest = bundle.files["talker"].sha256[:16]
    path = folder / f"talker-{digest}-{weights}.gguf"
    if path.exists():
        return path
    source = bundle.file("talker")
    try:
        folder.mkdir(exist_ok=True)
        for old in folder.glob(f"talker-*-{weights}.gguf"):
            old.unlink()  # made from another talker file
        _remove_leftovers(folder)
        if weights == "f32":
            _atomic(path, lambda part: write_talker_gguf(source, config, part, "f32"))
        else:
            float_file = folder / f"talker-{digest}-f16.{os.getpid()}.gguf"
            try:
                write_talker_gguf(source, config, float_file, "f16")
                _atomic(path, lambda part: llama_quantize(float_file, part, weights.upper(), _REBUILD))
            finally:
                float_file.unlink(missing_ok=True)
    except OSError as exc:
        raise ModelFileError(
            folder, f"could not write the Talker's llama.cpp file ({exc})", _REBUILD
        ) from None
    return path


def write_talker_gguf(
    source: Path, config: TalkerConfig, out_path: Path, dtype: Literal["f32", "f16"]
) -> None:
    """Write the decoder of `source` (talker.safetensors) as a float GGUF, tensor by tensor."""
    with torch.device("meta"):
        shapes = {name: tuple(p.shape) for name, p in TalkerModel(config).state_dict().items()}
    names = [name for name in shapes if gguf_name(name) is not None]
    writer = gguf.GGUFWriter(str(out_path), ARCHITECTURE)
    writer.add_name("Qwen2.5-Omni Talker")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    add_qwen2vl_layout(
        writer,
        context=32768,
        hidden=config.hidden_size,
        layers=config.num_hidden_layers,
        ffn=config.intermediate_size,
        heads=config.num_attention_heads,
        kv_heads=config.num_key_value_heads,
        theta=config.rope_theta,
        eps=config.rms_norm_eps,
        sections=config.mrope_section,
        head_dim=config.head_dim,
    )
    # Placeholder tokens: llama.cpp loads a vocabulary with every model; nothing is tokenized.
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([f"<|codec_{i}|>" for i in range(config.vocab_size)])
    writer.add_token_types([gguf.TokenType.CONTROL] * config.vocab_size)
    writer.add_token_merges(["< |"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)

    def stored(shape: tuple[int, ...]) -> np.dtype:
        return np.dtype(np.float16 if dtype == "f16" and len(shape) > 1 else np.float32)

    table = (config.vocab_size, config.hidden_size)  # token_embd: zeros, never read (rows come as embeddings)
    infos = [("token_embd.weight", table)] + [(gguf_name(n) or "", shapes[n]) for n in names]
    for name, shape in infos:
        writer.add_tensor_info(name, list(shape), stored(shape), int(np.prod(shape)) * stored(shape).itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.write_tensor_data(np.zeros(table, dtype=stored(table)))
    for name, tensor in zip(names, float_tensors(source, config, names), strict=True):
        writer.write_tensor_data(tensor.numpy().astype(stored(shapes[name])))
    writer.close()


def _remove_leftovers(folder: Path) -> None:
    """Partial files of builds cut short (one keeps its float file): older than any build takes."""
    for leftover in folder.glob("talker-*.*.*"):
        if time.time() - leftover.stat().st_mtime > LEFTOVER_AGE_S:
            leftover.unlink(missing_ok=True)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    try:
        write(part)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
