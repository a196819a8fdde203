"""A model bundle at a real Qwen2.5-Omni shape with random weights, for the pipeline benchmark.

The Thinker is `random_thinker`'s quantized GGUF. The Talker and Token2Wav are transformers'
own modules at the released configuration, initialised by transformers and saved under the
checkpoint's tensor names, with one voice. There is no audio encoder and no vision projector:
the benchmark's turn is text. The package ships only 7B-labelled defaults; each size gets its
released Talker's layout (`TALKER_LAYOUTS`), with the Thinker's width as its input width. Built on
first use (several minutes) and cached.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from model.bench.parts.random_thinker import ThinkerShape, random_thinker, special_tokens
from model.files.bundle import MANIFEST, write_manifest
from model.files.checkpoint import Voice
from model.files.convert import link_or_copy, media_ids, save_safetensors, speech_ids, voice_tensors

# The released Talkers' layouts (each config.json overrides the package's thinker-sized defaults).
# 7B: its talker_config, as third-party code quotes it (REFERENCE.md 1.1); 1.351 B parameters.
# 3B: not quoted anywhere we can read. A public audit of the 3B checkpoint counts its talker at
# 385 M parameters; Qwen2.5-0.5B's decoder (width 896, 24 layers, feed-forward 4864, 14 heads of 64,
# 2 key-value heads) into the Thinker's 2048 gives 384.6 M, and the 7B Talker's layout 1.35 B.
# Only the split into heads is a guess (7 heads of 128 count the same); it moves no weight bytes.
TALKER_LAYOUTS: dict[str, dict[str, Any]] = {
    "3b": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "rms_norm_eps": 1e-6,
        "mrope_section": (8, 12, 12),
    },
    "7b": {
        "hidden_size": 896,
        "intermediate_size": 18944,
        "num_hidden_layers": 24,
        "num_attention_heads": 12,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "rms_norm_eps": 1e-6,
        "mrope_section": (16, 24, 24),
    },
}
BUNDLE_VERSION = 3  # in the cached folder's name: 2 gave the 3B Thinker the 7B Talker
VOICE, VOICE_BOS = "Chelsie", 151872  # the released speaker dictionary's text-bos id for Chelsie
VOICE_MEL_FRAMES = 300  # 3 s of reference mel


def talker_config(size: str, embedding_size: int) -> dict[str, Any]:
    """The `size` ("3b" or "7b") Talker's configuration, reading a Thinker of width `embedding_size`."""
    layout = dict(TALKER_LAYOUTS[size])
    sections = layout.pop("mrope_section")
    layers = int(layout["num_hidden_layers"])
    return {
        **layout,
        "embedding_size": embedding_size,
        "layer_types": ["full_attention"] * layers,
        "max_window_layers": layers,
        "rope_parameters": _rope(sections),
    }


def omni_config(shape: ThinkerShape) -> dict[str, Any]:
    """A Qwen2_5OmniConfig dict (as config.json holds it) with the Thinker at `shape`."""
    from transformers import Qwen2_5OmniConfig

    config: dict[str, Any] = json.loads(Qwen2_5OmniConfig().to_json_string())
    thinker = config["thinker_config"]
    thinker["text_config"].update(
        hidden_size=shape.hidden,
        intermediate_size=shape.ffn,
        num_hidden_layers=shape.layers,
        layer_types=["full_attention"] * shape.layers,
        max_window_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        vocab_size=shape.vocab,
        tie_word_embeddings=shape.tied,
        rope_parameters=_rope(shape.mrope_sections),
    )
    thinker["tie_word_embeddings"] = shape.tied
    for field in ("vision_start_token_id", "vision_end_token_id"):  # the released config.json has them
        thinker[field] = config["talker_config"][field]
    thinker["vision_config"]["out_hidden_size"] = shape.hidden
    thinker["audio_config"]["output_dim"] = shape.hidden
    size = shape.name if shape.name in TALKER_LAYOUTS else "7b"  # toy shapes shrink it afterwards
    config["talker_config"].update(talker_config(size, shape.hidden))
    return config


def bundle_tokens(config: dict[str, Any]) -> dict[str, int]:
    """The bundle's token roles: the chat markers of the synthetic vocabulary, the rest from the config."""
    thinker = config["thinker_config"]
    vision = {"vision_bos": thinker["vision_start_token_id"], "vision_eos": thinker["vision_end_token_id"]}
    return special_tokens() | media_ids(thinker) | vision | speech_ids(config["talker_config"])[0]


def random_bundle(
    shape: ThinkerShape,
    quant: str,
    cache: Path,
    seed: int = 0,
    speech: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """The bundle folder, built on first use (needs ~4 bytes per Talker and Token2Wav parameter of RAM).
    `speech` may shrink the Talker's and Token2Wav's configs in place (toy shapes, for tests; the
    shape's name then says so, as the folder is named after it)."""
    from transformers import (
        Qwen2_5OmniTalkerConfig,
        Qwen2_5OmniTalkerForConditionalGeneration,
        Qwen2_5OmniToken2WavConfig,
    )
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniToken2WavModel

    thinker = random_thinker(shape, quant, cache, seed)
    name = thinker.stem.replace("random-thinker", "random-bundle").replace("-v", f"-b{BUNDLE_VERSION}-v", 1)
    root = cache / name
    if (root / MANIFEST).is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    config = omni_config(shape)
    if speech is not None:
        speech(config)
    files = {"thinker": root / thinker.name}
    files["thinker"].unlink(missing_ok=True)
    link_or_copy(thinker, files["thinker"])

    torch.manual_seed(seed)
    modules = {
        "talker": Qwen2_5OmniTalkerForConditionalGeneration(
            Qwen2_5OmniTalkerConfig.from_dict(config["talker_config"])
        ),
        "token2wav": Qwen2_5OmniToken2WavModel(
            Qwen2_5OmniToken2WavConfig.from_dict(config["token2wav_config"])
        ),
    }
    for part, module in modules.items():
        files[part] = root / f"{part}.safetensors"
        state = {f"{part}.{name}": t.contiguous() for name, t in module.state_dict().items()}
        save_safetensors(state, files[part])
    del modules

    dit = config["token2wav_config"]["dit_config"]
    generator = torch.Generator().manual_seed(seed)
    voice = Voice(
        VOICE,
        cond=torch.randn(dit["enc_emb_dim"], generator=generator),
        ref_mel=torch.randn(VOICE_MEL_FRAMES, dit["mel_dim"], generator=generator) - 5,
        bos_token=VOICE_BOS,
    )
    files["voices"] = root / "voices.safetensors"
    save_safetensors(voice_tensors([voice]), files["voices"])
    codec = speech_ids(config["talker_config"])[1]
    write_manifest(root, files, config, bundle_tokens(config), codec, {VOICE: VOICE_BOS}, quant)
    return root


def _rope(mrope_sections: tuple[int, int, int]) -> dict[str, Any]:
    return {"rope_type": "default", "rope_theta": 1e6, "mrope_section": list(mrope_sections)}
