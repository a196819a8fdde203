"""`omnidesk ask` about real media made here (speech from espeak-ng, a drawn photo, a video with
sound), and the media a user can get wrong, each a one-line message."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import gguf
import numpy as np
import pytest

from app.capture.camera import listed_cameras, why_closed
from model.files.bundle import Bundle, write_manifest
from tests.app.cli.test_main import assert_one_line_error, copy_bundle, omnidesk
from tests.fixtures.media_files import write_audio, write_float_wav, write_video
from tests.helpers import bundle_that_hears, photo_like, speech_like

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def ask(bundle: Bundle, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return omnidesk("ask", "--models", bundle.root, "--text-only", "--json", "--max-tokens", "6", *args)


def record(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    photo = folder / "photo.png"
    cv2.imwrite(str(photo), cv2.cvtColor(photo_like(480, 640), cv2.COLOR_RGB2BGR))
    frames = np.stack([photo_like(240, 320, seed=i) for i in range(30)])
    video = write_video(folder / "talk.mp4", frames, np.arange(30) / 10, speech_like(3.0))
    silent = write_video(folder / "silent.mp4", frames, np.arange(30) / 10)
    return {"photo": photo, "video": video, "silent": silent}


@needs_espeak
def test_a_spoken_question_about_a_photo(tiny_bundle: Bundle, media, tmp_path: Path):
    speech = tmp_path / "question.wav"
    subprocess.run(["espeak-ng", "-w", str(speech), "What is in this picture?"], check=True)
    reply = record(ask(tiny_bundle, "--detail", "sharp", "--image", media["photo"], "--audio", speech))
    ids = reply["prompt_ids"]
    tokens = tiny_bundle.tokens
    assert ids.count(tokens["image"]) == (476 // 28) * (644 // 28)  # 480 x 640 -> 476 x 644
    assert ids.count(tokens["audio"]) > 25, "about 2 s of speech, 25 embeddings a second"
    assert reply["reply_ids"]


def test_a_video_with_its_sound(tiny_bundle: Bundle, media):
    reply = record(ask(tiny_bundle, "What happens?", "--video", media["video"], "--use-audio-in-video"))
    ids, tokens = reply["prompt_ids"], tiny_bundle.tokens
    assert ids.count(tokens["video"]) > 0 and ids.count(tokens["audio"]) == 75  # 3 s of sound


def test_a_recording_longer_than_the_model_hears_is_cut_with_a_notice(tiny_bundle: Bundle, tmp_path: Path):
    """A bundle whose checkpoint hears 2 s (the released ones: 300 s), asked about 3 s of speech."""
    root = bundle_that_hears(tiny_bundle, 2, tmp_path)
    speech = write_audio(tmp_path / "long.flac", speech_like(3.0), 16_000)
    result = omnidesk(
        "ask", "--models", root, "--text-only", "--json", "--max-tokens", "6", "--audio", speech
    )
    assert record(result)["prompt_ids"].count(tiny_bundle.tokens["audio"]) == 50, "2 s heard"
    notices = [line for line in result.stderr.splitlines() if line.strip()]
    print(notices)
    assert notices == ["omnidesk: Heard only the first 0:02 of a 0:03 recording: the most this model takes."]


def test_a_bundle_with_a_bad_recording_limit_is_one_line(tiny_bundle: Bundle, tmp_path: Path):
    root = bundle_that_hears(tiny_bundle, "five minutes", tmp_path)
    assert_one_line_error(ask(Bundle.open(root), "Hi"), "chunk_length 'five minutes'", "convert")


def test_a_question_needs_something(tiny_bundle: Bundle):
    assert_one_line_error(ask(tiny_bundle), "nothing to ask")


@pytest.mark.parametrize(
    ("make", "option", "message"),
    [
        (lambda p: p.write_bytes(b""), "--audio", "empty"),
        (lambda p: p.write_bytes(b"RIFF\x00\x01junk" + bytes(512)), "--audio", "not a readable"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), "--image", "not a readable image"),
        (lambda p: p.write_text("hello"), "--audio", "unsupported audio format"),
    ],
    ids=["empty-audio", "corrupt-audio", "corrupt-image", "text-as-audio"],
)
def test_bad_files_are_one_line(tiny_bundle: Bundle, tmp_path: Path, make, option, message):
    path = tmp_path / {"--audio": "file.wav", "--image": "file.png"}[option]
    if message == "unsupported audio format":
        path = tmp_path / "notes.txt"
    make(path)
    assert_one_line_error(ask(tiny_bundle, "Hi", option, path), str(path.name), message)


def test_a_zero_length_recording(tiny_bundle: Bundle, tmp_path: Path):
    path = tmp_path / "nothing.wav"
    with __import__("wave").open(str(path), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(16_000)
    assert_one_line_error(ask(tiny_bundle, "--audio", path), "empty")


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        (np.full(16_000, np.nan, np.float32), "not numbers (NaN or infinite)"),
        (np.full(16_000, 1e30, np.float32), "far beyond the -1..1 of recorded sound"),
        (np.full(5, 0.1, np.float32), "the recording is too short"),
    ],
    ids=["nan", "1e30", "five-samples"],
)
def test_recordings_that_cannot_be_heard_are_one_line(tiny_bundle: Bundle, tmp_path: Path, samples, message):
    path = write_float_wav(tmp_path / "odd.wav", samples)
    assert_one_line_error(ask(tiny_bundle, "What is this?", "--audio", path), "odd.wav", message)


def test_a_one_pixel_and_a_huge_image_are_answered(tiny_bundle: Bundle, tmp_path: Path):
    tiny, huge = tmp_path / "dot.png", tmp_path / "huge.jpg"
    cv2.imwrite(str(tiny), np.full((1, 1, 3), 200, np.uint8))
    cv2.imwrite(str(huge), cv2.resize(photo_like(300, 400), (6000, 4500)))
    assert record(ask(tiny_bundle, "--image", tiny))["prompt_ids"].count(tiny_bundle.tokens["image"]) == 4
    count = record(ask(tiny_bundle, "--detail", "sharp", "--image", huge))["prompt_ids"].count(
        tiny_bundle.tokens["image"]
    )
    assert 1000 < count <= 1280, "resized within Sharp's limit"
    quick = record(ask(tiny_bundle, "--detail", "quick", "--image", huge))["prompt_ids"].count(
        tiny_bundle.tokens["image"]
    )
    assert 200 < quick <= 256, "resized within Quick's limit"


def test_a_video_without_sound_used_with_its_sound(tiny_bundle: Bundle, media):
    result = ask(tiny_bundle, "--video", media["silent"], "--use-audio-in-video")
    assert_one_line_error(result, "silent.mp4", "no sound track")


def test_an_mmproj_of_another_model(tiny_bundle: Bundle, tmp_path: Path):
    root = copy_bundle(tiny_bundle, tmp_path)
    other = root / "mmproj.gguf"
    writer = gguf.GGUFWriter(str(other), "clip")
    writer.add_uint32("clip.vision.projection_dim", 3584)  # a 7B's width
    writer.add_tensor("v.patch_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    files = {part: root / entry.path for part, entry in tiny_bundle.files.items()}
    write_manifest(
        root, files, tiny_bundle.config, tiny_bundle.tokens, tiny_bundle.codec, tiny_bundle.voices, "f32"
    )
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), photo_like(56, 56))
    result = omnidesk("ask", "--models", root, "--text-only", "--image", photo, "Hi")
    assert_one_line_error(result, "mmproj.gguf", "3584", "same Qwen2.5-Omni size")


def test_no_screen_and_no_camera_here(tiny_bundle: Bundle, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert_one_line_error(ask(tiny_bundle, "--screen"), "no screen here")
    assert_one_line_error(ask(tiny_bundle, "--camera", "7"), f"--camera: {why_closed(7, listed_cameras())}")
