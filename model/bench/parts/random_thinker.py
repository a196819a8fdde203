"""A Thinker GGUF at a real Qwen2.5-Omni shape with random weights, for benchmarks on any machine.

The tensors, metadata and tokenizer layout are those of a converted checkpoint;
the vocabulary is synthetic: byte tokens, one token for each word of WORDS (as Qwen's
vocabulary has for common English words, so that the benchmarks' prompts have realistic
lengths, not one token per byte), filler tokens, then the special tokens. It is written
as f16 tensor by tensor, then quantized by llama.cpp, and cached by shape, vocabulary
version and quantization.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from model.files.thinker_gguf import ARCHITECTURE, add_qwen2vl_layout, quantize
from model.prompt_layout import SPEECH_SYSTEM_PROMPT

SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
WORDS = f"{SPEECH_SYSTEM_PROMPT}\nWhat am I looking at? Tell me in a few words, please."
VOCABULARY_VERSION = 2  # in the cached file's name: 1 had byte tokens only


@dataclass(frozen=True)
class ThinkerShape:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    tied: bool
    mrope_sections: tuple[int, int, int] = (16, 24, 24)


SHAPES = {
    "3b": ThinkerShape("3b", 2048, 36, 16, 2, 11008, 151936, tied=True),
    "7b": ThinkerShape("7b", 3584, 28, 28, 4, 18944, 152064, tied=False),
}


def special_tokens() -> dict[str, int]:
    """Token roles -> ids in the synthetic vocabulary (the Qwen ids, which fit both vocabularies)."""
    return {"endoftext": 151643, "im_start": 151644, "im_end": 151645}


def byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte, indexed by byte value (llama.cpp looks them up)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def random_thinker(shape: ThinkerShape, quant: str, cache: Path, seed: int = 0) -> Path:
    """The path of the GGUF, built on first use (several minutes and ~2x its f16 size on disk)."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"random-thinker-{shape.name}-v{VOCABULARY_VERSION}-{quant}.gguf"
    if target.is_file():
        return target
    f16 = cache / f"random-thinker-{shape.name}-f16.gguf.part"
    _write_f16(shape, f16, seed)
    part = target.with_name(target.name + ".part")
    quantize(f16, part, quant)
    f16.unlink()
    part.rename(target)
    return target


def word_merges(text: str) -> list[tuple[str, str]]:
    """BPE merges, in GPT-2's byte alphabet, that make each word of `text` one token (with the
    space before it, as the qwen2 pre-tokenizer cuts words): each word's prefixes, one letter more
    at a time."""
    alphabet = byte_level_alphabet()
    merges: dict[tuple[str, str], None] = {}
    for word in re.findall(r" ?[A-Za-z]+", text):
        symbols = [alphabet[b] for b in word.encode()]
        left = symbols[0]
        for symbol in symbols[1:]:
            merges[(left, symbol)] = None
            left += symbol
    return list(merges)


def _tensors(shape: ThinkerShape) -> list[tuple[str, tuple[int, ...]]]:
    head_dim = shape.hidden // shape.heads
    kv = shape.kv_heads * head_dim
    names: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (shape.vocab, shape.hidden))]
    for i in range(shape.layers):
        names += [
            (f"blk.{i}.attn_norm.weight", (shape.hidden,)),
            (f"blk.{i}.attn_q.weight", (shape.hidden, shape.hidden)),
            (f"blk.{i}.attn_q.bias", (shape.hidden,)),
            (f"blk.{i}.attn_k.weight", (kv, shape.hidden)),
            (f"blk.{i}.attn_k.bias", (kv,)),
            (f"blk.{i}.attn_v.weight", (kv, shape.hidden)),
            (f"blk.{i}.attn_v.bias", (kv,)),
            (f"blk.{i}.attn_output.weight", (shape.hidden, shape.hidden)),
            (f"blk.{i}.ffn_norm.weight", (shape.hidden,)),
            (f"blk.{i}.ffn_gate.weight", (shape.ffn, shape.hidden)),
            (f"blk.{i}.ffn_up.weight", (shape.ffn, shape.hidden)),
            (f"blk.{i}.ffn_down.weight", (shape.hidden, shape.ffn)),
        ]
    names.append(("output_norm.weight", (shape.hidden,)))
    if not shape.tied:
        names.append(("output.weight", (shape.vocab, shape.hidden)))
    return names


def _write_f16(shape: ThinkerShape, path: Path, seed: int) -> None:
    writer = gguf.GGUFWriter(str(path), ARCHITECTURE)
    writer.add_name(f"random Qwen2.5-Omni-{shape.name.upper()} Thinker")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    add_qwen2vl_layout(
        writer,
        context=32768,
        hidden=shape.hidden,
        layers=shape.layers,
        ffn=shape.ffn,
        heads=shape.heads,
        kv_heads=shape.kv_heads,
        theta=1e6,
        eps=1e-6,
        sections=shape.mrope_sections,
    )
    ids = special_tokens()
    by_id = {i: t for t, i in zip(SPECIAL, ids.values(), strict=True)}
    byte_tokens = byte_level_alphabet()
    merges = word_merges(WORDS)
    tokens = [by_id.get(i, byte_tokens[i] if i < 256 else f"t{i}") for i in range(shape.vocab)]
    tokens[256 : 256 + len(merges)] = [a + b for a, b in merges]
    types = [gguf.TokenType.CONTROL if i in by_id else gguf.TokenType.NORMAL for i in range(shape.vocab)]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    writer.add_token_merges([f"{a} {b}" for a, b in merges])
    writer.add_bos_token_id(ids["endoftext"])
    writer.add_eos_token_id(ids["im_end"])
    writer.add_add_bos_token(False)

    tensors = _tensors(shape)
    for name, dims in tensors:
        dtype = np.float16 if len(dims) > 1 else np.float32
        writer.add_tensor_info(
            name, list(dims), np.dtype(dtype), int(np.prod(dims)) * np.dtype(dtype).itemsize
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for name, dims in tensors:
        if len(dims) == 1:
            data = np.ones(dims, np.float32) if name.endswith("norm.weight") else np.zeros(dims, np.float32)
        else:
            data = (rng.standard_normal(dims, dtype=np.float32) * 0.02).astype(np.float16)
        writer.write_tensor_data(data)
    writer.close()
