"""What llama.cpp requires of the two GGUFs it loads for Qwen2.5-Omni, checked before it sees them.

llama.cpp trusts a file's metadata, and some files that are well-formed GGUFs end the whole process
rather than the load: a block count over 512, a rotary or key width other than the head width,
M-RoPE sections that are all zero (each a GGML_ASSERT: SIGABRT), a vision tensor whose shape does
not follow from the header (GGML_ASSERT while the graph is built), or a vision tensor that is
missing (a null pointer: SIGSEGV). Others load nowhere (a missing or misshapen Thinker tensor, no
heads), which `models import` must refuse rather than write a bundle no start can open.

So, before llama.cpp loads either file, the hyperparameters it reads are checked for presence and
sane ranges, and every tensor it takes is checked for presence and the shape those hyperparameters
imply. The rules are llama.cpp's own (as vendored by llama-cpp-python 0.3.36):
- the Thinker, architecture `qwen2vl`: src/llama-model.cpp (hyperparameters), src/models/qwen2vl.cpp
  (`load_arch_tensors`, and the graph's asserts); it also refuses a file holding tensors it does
  not take ("wrong number of tensors");
- the vision projector, architecture `clip` with projector `qwen2.5o` (run as Qwen2.5-VL's ViT):
  tools/mtmd/clip.cpp (`load_hparams`, `load_tensors`) and tools/mtmd/models/qwen2vl.cpp (the
  graph, which uses every tensor named below and asserts there is no patch bias or class token).

Shapes are in GGUF's order, as llama.cpp writes them: the innermost dimension first.
"""

from __future__ import annotations

import math
from pathlib import Path

import gguf

from model.errors import ModelFileError

MAX_LAYERS = 512  # LLAMA_MAX_LAYERS: more is a GGML_ASSERT
MAX_WIDTH = 1 << 16  # widths and heads: far beyond any Qwen2.5-Omni (3584 at 7B), within int32 products
MAX_FFN = 1 << 18
MAX_CONTEXT = 1 << 24
MAX_IMAGE_SIZE = 8192  # clip.cpp's own cap
VISION_PROJECTORS = ("qwen2.5o", "qwen2.5vl")  # both run as clip.cpp's PROJECTOR_TYPE_QWEN25VL
VISION_MERGE = 2  # clip.cpp's Qwen2-VL graph merges 2x2 patches (it reshapes by n_embd * 4)

_INTS = {
    gguf.GGUFValueType.UINT8,
    gguf.GGUFValueType.INT8,
    gguf.GGUFValueType.UINT16,
    gguf.GGUFValueType.INT16,
    gguf.GGUFValueType.UINT32,
    gguf.GGUFValueType.INT32,
    gguf.GGUFValueType.UINT64,
    gguf.GGUFValueType.INT64,
}
_FLOATS = {gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64}


class _Layout:
    """One file's header, read with the checks that end in a ModelFileError naming it."""

    def __init__(self, path: Path, reader: gguf.GGUFReader, advice: str) -> None:
        self.path, self.reader, self.advice = path, reader, advice
        self.tensors = {t.name: t for t in reader.tensors}

    def fail(self, problem: str) -> ModelFileError:
        return ModelFileError(self.path, problem, self.advice)

    def integer(self, key: str, low: int, high: int, default: int | None = None) -> int:
        field = self.reader.get_field(key)
        if field is None:
            if default is None:
                raise self.fail(f"{key} is missing")
            return default
        if len(field.types) != 1 or field.types[0] not in _INTS:
            raise self.fail(f"{key} is not an integer")
        value = int(field.parts[field.data[0]][0])
        if not low <= value <= high:
            raise self.fail(
                f"{key} is {value}, " + (f"not {low}" if low == high else f"outside {low}..{high}")
            )
        return value

    def number(self, key: str, low: float, high: float, required: bool = True) -> None:
        field = self.reader.get_field(key)
        if field is None:
            if required:
                raise self.fail(f"{key} is missing")
            return
        if len(field.types) != 1 or field.types[0] not in _FLOATS | _INTS:
            raise self.fail(f"{key} is not a number")
        value = float(field.parts[field.data[0]][0])
        if not (math.isfinite(value) and low <= value <= high):
            raise self.fail(f"{key} is {value}, outside {low}..{high}")

    def array(self, key: str, kinds: set[gguf.GGUFValueType], length: int) -> gguf.ReaderField:
        """An array of at least `length` values of `kinds`."""
        field = self.reader.get_field(key)
        if field is None:
            raise self.fail(f"{key} is missing")
        if len(field.types) != 2 or field.types[0] != gguf.GGUFValueType.ARRAY or field.types[1] not in kinds:
            raise self.fail(f"{key} is not an array of the right type")
        if len(field.data) < length:
            raise self.fail(f"{key} has {len(field.data)} values, fewer than {length}")
        return field

    def numbers(self, key: str, kinds: set[gguf.GGUFValueType], length: int) -> list[float]:
        field = self.array(key, kinds, length)
        return [float(field.parts[i][0]) for i in field.data]

    def string(self, key: str) -> str:
        field = self.reader.get_field(key)
        if field is None or field.types != [gguf.GGUFValueType.STRING]:
            return ""
        return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")

    def tensor(self, name: str, *shape: int, required: bool = True) -> None:
        tensor = self.tensors.get(name)
        if tensor is None:
            if required:
                raise self.fail(f"tensor {name} is missing")
            return
        found = [int(n) for n in tensor.shape]
        while len(found) > len(shape) and found[-1] == 1:  # ggml's trailing dimensions of 1
            found.pop()
        if found != list(shape):
            raise self.fail(f"tensor {name} has shape {found}, where its header implies {list(shape)}")


def check_qwen2vl(path: Path, reader: gguf.GGUFReader, advice: str) -> None:
    """The Thinker GGUF (architecture qwen2vl) as llama.cpp will load and run it."""
    f = _Layout(path, reader, advice)
    arch = "qwen2vl"
    f.integer(f"{arch}.context_length", 1, MAX_CONTEXT)
    n_embd = f.integer(f"{arch}.embedding_length", 1, MAX_WIDTH)
    n_layer = f.integer(f"{arch}.block_count", 1, MAX_LAYERS)
    n_ff = f.integer(f"{arch}.feed_forward_length", 1, MAX_FFN)
    n_head = f.integer(f"{arch}.attention.head_count", 1, n_embd)
    n_head_kv = f.integer(f"{arch}.attention.head_count_kv", 1, n_head, default=n_head)
    if n_embd % n_head or n_head % n_head_kv:
        raise f.fail(f"{n_head} heads ({n_head_kv} for keys and values) do not divide the width {n_embd}")
    head = n_embd // n_head
    for key in ("attention.key_length", "attention.value_length", "rope.dimension_count"):
        f.integer(f"{arch}.{key}", head, head, default=head)  # anything else is a GGML_ASSERT
    f.number(f"{arch}.attention.layer_norm_rms_epsilon", 0.0, 1.0)
    f.number(f"{arch}.rope.freq_base", 1e-6, 1e12, required=False)
    sections = f.numbers(f"{arch}.rope.dimension_sections", _INTS, 4)
    if len(sections) != 4 or min(sections) < 0 or sum(sections) != head // 2:
        raise f.fail(
            f"M-RoPE sections {[int(s) for s in sections]} do not split a head's {head // 2} rotary pairs"
        )
    n_vocab = len(f.array("tokenizer.ggml.tokens", {gguf.GGUFValueType.STRING}, 1).data)

    gqa = n_head_kv * head
    f.tensor("token_embd.weight", n_embd, n_vocab)
    f.tensor("output_norm.weight", n_embd)
    f.tensor("output.weight", n_embd, n_vocab, required=False)  # absent: tied to the embeddings
    f.tensor("output.bias", n_vocab, required=False)
    expected = {"token_embd.weight", "output_norm.weight", "output.weight", "output.bias"}
    for i in range(n_layer):
        shapes = {
            "attn_norm.weight": (n_embd,),
            "attn_q.weight": (n_embd, n_embd),
            "attn_k.weight": (n_embd, gqa),
            "attn_v.weight": (n_embd, gqa),
            "attn_output.weight": (n_embd, n_embd),
            "ffn_norm.weight": (n_embd,),
            "ffn_gate.weight": (n_embd, n_ff),
            "ffn_down.weight": (n_ff, n_embd),
            "ffn_up.weight": (n_embd, n_ff),
        }
        for name, shape in shapes.items():
            f.tensor(f"blk.{i}.{name}", *shape)
        for name, shape in {"attn_q.bias": (n_embd,), "attn_k.bias": (gqa,), "attn_v.bias": (gqa,)}.items():
            f.tensor(f"blk.{i}.{name}", *shape, required=False)
            shapes[name] = shape
        expected |= {f"blk.{i}.{name}" for name in shapes}
    unexpected = sorted(set(f.tensors) - expected)
    if unexpected:
        raise f.fail(f"tensor {unexpected[0]} is not one llama.cpp takes for {n_layer} {arch} blocks")


def check_qwen25o_vision(path: Path, reader: gguf.GGUFReader, advice: str) -> None:
    """The vision projector GGUF (architecture clip, projector qwen2.5o) as clip.cpp will load and run it."""
    f = _Layout(path, reader, advice)
    projector = f.string("clip.projector_type") or f.string("clip.vision.projector_type")
    if projector not in VISION_PROJECTORS:
        raise f.fail(
            f"projector type {projector or 'missing'!r}, not Qwen2.5-Omni's vision ({VISION_PROJECTORS[0]})"
        )
    if not _flag(reader, "clip.has_vision_encoder"):
        raise f.fail("the projector has no vision encoder")
    n_embd = f.integer("clip.vision.embedding_length", 1, MAX_WIDTH)
    n_head = f.integer("clip.vision.attention.head_count", 1, n_embd)
    if n_embd % n_head or (n_embd // n_head) % 4:
        raise f.fail(f"{n_head} heads do not split the width {n_embd} into heads of 4 M-RoPE sections")
    head = n_embd // n_head
    f.integer("clip.vision.attention.head_count_kv", n_head, n_head, default=n_head)
    f.integer("clip.vision.attention.key_length", head, head, default=head)
    n_ff = f.integer("clip.vision.feed_forward_length", 1, MAX_FFN)
    n_layer = f.integer("clip.vision.block_count", 1, MAX_LAYERS)
    width = f.integer("clip.vision.projection_dim", 1, MAX_WIDTH)
    f.integer("clip.vision.image_size", 0, MAX_IMAGE_SIZE)
    patch = f.integer("clip.vision.patch_size", 1, MAX_IMAGE_SIZE)
    f.integer("clip.vision.n_wa_pattern", 0, MAX_LAYERS)
    f.integer("clip.vision.spatial_merge_size", VISION_MERGE, VISION_MERGE, default=VISION_MERGE)
    f.number("clip.vision.attention.layer_norm_epsilon", 0.0, 1.0)
    f.numbers("clip.vision.image_mean", _FLOATS, 3)
    f.numbers("clip.vision.image_std", _FLOATS, 3)

    for name in ("v.patch_embd.bias", "v.class_embd"):
        if name in f.tensors:
            raise f.fail(f"tensor {name} is not part of Qwen2.5-Omni's vision tower")
    f.tensor("v.patch_embd.weight", patch, patch, 3, n_embd)
    f.tensor("v.patch_embd.weight.1", patch, patch, 3, n_embd)  # the second frame's kernel
    for i in range(n_layer):
        block = f"v.blk.{i}"
        for norm in ("ln1", "ln2"):
            f.tensor(f"{block}.{norm}.weight", n_embd)
            f.tensor(f"{block}.{norm}.bias", n_embd, required=False)
        for projection in ("attn_q", "attn_k", "attn_v", "attn_out"):
            f.tensor(f"{block}.{projection}.weight", n_embd, n_embd)
            f.tensor(f"{block}.{projection}.bias", n_embd, required=projection != "attn_out")
        for projection in ("ffn_up", "ffn_gate"):
            f.tensor(f"{block}.{projection}.weight", n_embd, n_ff)
            f.tensor(f"{block}.{projection}.bias", n_ff, required=False)
        f.tensor(f"{block}.ffn_down.weight", n_ff, n_embd)
        f.tensor(f"{block}.ffn_down.bias", n_embd, required=False)
    f.tensor("v.post_ln.weight", n_embd)
    merged = n_embd * VISION_MERGE * VISION_MERGE
    f.tensor("mm.0.weight", merged, merged)
    f.tensor("mm.0.bias", merged)
    f.tensor("mm.2.weight", merged, width)
    f.tensor("mm.2.bias", width)


def _flag(reader: gguf.GGUFReader, key: str) -> bool:
    field = reader.get_field(key)
    return (
        field is not None and field.types == [gguf.GGUFValueType.BOOL] and bool(field.parts[field.data[0]][0])
    )
