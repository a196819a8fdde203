"""A model bundle that sees and hears, at a real Qwen2.5-Omni shape with random weights (`bench look`).

`random_bundle`'s text-and-speech bundle, plus the two encoders a question about the screen needs,
random, at the released shapes: the audio tower (32 layers, width 1280; 0.64 B parameters) saved as
`audio_encoder.safetensors` under the checkpoint's names, and the vision tower (`bench vision`'s
RELEASED_VISION, 0.67 B parameters) written as an f16 mmproj GGUF, as `omnidesk models convert`
writes one. The other files are linked from the random bundle; the whole is cached beside it.

`size="tiny"`: the same files at toy shapes (`bench gpu`'s 2-layer Thinker of width 256 and Token2Wav,
encoders and a Talker a few layers deep), built in seconds, so that the bench runs in the test suite.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from model.bench.parts.gpu_speech import TINY_BIGVGAN, TINY_DIT, TINY_THINKER
from model.bench.parts.random_bundle import bundle_tokens, random_bundle
from model.bench.parts.random_thinker import SHAPES
from model.bench.vision import RELEASED_VISION
from model.files.bundle import MANIFEST, Bundle, write_manifest
from model.files.convert import link_or_copy, save_safetensors
from model.files.mmproj_gguf import VISION_PREFIX, write_vision_gguf

TINY_AUDIO = {"encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64, "d_model": 32}
TINY_VISION = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "fullatt_block_indexes": [1],
}
TINY_TALKER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "layer_types": ["full_attention"] * 2,
    "max_window_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
}


def look_bundle(size: str, quant: str, cache: Path, seed: int = 0) -> Path:
    """The bundle folder for `size` ("3b", "7b" or "tiny"), built on first use and cached in `cache`."""
    tiny = size == "tiny"
    shape = TINY_THINKER if tiny else SHAPES[size]
    base = Bundle.open(random_bundle(shape, quant, cache, seed, _tiny_speech if tiny else None), verify=False)
    root = cache / base.root.name.replace("random-bundle", "random-look")
    if (root / MANIFEST).is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    config = base.config
    thinker = config["thinker_config"]
    thinker["audio_config"].update(TINY_AUDIO if tiny else {})
    thinker["vision_config"].update({**RELEASED_VISION, **(TINY_VISION if tiny else {})})
    files = {}
    for part in base.files:
        files[part] = root / base.file(part).name
        files[part].unlink(missing_ok=True)
        link_or_copy(base.file(part), files[part])
    torch.manual_seed(seed)
    files["audio_encoder"] = root / "audio_encoder.safetensors"
    save_safetensors(_random_audio_tower(thinker["audio_config"]), files["audio_encoder"])
    files["mmproj"] = root / "mmproj-f16.gguf"
    vision, tensors = _random_vision_tower(thinker["vision_config"], shape.hidden)
    write_vision_gguf(vision, shape.hidden, tensors, files["mmproj"], "f16", "random vision tower")
    write_manifest(root, files, config, bundle_tokens(config), base.codec, base.voices, base.thinker_dtype)
    return root


def _random_audio_tower(audio_config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """transformers' audio tower at `audio_config`, random, under the checkpoint's names."""
    from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniAudioEncoderConfig
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniAudioEncoder

    tower = Qwen2_5OmniAudioEncoder(Qwen2_5OmniAudioEncoderConfig(**audio_config))
    return {f"thinker.audio_tower.{name}": t.contiguous() for name, t in tower.state_dict().items()}


def _random_vision_tower(
    vision_config: dict[str, Any], width: int
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """transformers' vision tower and merger into `width`: its config and tensors (checkpoint names)."""
    from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniVisionEncoderConfig
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniVisionEncoder

    config = Qwen2_5OmniVisionEncoderConfig(**{**vision_config, "out_hidden_size": width})
    tower = Qwen2_5OmniVisionEncoder(config)
    return config.to_dict(), {f"{VISION_PREFIX}{name}": t for name, t in tower.state_dict().items()}


def _tiny_speech(config: dict[str, Any]) -> None:
    """The Talker and Token2Wav a few layers deep (for `size="tiny"`)."""
    config["talker_config"].update(TINY_TALKER)
    for part, tiny in (("dit_config", TINY_DIT), ("bigvgan_config", TINY_BIGVGAN)):  # `bench gpu`'s
        fields = config["token2wav_config"][part]
        fields.update({name: value for name, value in asdict(tiny).items() if name in fields})
