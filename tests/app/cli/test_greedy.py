"""`omnidesk ask --greedy` is the reference's greedy decoding: a whole spoken turn run from the command
line against transformers' `generate(thinker_do_sample=False, talker_do_sample=False)`, tiny checkpoint."""

from __future__ import annotations

import functools
import json
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model.audio_features import load_audio
from model.files.bundle import Bundle
from model.vision import load_image
from tests.app.cli.test_main import omnidesk
from tests.helpers import (
    generate_inputs,
    give_the_talker_its_attention_mask,
    max_abs_error,
    photo_like,
    reference_inputs,
    speech_like,
)

SEED, MAX_TEXT, MAX_CODES = 11, 12, 60
WAVEFORM_TOLERANCE = 1e-4  # the 16-bit WAV itself rounds by up to 1.5e-5


@pytest.fixture(scope="module")
def question_files(tmp_path_factory) -> tuple[Path, Path]:
    """A photo (PNG) and a spoken question (16 kHz 16-bit WAV)."""
    folder = tmp_path_factory.mktemp("question")
    photo = folder / "photo.png"
    cv2.imwrite(str(photo), cv2.cvtColor(photo_like(224, 336, seed=7), cv2.COLOR_RGB2BGR))
    speech = folder / "question.wav"
    with wave.open(str(speech), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(16_000)
        f.writeframes((speech_like(2.0, seed=7) * 32767).round().astype("<i2").tobytes())
    return photo, speech


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit mono WAV as floats (n,) in [-1, 1]."""
    with wave.open(str(path), "rb") as f:
        return np.frombuffer(f.readframes(f.getnframes()), "<i2").astype(np.float64) / 32767.0


@pytest.mark.parametrize("media", ["text", "image-and-speech"])
def test_greedy_full_utterance_equals_reference_generate(
    tiny_bundle: Bundle, reference_model, monkeypatch, tmp_path, question_files, media
):
    """Reply ids, codec ids and waveform equal the reference's; the Talker's prompt is transformers 4's
    (the code's choice, see docs/reference.md), so the reference's Talker is given back its attention mask."""
    media_args: list[str | Path] = []
    images, audios = [], []
    if media == "image-and-speech":
        photo, speech = question_files
        media_args = ["--image", photo, "--audio", speech]
        images, audios = [load_image(photo).pixels], [load_audio(speech)]
    out = tmp_path / "reply.wav"
    result = omnidesk(
        "ask",
        "--models",
        tiny_bundle.root,
        "--greedy",
        "--full-utterance",
        "--json",
        "--max-tokens",
        str(MAX_TEXT),
        "--max-codes",
        str(MAX_CODES),
        "--seed",
        str(SEED),
        "--out",
        out,
        *media_args,
        "Say hello to me.",
    )
    assert result.returncode == 0, result.stderr
    ours = json.loads(result.stdout.strip().splitlines()[-1])
    prompt = ours["prompt_ids"]

    give_the_talker_its_attention_mask(reference_model, monkeypatch)
    spoken: list[list[int]] = []
    synthesize = reference_model.token2wav.forward

    @functools.wraps(synthesize)
    def recording_codes(code, *args, **kwargs):
        spoken.append(code[0].tolist())
        return synthesize(code, *args, **kwargs)

    monkeypatch.setattr(reference_model.token2wav, "forward", recording_codes)
    torch.manual_seed(SEED)
    with torch.no_grad():
        sequences, waveform = reference_model.generate(
            input_ids=torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            speaker="Chelsie",
            thinker_max_new_tokens=MAX_TEXT,
            thinker_do_sample=False,
            talker_max_new_tokens=MAX_CODES,
            talker_do_sample=False,
            **generate_inputs(reference_inputs(images, audios)),
        )

    reference_reply = sequences[0, len(prompt) :].tolist()
    print(f"\n{media}: reply {len(ours['reply_ids'])} tokens, {len(ours['codes'])} codes")
    assert ours["reply_ids"] == reference_reply
    assert len(spoken) == 1 and ours["codes"] == spoken[0]
    assert len(ours["codes"]) > 10, "a reply long enough to compare"
    expected = waveform.reshape(-1).numpy()
    assert max_abs_error(f"--greedy waveform, {media}", read_wav(out), expected) < WAVEFORM_TOLERANCE
