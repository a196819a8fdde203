"""The Talker's weights: `talker.safetensors` under the checkpoint's own names -> a `TalkerModel`.

Checkpoint names are mapped to ours in one place (`checkpoint_name`); every name and shape is
checked against the config before anything is assigned.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from model.errors import ModelFileError
from model.talker.network import TalkerConfig, TalkerModel

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
    path: Path, config: TalkerConfig, device: str | torch.device, dtype: torch.dtype
) -> TalkerModel:
    """Build the network from `talker.safetensors` (checkpoint names), checking it against `config`."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118 (not a dict)
    except (OSError, SafetensorError) as exc:
        raise ModelFileError(path, f"unreadable talker file ({exc})", _REBUILD) from None
    return talker_from_tensors(tensors, config, device, dtype, source=path)


def talker_from_tensors(
    tensors: dict[str, torch.Tensor],
    config: TalkerConfig,
    device: str | torch.device,
    dtype: torch.dtype,
    source: Path | str = "talker.safetensors",
) -> TalkerModel:
    """Build the network from tensors under the checkpoint's names (talker.*), checking every name and shape.

    Tensors already on `device` in `dtype` are used as they are, not copied.
    """
    with torch.device("meta"):
        model = TalkerModel(config)
    expected = {checkpoint_name(name): (name, tuple(p.shape)) for name, p in model.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ModelFileError(source, f"tensor {missing[0]} is missing ({len(missing)} in all)", _REBUILD)
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise ModelFileError(
            source,
            f"unexpected tensor {unexpected[0]} for this talker config ({len(unexpected)} in all)",
            _REBUILD,
        )
    state = {}
    for key, (name, shape) in expected.items():
        if tuple(tensors[key].shape) != shape:
            raise ModelFileError(
                source,
                f"tensor {key} has shape {tuple(tensors[key].shape)} "
                f"but the manifest's talker config needs {shape}",
                "The talker file and the bundle manifest come from different checkpoints; " + _REBUILD,
            )
        state[name] = tensors[key].to(device=device, dtype=dtype)
    model.load_state_dict(state, assign=True)
    return model.eval()
