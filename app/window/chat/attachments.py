"""Files a user attaches (images and recordings) and the media kept with the history.

Images are read with `model.vision.load_image` (RGB, upright as their EXIF says), audio with
`model.audio_features` (any format it decodes, the sound of a video included).
What a question carried is saved beside the history database: images as PNG,
recordings as 16-bit WAV at 16 kHz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.system.native_logs import opencv
from model.audio_features import AUDIO_SUFFIXES, VIDEO_SUFFIXES, load_recording
from model.audio_rates import INPUT_SAMPLE_RATE
from model.errors import OmnideskError
from model.media import Audio, Image
from model.vision import load_image
from model.wav_writer import WavWriter

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
SOUND_SUFFIXES = AUDIO_SUFFIXES | VIDEO_SUFFIXES  # a video attaches as its sound
FILE_FILTER = "Images and audio ({})".format(
    " ".join(f"*{s}" for s in sorted(IMAGE_SUFFIXES | SOUND_SUFFIXES))
)


def load_attachment(path: Path) -> Image | Audio:
    """An image or a recording from a file; OmnideskError says why one cannot be used."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return load_image(path)
    if suffix in SOUND_SUFFIXES:
        return load_recording(path)
    raise OmnideskError(
        f"{path.name}: attach an image or a recording (not {suffix or 'a file without extension'})"
    )


def save_media(media: Image | Audio, folder: Path, stem: str) -> Path:
    """Write an image as PNG or a recording as WAV in `folder`; returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(media, Image):
        cv2 = opencv()
        path = folder / f"{stem}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(media.pixels, cv2.COLOR_RGB2BGR)):
            raise OmnideskError(f"cannot write {path}")
        return path
    path = folder / f"{stem}.wav"
    with WavWriter(path, INPUT_SAMPLE_RATE) as out:
        out.write(np.asarray(media.samples))
    return path
