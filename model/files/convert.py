"""`omnidesk models convert`: an original Qwen2.5-Omni checkpoint becomes a model bundle.

The bundle is built in a staging folder beside its place and put there only when complete and
checked (model/files/staging.py), so a failed conversion leaves an earlier bundle working; inside
it, every file is written under a `.part` name and renamed when complete.
The native parts keep the checkpoint's tensor names and dtypes (lossless).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from model.errors import ModelFileError
from model.files.bundle import MANIFEST, Bundle, write_manifest
from model.files.checkpoint import Checkpoint, Voice
from model.files.mmproj_gguf import write_mmproj_gguf
from model.files.staging import staged
from model.files.thinker_gguf import (
    DTYPES,
    QUANT_TYPES,
    check_gguf_matches,
    check_mmproj_gguf,
    check_thinker_gguf,
    check_thinker_layout,
    gguf_file_type,
    quantize,
    read_thinker_gguf,
    write_thinker_gguf,
)
from model.files.tokenizer import TokenizerSpec, read_tokenizer

# Bundle part -> the checkpoint tensors it holds, under their original names.
NATIVE_PARTS = {
    "audio_encoder": "thinker.audio_tower.",
    "talker": "talker.",
    "token2wav": "token2wav.",
}
# Talker config field -> bundle token role (ids in the Thinker's vocabulary).
_TTS_TEXT_IDS = {
    "tts_text_start_token_id": "tts_text_bos",
    "tts_text_end_token_id": "tts_text_eos",
    "tts_text_pad_token_id": "tts_text_pad",
}
# Talker config field -> codec role (ids in the Talker's vocabulary).
_CODEC_IDS = {
    "tts_codec_start_token_id": "bos",
    "tts_codec_end_token_id": "eos",
    "tts_codec_pad_token_id": "pad",
    "tts_codec_mask_token_id": "mask",
}
# Thinker config field -> tokenizer role; both must agree.
_MEDIA_IDS = {
    "audio_token_index": "audio",
    "image_token_index": "image",
    "video_token_index": "video",
    "audio_start_token_id": "audio_bos",
    "audio_end_token_id": "audio_eos",
}


def convert_checkpoint(
    source: Path,
    out: Path,
    dtype: str = "f32",
    quant: str | None = None,
    report: Callable[[str], None] = lambda _: None,
    thinker_gguf: Path | None = None,
    link_thinker: bool = False,
    mmproj: Path | None = None,
) -> Bundle:
    """Write a bundle into `out`. With `thinker_gguf` (e.g. ggml-org's), that file is checked
    against the checkpoint and copied (hard-linked if `link_thinker`) as the Thinker; `mmproj`
    (llama.cpp's vision projector GGUF) is checked and copied (or linked) the same way, and
    without it the checkpoint's vision tower is written as one (in `dtype`)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
    if quant is not None and quant not in QUANT_TYPES:
        raise ValueError(f"quantization must be one of {', '.join(QUANT_TYPES)}")
    checkpoint = Checkpoint.open(source)
    text_config = checkpoint.text_config
    tokenizer = read_tokenizer(source, vocab_size=int(text_config["vocab_size"]))
    voices = checkpoint.voices()  # read first: a bad speaker dictionary fails before the long work
    preprocessor = checkpoint.preprocessor()
    tokens, codec = _special_ids(checkpoint, tokenizer.special_ids)
    _check_voice_ids(checkpoint.path, voices, int(text_config["vocab_size"]))

    width = int(text_config["hidden_size"])
    if thinker_gguf is not None:  # what llama.cpp would refuse, or abort on, is not imported
        info = read_thinker_gguf(thinker_gguf)
        check_gguf_matches(info, tokenizer, text_config)
        check_thinker_layout(info)
    if mmproj is not None:
        check_mmproj_gguf(mmproj, width)
    copy = link_or_copy if link_thinker else shutil.copyfile

    with staged(out, f"the conversion of {source}") as folder:
        if thinker_gguf is None:
            thinker, thinker_dtype = _convert_thinker(checkpoint, tokenizer, folder, dtype, quant, report)
        else:
            thinker_dtype = gguf_file_type(info)
            thinker = folder / f"thinker-{thinker_dtype}.gguf"
            report(f"copying {thinker_gguf.name}")
            _atomic(thinker, partial(copy, thinker_gguf))

        files = {"thinker": thinker, "mmproj": folder / "mmproj.gguf"}
        if mmproj is not None:
            report(f"copying {mmproj.name}")
            _atomic(files["mmproj"], partial(copy, mmproj))
        else:
            report(f"writing {files['mmproj'].name}")
            _atomic(files["mmproj"], lambda p: write_mmproj_gguf(checkpoint, p, dtype))
        for part, prefix in NATIVE_PARTS.items():
            files[part] = folder / f"{part}.safetensors"
            report(f"writing {files[part].name}")
            tensors = dict(checkpoint.tensors(checkpoint.names(prefix)))
            _atomic(files[part], partial(save_safetensors, tensors))
        files["voices"] = folder / "voices.safetensors"
        _atomic(files["voices"], partial(save_safetensors, voice_tensors(voices)))

        report(f"writing {MANIFEST}")
        write_manifest(
            folder,
            files=files,
            config=checkpoint.config,
            tokens=tokens,
            codec=codec,
            voices={v.name: v.bos_token for v in voices},
            thinker_dtype=thinker_dtype,
            preprocessor=preprocessor,
        )
        check_thinker_gguf(thinker)  # the new bundle replaces an old one only if llama.cpp can load it
        check_mmproj_gguf(files["mmproj"], width)
    return Bundle.open(out, verify=False)


def _convert_thinker(
    checkpoint: Checkpoint,
    tokenizer: TokenizerSpec,
    out: Path,
    dtype: str,
    quant: str | None,
    report: Callable[[str], None],
) -> tuple[Path, str]:
    float_gguf = out / f"thinker-{dtype}.gguf"
    report(f"writing {float_gguf.name}")
    _atomic(
        float_gguf, lambda p: write_thinker_gguf(checkpoint, tokenizer, p, dtype, name=checkpoint.path.name)
    )
    if quant is None:
        return float_gguf, dtype
    quantized = out / f"thinker-{quant}.gguf"
    report(f"quantizing to {quantized.name}")
    _atomic(quantized, lambda p: quantize(float_gguf, p, quant))
    float_gguf.unlink()
    return quantized, quant


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, str(path), metadata={"format": "pt"})


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    part = path.with_name(path.name + ".part")
    part.unlink(missing_ok=True)
    write(part)
    os.replace(part, path)


def _special_ids(
    checkpoint: Checkpoint, tokenizer_ids: dict[str, int]
) -> tuple[dict[str, int], dict[str, int]]:
    thinker, talker = checkpoint.thinker_config, checkpoint.config["talker_config"]
    for field, role in _MEDIA_IDS.items():
        if field in thinker and int(thinker[field]) != tokenizer_ids[role]:
            raise ModelFileError(
                checkpoint.path / "config.json",
                f"{field} is {thinker[field]} but the tokenizer gives {tokenizer_ids[role]}",
                "The config and tokenizer come from different checkpoints",
            )
    text, codec = speech_ids(talker)
    return dict(tokenizer_ids) | text, codec


def speech_ids(talker_config: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """The Talker config's special ids by role: text ones (Thinker vocabulary) and codec ones."""
    text = {role: int(talker_config[field]) for field, role in _TTS_TEXT_IDS.items()}
    return text, {role: int(talker_config[field]) for field, role in _CODEC_IDS.items()}


def media_ids(thinker_config: dict[str, Any]) -> dict[str, int]:
    """The Thinker config's media token ids by role (the tokenizer's must agree)."""
    return {role: int(thinker_config[field]) for field, role in _MEDIA_IDS.items()}


def _check_voice_ids(path: Path, voices: list[Voice], vocab_size: int) -> None:
    for voice in voices:
        if not 0 <= voice.bos_token < vocab_size:
            raise ModelFileError(
                path,
                f"voice {voice.name} has text-bos id {voice.bos_token} outside the vocabulary",
                "Use the checkpoint's own spk_dict.pt",
            )


def voice_tensors(voices: list[Voice]) -> dict[str, torch.Tensor]:
    tensors = {}
    for voice in voices:
        tensors[f"{voice.name}.cond"] = voice.cond.contiguous()
        tensors[f"{voice.name}.ref_mel"] = voice.ref_mel.contiguous()
        tensors[f"{voice.name}.bos_token"] = torch.tensor([voice.bos_token], dtype=torch.int64)
    return tensors
