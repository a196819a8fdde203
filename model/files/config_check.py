"""The checkpoint configuration, range-checked before anything is built from it.

A bundle's manifest (and a checkpoint's config.json) sets the size of every network Omnidesk
builds: 1e9 Talker layers or 1e7 audio layers would build for minutes and take gigabytes before
any weight is compared, a negative width fails inside torch with a traceback, and a null section
fails wherever it is first read. So every value the loaders read is checked here, where the
manifest or config.json is read: a section is an object, a count or size is an integer within a
range far wider than any Qwen2.5-Omni needs (the 7B model's largest values are well inside) and
narrow enough that nothing built from it is absurd, a float is finite and in range, and a few
values that must agree do. Values left out take the loaders' own defaults (the real model's).
The weights themselves are then compared with what the configuration implies, by each loader,
before anything is allocated (on torch's meta device).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A configuration value out of range or of the wrong kind; the message names it."""


@dataclass(frozen=True)
class Count:
    """An integer in low..high."""

    low: int
    high: int


@dataclass(frozen=True)
class Real:
    """A finite number (integer or float) in low..high."""

    low: float
    high: float


@dataclass(frozen=True)
class Counts:
    """A list of `min_length`..64 integers in low..high (of such lists, when `nested`)."""

    low: int
    high: int
    min_length: int = 1
    nested: bool = False


@dataclass(frozen=True)
class Optional:
    """A section that may be left out or null (its values then take their defaults)."""

    section: dict[str, Any]


LAYERS = Count(1, 512)
WIDTH = Count(1, 1 << 16)
FFN = Count(1, 1 << 18)
HEADS = Count(1, 1024)
TOKEN_ID = Count(0, (1 << 31) - 1)
EPS = Real(0.0, 1.0)
THETA = Real(1e-3, 1e12)
KERNELS = Counts(1, 64)
MAX_LIST = 64
_ROPE = {"rope_parameters": Optional({"rope_theta": THETA, "mrope_section": Counts(0, 1024, 3)})}

SCHEMA: dict[str, Any] = {
    "thinker_config": {
        "text_config": {
            "vocab_size": Count(1, 1 << 21),
            "hidden_size": WIDTH,
            "intermediate_size": FFN,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "num_key_value_heads": HEADS,
            "max_position_embeddings": Count(1, 1 << 24),
            "rms_norm_eps": EPS,
            "rope_theta": THETA,
            **_ROPE,
            "rope_scaling": Optional({"mrope_section": Counts(0, 1024, 3)}),
        },
        "audio_config": {
            "num_mel_bins": Count(1, 1024),
            "d_model": WIDTH,
            "encoder_layers": LAYERS,
            "encoder_attention_heads": HEADS,
            "encoder_ffn_dim": FFN,
            "max_source_positions": Count(1, 1 << 14),
            "n_window": Count(2, 1 << 14),
            "output_dim": WIDTH,
        },
        "vision_config": {
            "depth": LAYERS,
            "hidden_size": WIDTH,
            "intermediate_size": FFN,
            "num_heads": HEADS,
            "patch_size": Count(1, 1024),
            "spatial_merge_size": Count(2, 2),  # what Omnidesk's vision layout and llama.cpp's take
            "out_hidden_size": WIDTH,
            "fullatt_block_indexes": Counts(0, 511),
        },
        "position_id_per_seconds": Real(1e-3, 1e4),
        "seconds_per_chunk": Real(1e-3, 3600.0),
        **{
            field: TOKEN_ID
            for field in (
                "audio_token_index",
                "image_token_index",
                "video_token_index",
                "audio_start_token_id",
                "audio_end_token_id",
                "vision_start_token_id",
                "vision_end_token_id",
            )
        },
    },
    "talker_config": {
        "embedding_size": WIDTH,
        "hidden_size": WIDTH,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "head_dim": Count(2, 1024),
        "vocab_size": Count(1, 1 << 20),
        "rms_norm_eps": EPS,
        "rope_theta": THETA,
        **_ROPE,
        "rope_scaling": Optional({"mrope_section": Counts(0, 1024, 3)}),
        **{
            field: TOKEN_ID
            for field in (
                "tts_text_start_token_id",
                "tts_text_end_token_id",
                "tts_text_pad_token_id",
                "tts_codec_start_token_id",
                "tts_codec_end_token_id",
                "tts_codec_pad_token_id",
                "tts_codec_mask_token_id",
            )
        },
    },
    "token2wav_config": {
        "dit_config": {
            "hidden_size": WIDTH,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "head_dim": Count(2, 1024),
            "ff_mult": Count(1, 64),
            "emb_dim": WIDTH,
            "num_embeds": Count(1, 1 << 20),
            "repeats": Count(1, 64),
            "mel_dim": Count(1, 1024),
            "block_size": Count(1, 1 << 12),
            "look_ahead_layers": Counts(0, LAYERS.high - 1, 0),
            "look_backward_layers": Counts(0, LAYERS.high - 1, 0),
            "max_position_embeddings": Count(1, 1 << 20),
            "enc_emb_dim": WIDTH,
            "enc_dim": WIDTH,
            "enc_channels": Counts(1, 1 << 14),
            "enc_kernel_sizes": KERNELS,
            "enc_dilations": KERNELS,
            "enc_attention_channels": WIDTH,
            "enc_res2net_scale": Count(1, 64),
            "enc_se_channels": WIDTH,
            **_ROPE,
        },
        "bigvgan_config": {
            "mel_dim": Count(1, 1024),
            "upsample_initial_channel": Count(1, 1 << 14),
            "resblock_kernel_sizes": KERNELS,
            "resblock_dilation_sizes": Counts(1, 64, nested=True),
            "upsample_rates": KERNELS,
            "upsample_kernel_sizes": KERNELS,
        },
    },
}


def check_config(config: Any) -> None:
    """Raise ConfigError naming the first value of `config` (a checkpoint's config.json) that is out
    of range, of the wrong kind, or at odds with another."""
    _check_section(config, SCHEMA, "the configuration")
    _check_agreement(config)


def _check_section(value: Any, schema: dict[str, Any], where: str) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} is {_kind(value)}, not an object")
    for key, rule in schema.items():
        path = key if where == "the configuration" else f"{where}.{key}"
        if isinstance(rule, dict):
            _check_section(value.get(key), rule, path)
        elif isinstance(rule, Optional):
            if value.get(key) is not None:
                _check_section(value[key], rule.section, path)
        elif key in value:
            _check_value(value[key], rule, path)


def _check_value(value: Any, rule: Count | Real | Counts, path: str) -> None:
    if isinstance(rule, Count):
        if not _is_int(value) or not rule.low <= value <= rule.high:
            raise ConfigError(f"{path} is {_show(value)}, not an integer in {rule.low}..{rule.high}")
    elif isinstance(rule, Real):
        if not (_is_number(value) and math.isfinite(value) and rule.low <= value <= rule.high):
            raise ConfigError(f"{path} is {_show(value)}, not a number in {rule.low:g}..{rule.high:g}")
    else:
        items = value if isinstance(value, list) else None
        if items is None or not rule.min_length <= len(items) <= MAX_LIST:
            raise ConfigError(f"{path} is {_show(value)}, not a list of {rule.min_length}..{MAX_LIST} values")
        for i, item in enumerate(items):
            _check_value(
                item,
                Counts(rule.low, rule.high) if rule.nested else Count(rule.low, rule.high),
                f"{path}[{i}]",
            )


def _check_agreement(config: dict[str, Any]) -> None:
    """Values that must agree with each other for the networks to be built at all (where both are
    given: the loaders' defaults agree)."""
    audio = config["thinker_config"]["audio_config"]
    if audio.get("n_window", 0) % 2:
        raise ConfigError("thinker_config.audio_config.n_window is odd: pooled pairs would straddle blocks")
    _divides(audio, "encoder_attention_heads", "d_model", "thinker_config.audio_config")
    talker = config["talker_config"]
    _divides(talker, "num_key_value_heads", "num_attention_heads", "talker_config")
    section = (talker.get("rope_parameters") or talker.get("rope_scaling") or {}).get("mrope_section")
    if section is not None and "head_dim" in talker and 2 * sum(section[:3]) != talker["head_dim"]:
        raise ConfigError(
            f"talker_config: mrope_section {section} does not split head_dim {talker['head_dim']}"
        )
    dit = config["token2wav_config"]["dit_config"]
    if "num_hidden_layers" in dit:
        chosen = dit.get("look_ahead_layers", []) + dit.get("look_backward_layers", [])
        if any(i >= dit["num_hidden_layers"] for i in chosen):
            raise ConfigError("token2wav_config.dit_config: a look-ahead or look-back layer is past the last")
    vocoder = config["token2wav_config"]["bigvgan_config"]
    rates, kernels = vocoder.get("upsample_rates"), vocoder.get("upsample_kernel_sizes")
    if rates is not None and kernels is not None and len(rates) != len(kernels):
        raise ConfigError("token2wav_config.bigvgan_config: upsample_rates and upsample_kernel_sizes differ")
    if rates is not None and vocoder.get("upsample_initial_channel", 1 << 14) >> len(rates) < 1:
        raise ConfigError("token2wav_config.bigvgan_config: upsample_initial_channel halves to nothing")


def _divides(section: dict[str, Any], part: str, whole: str, where: str) -> None:
    if part in section and whole in section and section[whole] % section[part]:
        raise ConfigError(f"{where}: {whole} {section[whole]} is not a multiple of {part} {section[part]}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


def _kind(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
