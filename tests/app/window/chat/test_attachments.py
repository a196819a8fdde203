"""Attached files (images, recordings) loaded as media, and media saved with the history."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from app.window.chat.attachments import load_attachment, save_media
from model.errors import OmnideskError
from model.media import Audio, Image


def test_an_image_file_is_rgb(tmp_path):
    bgr = np.zeros((12, 16, 3), np.uint8)
    bgr[:, :, 2] = 200  # red in OpenCV's order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    image = load_attachment(tmp_path / "red.png")
    assert isinstance(image, Image) and image.pixels.shape == (12, 16, 3)
    assert tuple(image.pixels[0, 0]) == (200, 0, 0)


def test_a_recording_is_16_khz_mono(tmp_path, spoken_samples):
    saved = save_media(Audio(spoken_samples), tmp_path, "question")
    assert saved.name == "question.wav"
    audio = load_attachment(saved)
    assert isinstance(audio, Audio)
    assert len(audio.samples) == len(spoken_samples)
    assert np.max(np.abs(audio.samples - spoken_samples)) < 1e-4  # 16-bit rounding


def test_a_saved_image_reads_back_the_same(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = save_media(Image(pixels), tmp_path / "media", "frame")
    loaded = load_attachment(path)
    assert isinstance(loaded, Image) and np.array_equal(loaded.pixels, pixels)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.txt", b"hello", "attach an image or a recording"),
        ("broken.png", b"not a png", "not a readable image"),
    ],
)
def test_unusable_files_are_explained(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(OmnideskError, match=message):
        load_attachment(tmp_path / name)
