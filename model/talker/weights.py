"""The Talker's weights: `talker.safetensors` under the checkpoint's own names -> a `TalkerModel`.

Checkpoint names are mapped to ours in one place (`checkpoint_name`); every name and shape is
checked against the config before anything is read. Quantized weights (talker/quantize.py) are
made as the file is read, one layer at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from model.errors import ModelFileError
from model.talker.network import TalkerConfig, TalkerModel
from model.talker.quantize import Weights, quantized

_REBUILD = "Build the bundle again (omnidesk models convert) from the original checkpoint"

# Our module names -> the checkpoint's (under "talker."), outside the per-layer part.
_TOP_NAMES = {
    "proj": "thinker_to_talker_proj",
    "embed": "model.embed_tokens",
    "norm": "model.norm",
    "head": "codec_head",
}
_LAYER_NAMES = {
    "attention_norm": "input_layernorm",
    "attention.q": "self_attn.q_proj",
    "attention.k": "self_attn.k_proj",
    "attention.v": "self_attn.v_proj",
    "attention.o": "self_attn.o_proj",
    "mlp_norm": "post_attention_layernorm",
    "mlp.gate": "mlp.gate_proj",
    "mlp.up": "mlp.up_proj",
    "mlp.down": "mlp.down_proj",
}


def checkpoint_name(name: str) -> str:
    """Our parameter name -> its name in the checkpoint, e.g. layers.3.attention.q.weight ->
    talker.model.layers.3.self_attn.q_proj.weight."""
    module, leaf = name.rsplit(".", 1)
    if module.startswith("layers."):
        _, number, rest = module.split(".", 2)
        return f"talker.model.layers.{number}.{_LAYER_NAMES[rest]}.{leaf}"
    return f"talker.{_TOP_NAMES[module]}.{leaf}"


def load_talker(
    path: Path,
    config: TalkerConfig,
    device: str | torch.device,
    dtype: torch.dtype,
    weights: Weights | None = None,
    prompt_copy: bool = False,
) -> TalkerModel:
    """Build the network from `talker.safetensors` (checkpoint names), checking it against `config`.

    Tensors are read one module at a time, and with `weights` each linear layer is quantized as it
    is read, so that memory never holds more than the network and one float matrix; with
    `prompt_copy` too, each keeps a bfloat16 copy for prompts (`quantize.PROMPT_ROWS`)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            return _assemble(_OnDisk(file), config, device, dtype, path, weights, prompt_copy)
    except (OSError, SafetensorError) as exc:
        raise ModelFileError(path, f"unreadable talker file ({exc})", _REBUILD) from None


def talker_from_tensors(
    tensors: Mapping[str, torch.Tensor],
    config: TalkerConfig,
    device: str | torch.device,
    dtype: torch.dtype,
    source: Path | str = "talker.safetensors",
    weights: Weights | None = None,
) -> TalkerModel:
    """Build the network from tensors under the checkpoint's names (talker.*), checking every name and shape.

    Tensors already on `device` in `dtype` are used as they are, not copied (unless quantized).
    """
    return _assemble(_InMemory(tensors), config, device, dtype, source, weights)


class _Tensors(Protocol):
    def names(self) -> set[str]: ...
    def shape(self, name: str) -> tuple[int, ...]: ...
    def tensor(self, name: str) -> torch.Tensor: ...


class _InMemory:
    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self._tensors = tensors

    def names(self) -> set[str]:
        return set(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensors[name].shape)

    def tensor(self, name: str) -> torch.Tensor:
        return self._tensors[name]


class _OnDisk:
    """A safetensors file read lazily: shapes from its header, tensors when asked."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def names(self) -> set[str]:
        return set(self._file.keys())

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._file.get_slice(name).get_shape())

    def tensor(self, name: str) -> torch.Tensor:
        return self._file.get_tensor(name)


def _assemble(
    tensors: _Tensors,
    config: TalkerConfig,
    device: str | torch.device,
    dtype: torch.dtype,
    source: Path | str,
    weights: Weights | None,
    prompt_copy: bool = False,
) -> TalkerModel:
    """The network, every name and shape checked before a byte is read, then filled module by module."""
    with torch.device("meta"):
        model = TalkerModel(config)
    _check(tensors, model, source)
    for name, module in list(model.named_modules()):
        own = [leaf for leaf, _ in module.named_parameters(recurse=False)]
        if not own:
            continue
        prefix = f"{name}." if name else ""
        state = {leaf: tensors.tensor(checkpoint_name(prefix + leaf)).to(device, dtype) for leaf in own}
        module.load_state_dict(state, assign=True)
        if weights is not None and isinstance(module, nn.Linear):
            parent, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(parent), attribute, quantized(module, weights, prompt_copy))
    return model.eval()


def float_tensors(path: Path, config: TalkerConfig, names: Iterable[str]) -> Iterator[torch.Tensor]:
    """The float32 tensors of `talker.safetensors` under our parameter `names`, one at a time, in
    their order, after every name and shape of the file is checked against `config`."""
    with torch.device("meta"):
        model = TalkerModel(config)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            tensors = _OnDisk(file)
            _check(tensors, model, path)
            for name in names:
                yield tensors.tensor(checkpoint_name(name)).float()
    except (OSError, SafetensorError) as exc:
        raise ModelFileError(path, f"unreadable talker file ({exc})", _REBUILD) from None


def _check(tensors: _Tensors, model: TalkerModel, source: Path | str) -> None:
    """Every tensor `model` (on the meta device) needs is in `tensors` with its shape, and no other."""
    expected = {checkpoint_name(name): tuple(p.shape) for name, p in model.state_dict().items()}
    present = tensors.names()
    missing = sorted(set(expected) - present)
    if missing:
        raise ModelFileError(source, f"tensor {missing[0]} is missing ({len(missing)} in all)", _REBUILD)
    unexpected = sorted(present - set(expected))
    if unexpected:
        raise ModelFileError(
            source,
            f"unexpected tensor {unexpected[0]} for this talker config ({len(unexpected)} in all)",
            _REBUILD,
        )
    for key, shape in expected.items():
        if tensors.shape(key) != shape:
            raise ModelFileError(
                source,
                f"tensor {key} has shape {tensors.shape(key)} but the manifest's talker config needs {shape}",
                "The talker file and the bundle manifest come from different checkpoints; " + _REBUILD,
            )
