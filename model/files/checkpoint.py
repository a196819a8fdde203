"""Reading an original Qwen2.5-Omni checkpoint directory (Hugging Face layout).

What is read: `config.json`, the safetensors shards (through their index, or a
single `model.safetensors`), `tokenizer.json`, `spk_dict.pt` and the audio feature
extractor's settings (`preprocessor_config.json`). Tensors are read
one at a time, so converting a 7B checkpoint never holds it whole in memory.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from model.errors import ModelFileError
from model.files.config_check import ConfigError, check_config
from model.token2wav.dit import DiTConfig

ARCHITECTURES = ("Qwen2_5OmniModel", "Qwen2_5OmniForConditionalGeneration")
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
SPEAKERS_FILE = "spk_dict.pt"
PREPROCESSOR_FILE = "preprocessor_config.json"  # the released checkpoints': one flat object
PROCESSOR_FILE = "processor_config.json"  # transformers 5's processor writes this, the extractor nested
MAX_REF_MEL_FRAMES = 100_000  # a voice's reference mel: 1000 s at 100 frames a second, 32 MB

_GET_CHECKPOINT = "Point to the folder of an original Qwen2.5-Omni checkpoint (it holds config.json)"


@dataclass(frozen=True)
class Voice:
    """One voice of the speaker dictionary: cond (enc_emb_dim,), ref_mel (n_frames, mel_dim)."""

    name: str
    cond: torch.Tensor
    ref_mel: torch.Tensor
    bos_token: int


def read_json(path: Path, advice: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(path, "file not found", advice) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(path, f"not readable JSON ({exc})", advice) from None


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    config: dict[str, Any]
    weight_map: dict[str, Path]  # tensor name -> shard file

    @classmethod
    def open(cls, path: Path | str) -> Checkpoint:
        path = Path(path)
        if not path.is_dir():
            raise ModelFileError(path, "not a folder", _GET_CHECKPOINT)
        config = read_json(path / "config.json", _GET_CHECKPOINT)
        if not isinstance(config, dict):
            raise ModelFileError(path / "config.json", "not a configuration (a JSON object)", _GET_CHECKPOINT)
        architectures = config.get("architectures") or []
        if not any(a in ARCHITECTURES for a in architectures):
            raise ModelFileError(
                path / "config.json",
                f"architecture {architectures or 'unknown'} is not Qwen2.5-Omni",
                _GET_CHECKPOINT,
            )
        try:
            check_config(config)
        except ConfigError as exc:
            raise ModelFileError(
                path / "config.json", f"the model configuration is out of range: {exc}", _GET_CHECKPOINT
            ) from None
        return cls(path=path, config=config, weight_map=_weight_map(path))

    @property
    def thinker_config(self) -> dict[str, Any]:
        return dict(self.config["thinker_config"])

    @property
    def text_config(self) -> dict[str, Any]:
        return dict(self.config["thinker_config"]["text_config"])

    def names(self, prefix: str) -> list[str]:
        """Tensor names starting with `prefix`, sorted."""
        return sorted(name for name in self.weight_map if name.startswith(prefix))

    def tensors(self, names: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (name, tensor) in the given order, opening each shard once per run of names."""
        handle, handle_path = None, None
        for name in names:
            shard = self.weight_map.get(name)
            if shard is None:
                raise ModelFileError(self.path, f"tensor {name} is missing", "The checkpoint is incomplete")
            if shard != handle_path:
                handle, handle_path = _open_shard(shard), shard
            assert handle is not None
            try:
                yield name, handle.get_tensor(name)
            except Exception as exc:  # safetensors raises its own error types for damaged data
                raise ModelFileError(
                    shard, f"tensor {name} is unreadable ({exc})", "Download the shard again"
                ) from None

    def preprocessor(self) -> dict[str, Any] | None:
        """The audio feature extractor's settings, found as transformers 5's WhisperFeatureExtractor finds
        them: the `feature_extractor` (or `audio_processor`) object of processor_config.json, else
        preprocessor_config.json; None when the checkpoint has neither."""
        advice = "Copy the file from the original checkpoint again"
        processor = self.path / PROCESSOR_FILE
        if processor.is_file():
            spec = read_json(processor, advice)
            spec = spec if isinstance(spec, dict) else {}
            nested = spec.get("feature_extractor", spec.get("audio_processor"))
            if isinstance(nested, dict):
                return nested
        path = self.path / PREPROCESSOR_FILE
        if not path.is_file():
            return None
        spec = read_json(path, advice)
        if not isinstance(spec, dict):
            raise ModelFileError(path, "not a JSON object", advice)
        return spec

    def voices(self) -> list[Voice]:
        """The speaker dictionary, loaded with weights_only (nothing arbitrary is unpickled)."""
        path = self.path / SPEAKERS_FILE
        advice = f"Copy {SPEAKERS_FILE} from the original checkpoint again"
        if not path.is_file():
            raise ModelFileError(path, "file not found", advice)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch warns about pickle protocols before failing
                raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load raises many types on a damaged or unsafe pickle
            raise ModelFileError(
                path, f"unreadable speaker dictionary ({type(exc).__name__})", advice
            ) from None
        if not isinstance(raw, dict) or not raw:
            raise ModelFileError(path, "the speaker dictionary holds no voices", advice)
        shape = VoiceShape.from_config(self.config)
        return [_voice(path, name, entry, shape, advice) for name, entry in raw.items()]


def _weight_map(path: Path) -> dict[str, Path]:
    index = path / INDEX_FILE
    if index.is_file():
        spec = read_json(index, "Copy the checkpoint's index file again")
        return {name: path / shard for name, shard in spec["weight_map"].items()}
    single = path / SINGLE_FILE
    if single.is_file():
        with _open_shard(single) as handle:
            return {name: single for name in handle.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    raise ModelFileError(path, f"neither {INDEX_FILE} nor {SINGLE_FILE} found", _GET_CHECKPOINT)


def _open_shard(path: Path) -> Any:
    try:
        return safe_open(str(path), framework="pt")
    except FileNotFoundError:
        raise ModelFileError(
            path, "shard not found", "The checkpoint is incomplete: download it again"
        ) from None
    except Exception as exc:
        raise ModelFileError(
            path, f"not a readable safetensors file ({exc})", "Download the shard again"
        ) from None


@dataclass(frozen=True)
class VoiceShape:
    """What the DiT takes of a voice: cond (enc_emb_dim,), ref_mel (frames, mel_dim)."""

    enc_emb_dim: int
    mel_dim: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VoiceShape:
        """From a checked configuration (its token2wav_config.dit_config)."""
        dit = DiTConfig.from_dict(config["token2wav_config"]["dit_config"])
        return cls(enc_emb_dim=dit.enc_emb_dim, mel_dim=dit.mel_dim)

    def problem(self, cond: torch.Tensor, ref_mel: torch.Tensor) -> str | None:
        """What is wrong with a voice's tensors, found before any of them is copied or converted
        (a view can claim far more elements than its storage holds); None if nothing."""
        if cond.numel() != self.enc_emb_dim:
            return f"cond has shape {tuple(cond.shape)}, not ({self.enc_emb_dim},)"
        frames = ref_mel.shape[0] if ref_mel.dim() == 2 else 0
        if ref_mel.dim() != 2 or ref_mel.shape[1] != self.mel_dim or not 1 <= frames <= MAX_REF_MEL_FRAMES:
            return f"ref_mel has shape {tuple(ref_mel.shape)}, not (frames, {self.mel_dim})"
        for key, tensor in (("cond", cond), ("ref_mel", ref_mel)):
            if not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
                return f"{key} holds values that are not finite numbers"
        return None


def _voice(path: Path, name: Any, entry: Any, shape: VoiceShape, advice: str) -> Voice:
    if not isinstance(name, str) or not isinstance(entry, dict):
        raise ModelFileError(path, f"voice {name!r} is not a name with a dictionary", advice)
    missing = {"cond", "ref_mel", "bos_token"} - set(entry)
    if missing:
        raise ModelFileError(path, f"voice {name} lacks {', '.join(sorted(missing))}", advice)
    cond, ref_mel, bos = entry["cond"], entry["ref_mel"], entry["bos_token"]
    if not isinstance(cond, torch.Tensor) or not isinstance(ref_mel, torch.Tensor):
        raise ModelFileError(path, f"voice {name}: cond and ref_mel must be tensors", advice)
    while ref_mel.dim() > 2 and ref_mel.shape[0] == 1:
        ref_mel = ref_mel[0]
    problem = shape.problem(cond, ref_mel)
    if problem:
        raise ModelFileError(path, f"voice {name}: {problem}", advice)
    if isinstance(bos, torch.Tensor) and bos.numel() == 1 and not bos.is_floating_point():
        bos = bos.item()
    if not isinstance(bos, int) or isinstance(bos, bool):
        raise ModelFileError(path, f"voice {name}: bos_token is not a token id", advice)
    return Voice(
        name=name, cond=cond.reshape(-1).float(), ref_mel=ref_mel.float().contiguous(), bos_token=bos
    )
