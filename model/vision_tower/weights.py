"""The vision tower's weights from the bundle's own mmproj GGUF: bundles stay as they are.

An mmproj holds the tower under clip.cpp's names (`v.blk.N.attn_q.weight`, `mm.0.weight`...), in
float32, float16 or Q8_0 (what `omnidesk models convert` and ggml-org's downloads write); each
tensor is dequantized to float32 at load. `convert` is the one place where clip.cpp's names and
layout meet our modules: the patch kernel, stored as one 2-D kernel per frame, becomes one matrix
over the flattened 3-D patch; q, k and v are fused into one matrix, and so are the MLP's gate and
up. Tensors of other towers in the file (an audio encoder's `a.*`) are left out.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch

from model.errors import ModelFileError
from model.vision_tower.network import VisionConfig, VisionTower, rotary_frequencies

_REDO = "Download the model again (omnidesk models download) or convert it from the checkpoint"
_BLOCK = {  # clip.cpp's name within a block -> ours (q, k, v and gate, up are fused by `convert`)
    "ln1": "norm1",
    "ln2": "norm2",
    "attn_out": "attn.proj",
    "ffn_down": "mlp.down",
}
_TOP = {"v.post_ln": "merger.norm", "mm.0": "merger.fc1", "mm.2": "merger.fc2"}


def vision_tower_from_mmproj(path: Path) -> VisionTower:
    """The tower of the mmproj at `path`, float32 on the CPU, in eval mode."""
    try:
        reader = gguf.GGUFReader(path)
        config = _config(reader)
        tensors = {t.name: _dequantized(t) for t in reader.tensors if t.name.startswith(("v.", "mm."))}
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(path, f"not a readable vision projector ({exc})", _REDO) from None
    with torch.device("meta"):  # no memory, no random initial values: the file's replace them (2.7 s at 3B)
        tower = VisionTower(config)
    tower.load_state_dict(convert(tensors, config.depth), assign=True)
    tower.inv_freq = rotary_frequencies(config)
    return tower.eval()


def convert(tensors: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """clip.cpp's tensors (name -> float tensor, GGUF names) as `VisionTower`'s state dict."""
    kernel = torch.stack([tensors["v.patch_embd.weight"], tensors["v.patch_embd.weight.1"]], dim=2)
    state = {"patch_embed.weight": kernel.reshape(kernel.shape[0], -1)}  # (width, 3 * 2 * 14 * 14)
    for kind in ("weight", "bias"):
        for theirs, ours in _TOP.items():
            if f"{theirs}.{kind}" in tensors:
                state[f"{ours}.{kind}"] = tensors[f"{theirs}.{kind}"]
        for i in range(depth):
            blk = f"v.blk.{i}"
            for theirs, ours in _BLOCK.items():
                if f"{blk}.{theirs}.{kind}" in tensors:
                    state[f"blocks.{i}.{ours}.{kind}"] = tensors[f"{blk}.{theirs}.{kind}"]
            state[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [tensors[f"{blk}.attn_{x}.{kind}"] for x in "qkv"]
            )
            gate_up = [tensors[f"{blk}.ffn_{x}.{kind}"] for x in ("gate", "up")]
            state[f"blocks.{i}.mlp.gate_up.{kind}"] = torch.cat(gate_up)
    return state


def _config(reader: gguf.GGUFReader) -> VisionConfig:
    def value(key: str) -> int | float:
        field = reader.fields.get(f"clip.vision.{key}")
        if field is None:
            raise KeyError(f"clip.vision.{key}")
        return field.contents()

    depth = int(value("block_count"))
    pattern = int(value("n_wa_pattern"))
    return VisionConfig(
        depth=depth,
        width=int(value("embedding_length")),
        mlp_width=int(value("feed_forward_length")),
        heads=int(value("attention.head_count")),
        out_width=int(value("projection_dim")),
        full_attention=tuple(range(pattern - 1, depth, pattern)),
        patch=int(value("patch_size")),
        norm_eps=float(value("attention.layer_norm_epsilon")),
    )


def _dequantized(tensor: gguf.ReaderTensor) -> torch.Tensor:
    """A GGUF tensor as float32, in torch's dimension order."""
    shape = tuple(int(d) for d in reversed(tensor.shape))
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    return torch.from_numpy(
        np.array(values, dtype=np.float32).reshape(shape)
    )  # a copy: the file is mapped read-only
