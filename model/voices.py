"""Voices from the bundle's `voices.safetensors`: `{name}.cond`, `{name}.ref_mel`, `{name}.bos_token`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from model.errors import ModelFileError, OmnideskError
from model.files.bundle import Bundle
from model.files.checkpoint import VoiceShape

_ADVICE = "Build the bundle again (omnidesk models convert)"


@dataclass(frozen=True)
class Voice:
    """cond: (enc_emb_dim,) speaker vector; ref_mel: (frames, mel_dim) reference mel for the speaker
    encoder; bos_token: the Thinker-vocabulary id the Talker starts its text with."""

    name: str
    cond: torch.Tensor
    ref_mel: torch.Tensor
    bos_token: int


def load_voices(bundle: Bundle) -> dict[str, Voice]:
    path = bundle.file("voices")
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise ModelFileError(path, f"unreadable voices ({exc})", _ADVICE) from None
    voices = {}
    shape = VoiceShape.from_config(bundle.config)
    for name in bundle.voices:
        try:
            cond, ref_mel, bos = (tensors[f"{name}.{key}"] for key in ("cond", "ref_mel", "bos_token"))
        except KeyError as exc:
            raise ModelFileError(path, f"voice {name} lacks tensor {exc}", _ADVICE) from None
        problem = shape.problem(cond, ref_mel)
        if cond.ndim != 1 or bos.numel() != 1 or bos.is_floating_point():
            problem = "its tensors have the wrong shape"
        if problem:
            raise ModelFileError(path, f"voice {name}: {problem}", _ADVICE)
        voices[name] = Voice(name=name, cond=cond.float(), ref_mel=ref_mel.float(), bos_token=int(bos.item()))
    return voices


def pick_voice(voices: dict[str, Voice], name: str) -> Voice:
    """The voice called `name`, or an error that lists the voices there are."""
    if name not in voices:
        raise OmnideskError(
            f"unknown voice {name!r}; available voices: {', '.join(sorted(voices)) or 'none'}"
        )
    return voices[name]
