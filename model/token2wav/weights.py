"""`token2wav.safetensors` (the checkpoint's `token2wav.*` tensors, original names) -> our modules.

All checkpoint quirks are handled here, once: the DiT's input projection is split by input,
head 0 of q/k is de-interleaved (the checkpoint's interleaved RoPE layout), the speaker
encoder is taken out of the DiT, and a few ModuleList indices become names.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from model.errors import ModelFileError
from model.token2wav.bigvgan import BigVGAN, BigVGANConfig
from model.token2wav.dit import DiT, DiTConfig
from model.token2wav.speaker_encoder import SpeakerEncoder

DIT_PREFIX = "token2wav.code2wav_dit_model."
BIGVGAN_PREFIX = "token2wav.code2wav_bigvgan_model."
SPEAKER_PREFIX = "input_embed.spk_encoder."
_ADVICE = "Build the bundle again (omnidesk models convert)"

_DIT_RENAMES = (
    ("time_embed.time_mlp.0.", "time_embed.fc1."),
    ("time_embed.time_mlp.2.", "time_embed.fc2."),
    ("text_embed.codec_embed.", "codec_embed."),
    (".attn.to_out.0.", ".attn.to_out."),
    (".ff.ff.0.", ".ff.up."),
    (".ff.ff.3.", ".ff.down."),
    ("norm_out.linear.", "norm_out."),
)


def load_token2wav(
    path: Path, dit_cfg: DiTConfig, vocoder_cfg: BigVGANConfig
) -> tuple[DiT, SpeakerEncoder, BigVGAN]:
    """The three networks in float32, eval mode, on the CPU."""
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise ModelFileError(path, f"unreadable token2wav weights ({exc})", _ADVICE) from None
    try:
        dit_state, speaker_state = dit_tensors(_strip(tensors, DIT_PREFIX), dit_cfg)
    except (KeyError, RuntimeError) as exc:  # a tensor missing, or not split as the config says
        raise ModelFileError(
            path, f"token2wav weights do not fit the configuration ({exc})", _ADVICE
        ) from None
    vocoder_state = bigvgan_tensors(_strip(tensors, BIGVGAN_PREFIX))
    # Nothing is allocated for a configuration the file does not fill.
    _check_fits(lambda: DiT(dit_cfg), dit_state, path)
    _check_fits(lambda: SpeakerEncoder(dit_cfg.speaker_encoder), speaker_state, path)
    _check_fits(lambda: BigVGAN(vocoder_cfg), vocoder_state, path)
    dit, speaker, vocoder = DiT(dit_cfg), SpeakerEncoder(dit_cfg.speaker_encoder), BigVGAN(vocoder_cfg)
    _load(dit, dit_state, path)
    _load(speaker, speaker_state, path)
    _load(vocoder, vocoder_state, path)
    return dit.eval(), speaker.eval(), vocoder.eval()


def dit_tensors(
    raw: dict[str, torch.Tensor], cfg: DiTConfig
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Checkpoint DiT tensors (prefix stripped) -> (our DiT's state, the speaker encoder's state)."""
    speaker = {k[len(SPEAKER_PREFIX) :]: v for k, v in raw.items() if k.startswith(SPEAKER_PREFIX)}
    state: dict[str, torch.Tensor] = {}
    for name, tensor in raw.items():
        if name.startswith(SPEAKER_PREFIX) or name.startswith("input_embed.proj."):
            continue
        for old, new in _DIT_RENAMES:
            name = name.replace(old, new)
        if name.endswith((".attn.to_q.weight", ".attn.to_q.bias", ".attn.to_k.weight", ".attn.to_k.bias")):
            tensor = _deinterleave_head0(tensor, cfg.head_dim)
        state[name] = tensor
    weight, bias = raw["input_embed.proj.weight"], raw["input_embed.proj.bias"]
    # The reference concatenates (noisy mel, speaker vector, code embedding, voice vector).
    parts = torch.split(weight, [cfg.mel_dim, cfg.enc_dim, cfg.emb_dim, cfg.enc_emb_dim], dim=1)
    for key, part in zip(("input_x", "input_speaker", "input_code", "input_voice"), parts, strict=True):
        state[f"{key}.weight"] = part.contiguous()
    state["input_x.bias"] = bias
    return state, speaker


def _deinterleave_head0(tensor: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Rows of head 0 from (x0, x1, x2, x3, ...) to (x0, x2, ..., x1, x3, ...)."""
    head0 = tensor[:head_dim]
    return torch.cat([head0[0::2], head0[1::2], tensor[head_dim:]]).contiguous()


def bigvgan_tensors(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint BigVGAN tensors (prefix stripped) -> our BigVGAN's state."""
    state = {}
    for name, tensor in raw.items():
        parts = name.split(".")
        if parts[0] == "ups":  # ups.N.0.weight -> ups.N.weight
            del parts[2]
        if "act" in parts:  # ...activations.M.act.alpha -> ...activations.M.alpha
            parts.remove("act")
        state[".".join(parts)] = tensor
    return state


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v.float() for k, v in tensors.items() if k.startswith(prefix)}


def _check_fits(build: Callable[[], torch.nn.Module], state: dict[str, torch.Tensor], path: Path) -> None:
    """The network `build` makes, built on the meta device (no memory), takes exactly `state`."""
    with torch.device("meta"):
        expected = {name: tuple(p.shape) for name, p in build().state_dict().items()}
    for name in sorted(set(expected) | set(state)):
        if name not in state or name not in expected or tuple(state[name].shape) != expected[name]:
            found = tuple(state[name].shape) if name in state else "missing"
            problem = f"tensor {name}: {found}, the configuration needs {expected.get(name, 'none')}"
            raise ModelFileError(path, f"token2wav weights do not fit the configuration ({problem})", _ADVICE)


def _load(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(
            path, f"token2wav weights do not fit the configuration ({problem})", _ADVICE
        ) from None
