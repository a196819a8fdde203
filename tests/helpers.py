"""Small helpers shared by tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np


def max_abs_error(name: str, ours: np.ndarray, reference: np.ndarray) -> float:
    """Print and return the largest absolute difference (with the reference's scale for context)."""
    ours, reference = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    assert ours.shape == reference.shape, f"{name}: shape {ours.shape} != {reference.shape}"
    error = float(np.abs(ours - reference).max())
    scale = float(np.abs(reference).max())
    relative = error / max(scale, 1e-30)
    print(f"{name}: max abs error {error:.3e} (reference max |x| {scale:.3e}, relative {relative:.3e})")
    return error


def photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGB picture (height, width, 3) uint8: a sky-to-ground gradient, a sun, a house and
    sensor noise, drawn with OpenCV (smooth regions, sharp edges and texture, like a real photo)."""
    import cv2

    rng = np.random.default_rng(seed)
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    sky, ground = np.array([235, 180, 90], np.float32), np.array([40, 120, 60], np.float32)
    image = np.broadcast_to(sky * (1 - rows) + ground * rows, (height, width, 3)).copy()
    scale = min(height, width)
    cv2.circle(image, (int(width * 0.75), int(height * 0.25)), max(1, scale // 8), (255, 230, 120), -1)
    top, left = int(height * 0.45), int(width * 0.2)
    corner = (left + max(1, width // 4), top + max(1, height // 3))
    cv2.rectangle(image, (left, top), corner, (200, 60, 50), -1)
    image += rng.normal(0.0, 6.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced-like signal (n,) of order 0.3: harmonics of a gliding pitch, modulated, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16_000)) / 16_000
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / 16_000
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t) ** 2
    return (0.2 * voiced * envelope + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def give_the_talker_its_attention_mask(reference_model, monkeypatch) -> None:
    """Run the reference Talker as transformers 4's generate did, on transformers 5.

    transformers 4 (4.52) handed the Talker its all-ones attention mask, so its forward added E_codec(pad)
    and E_codec(bos) to the last two prompt rows, as the model was trained; transformers 5's generate
    drops an all-ones mask and the Talker then skips them. Our Talker follows 4.52 unless told otherwise
    (`SpeechOptions.prompt_codec_embeddings`): this gives the forward that mask back whenever it has none.
    """
    import functools

    import torch

    talker = reference_model.talker
    forward = talker.forward

    @functools.wraps(forward)  # generate checks its keyword arguments against the signature
    def forward_with_mask(*args, attention_mask=None, cache=None, **kwargs):
        if attention_mask is None:
            new = kwargs.get("inputs_embeds")
            new = kwargs["input_ids"] if new is None else new
            past = 0 if cache is None else cache.get_seq_length()
            attention_mask = torch.ones(1, past + new.shape[1], dtype=torch.long)
        return forward(*args, attention_mask=attention_mask, cache=cache, **kwargs)

    monkeypatch.setattr(talker, "forward", forward_with_mask)


def reference_inputs(images: list[np.ndarray], audios: list[np.ndarray]) -> dict:
    """What transformers' processor gives the reference Thinker for these pictures and recordings."""
    import torch
    from transformers import WhisperFeatureExtractor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from model.audio_rates import INPUT_SAMPLE_RATE
    from model.vision import MAX_PIXELS, MIN_PIXELS

    inputs: dict[str, torch.Tensor] = {}
    if images:
        processor = Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
        batch = processor(images=images, input_data_format="channels_last", return_tensors="pt")
        inputs |= {"pixel_values": batch["pixel_values"], "image_grid_thw": batch["image_grid_thw"]}
    if audios:
        features = WhisperFeatureExtractor(feature_size=128)(
            audios,
            sampling_rate=INPUT_SAMPLE_RATE,
            padding="max_length",
            return_attention_mask=True,
            return_tensors="pt",
        )
        inputs |= {
            "input_features": features["input_features"],
            "feature_attention_mask": features["attention_mask"],
        }
    return inputs


def generate_inputs(inputs: dict) -> dict:
    """The processor's outputs as the reference's `generate` must get them: in transformers 5 it hands
    every unprefixed argument to the Talker too, whose `generate` rejects `pixel_values`; the pixels go
    to the Thinker alone (the grid stays shared: the Talker's positions need it)."""
    if "pixel_values" in inputs:
        inputs = dict(inputs)
        inputs["thinker_pixel_values"] = inputs.pop("pixel_values")
    return inputs


def bundle_that_hears(bundle, seconds: float, folder: Path) -> Path:
    """A copy of `bundle` (a model.files.bundle.Bundle) in `folder`, whose checkpoint's preprocessor
    config hears recordings up to `seconds` (its chunk_length) instead of the released 300 s."""
    from model.files.bundle import write_manifest

    root = Path(shutil.copytree(bundle.root, folder / "bundle"))
    files = {part: root / entry.path for part, entry in bundle.files.items()}
    preprocessor = dict(bundle.preprocessor or {}) | {"chunk_length": seconds}
    write_manifest(
        root,
        files,
        bundle.config,
        bundle.tokens,
        bundle.codec,
        bundle.voices,
        bundle.thinker_dtype,
        preprocessor,
    )
    return root


def on_small_filesystem(
    folder: Path,
    script: str,
    *args: str,
    size_kib: int = 256,
    prepare: str = "",
    read_only: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the Python `script` (with `args`) where `folder` is a fresh tmpfs of `size_kib` KiB,
    mounted in a mount namespace of the process's own: real ENOSPC (and EROFS with `read_only`,
    after the Python `prepare` ran in it), nothing mounted outside. Skips the test where mount
    namespaces are not allowed (an unprivileged user)."""
    import pytest

    if subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("mount namespaces are not allowed here (needs root): no small filesystem to fill")
    folder.mkdir(parents=True, exist_ok=True)
    steps = [f'mount -t tmpfs -o size={size_kib}k tmpfs "$0"']
    if prepare:
        steps.append(f'"{sys.executable}" -c "$1"')
    if read_only:
        steps.append('mount -o remount,ro "$0"')
    steps.append(f'shift; exec "{sys.executable}" -c "$@"')
    return subprocess.run(
        ["unshare", "--mount", "sh", "-ec", " && ".join(steps), str(folder), prepare, script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
