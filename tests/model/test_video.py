"""Videos: frame sampling by real time, frame pairs through llama.cpp's vision encoder, and video
prompts (with and without their sound interleaved) against transformers, on the tiny checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.errors import OmnideskError
from model.media import Audio, Video
from model.prompt_layout import prompt_segments
from model.video import load_video, sampled_frame_count
from model.vision import MERGE_SIZE, PATCH_SIZE, TEMPORAL_PATCH, VisionEncoder
from tests.fixtures.media_files import write_video
from tests.helpers import max_abs_error, photo_like, reference_inputs, speech_like
from tests.model.test_media_prompts import LOGITS_TOLERANCE, prompt_ids, reference_forward

FRAME_SIZE = (280, 364)  # within the reference's video bounds for a few frames: no resize


def moving_scene(frames: int, fps: float = 2.0, seconds_of_sound: float = 0.0) -> Video:
    """Photo-like frames that change over time, shown at `fps`, with speech-like sound if asked."""
    pixels = np.stack([photo_like(*FRAME_SIZE, seed=i) for i in range(frames)])
    audio = Audio(speech_like(seconds_of_sound, seed=9)) if seconds_of_sound else None
    return Video(pixels, np.arange(frames) / fps, audio)


def reference_video_inputs(video: Video) -> dict[str, torch.Tensor]:
    """transformers' Qwen2-VL video processor on frames already at their size: normalized, and
    patchified as its `patchify` does (the processor itself needs torchvision, not installed here)."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    mean, std = np.array(OPENAI_CLIP_MEAN, np.float32), np.array(OPENAI_CLIP_STD, np.float32)
    frames = (video.frames.astype(np.float32) / 255.0 - mean) / std
    frames = torch.from_numpy(frames).permute(0, 3, 1, 2)[None]  # (1, T, C, H, W)
    if pad := -frames.shape[1] % TEMPORAL_PATCH:
        frames = torch.cat([frames, frames[:, -1:].expand(-1, pad, -1, -1, -1)], dim=1)
    _, t, c, h, w = frames.shape
    gt, gh, gw, m, p = t // TEMPORAL_PATCH, h // PATCH_SIZE, w // PATCH_SIZE, MERGE_SIZE, PATCH_SIZE
    patches = frames.view(1, gt, TEMPORAL_PATCH, c, gh // m, m, p, gw // m, m, p)
    patches = patches.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9).reshape(gt * gh * gw, c * TEMPORAL_PATCH * p * p)
    return {
        "pixel_values_videos": patches,
        "video_grid_thw": torch.tensor([[gt, gh, gw]]),
        "video_second_per_grid": torch.tensor([TEMPORAL_PATCH * video.seconds_per_frame]),
    }


@pytest.mark.parametrize("frames", [4, 5])
def test_frame_pairs_match_the_reference_visual(tiny_bundle, thinker, reference_model, frames):
    encoder = VisionEncoder(tiny_bundle.file("mmproj"), thinker.llama_model, thinker.n_embd)
    video = moving_scene(frames)
    ours = encoder.encode_video(video)
    inputs = reference_video_inputs(video)
    with torch.no_grad():
        reference = reference_model.thinker.model.visual(
            inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"]
        ).pooler_output.numpy()
    assert [ours.grid.t, ours.grid.h, ours.grid.w] == inputs["video_grid_thw"][0].tolist()
    error = max_abs_error(f"video of {frames} frames, vision encoder", ours.embeddings, reference)
    assert error <= 1e-3 * np.abs(reference).max()


def test_video_prompt_logits_match_the_reference(thinker, perception, tmrope, tiny_bundle, reference_model):
    video = moving_scene(4)
    media = [perception.encode_video(video)]
    ids = prompt_ids(thinker, tiny_bundle.tokens, tmrope, media, "What happens?")
    segments, positions = prompt_segments(ids, media, tmrope)
    thinker.reset()
    _, ours = thinker.prefill(segments, all_logits=True)
    reference, _ = reference_forward(reference_model, ids, reference_video_inputs(video))
    error = max_abs_error(f"Thinker logits, video prompt of {len(ids)} positions", ours, reference)
    assert error <= LOGITS_TOLERANCE
    assert positions[0].max() > len(ids) // 3, "time ids of the frames, not positions in the prompt"


def test_video_with_its_sound_interleaved(thinker, perception, tmrope, tiny_bundle, reference_model):
    """llama.cpp masks attention by position: within a 2 s chunk an audio token cannot see the
    chunk's frames that carry a later time id, which the reference (masking by index) allows. The
    deviation this makes is measured here, and bounded."""
    video = moving_scene(8, seconds_of_sound=4.0)
    media = [perception.encode_video(video, with_sound=True)]
    ids = prompt_ids(thinker, tiny_bundle.tokens, tmrope, media, "What is said?")
    segments, positions = prompt_segments(ids, media, tmrope)
    assert sum(1 for s in segments if isinstance(getattr(s, "placeholder", None), tuple)) == 2, "2 chunks"
    thinker.reset()
    _, cached = thinker.prefill(segments, all_logits=True)
    ours = cached[in_prompt_order(thinker.states(0, len(ids)), ids, positions)]
    inputs = reference_video_inputs(video) | reference_inputs([], [video.audio.samples])
    reference, _ = reference_forward(reference_model, ids, inputs | {"use_audio_in_video": True})
    start, end = ids.index(tmrope.vision_bos), len(ids) - ids[::-1].index(tmrope.vision_eos)
    before = max_abs_error("logits before the video", ours[:start], reference[:start])
    inside = max_abs_error("logits of the interleaved video and sound", ours[start:end], reference[start:end])
    after = max_abs_error("logits of the question after them", ours[end:], reference[end:])
    print(f"deviation inside the span {inside:.3g}, after it {after:.3g}")
    assert before < 1e-4, "exact up to the video"
    # Inside the span a frame sees the sound of its own time and earlier (the reference: nothing of
    # its chunk's sound), a sound the frames of its time and earlier (the reference: all of its
    # chunk's). What follows reads the same cache and deviates little.
    assert after < 0.05 * np.abs(reference[end:]).max()


def test_a_video_whose_sound_ends_before_its_frames(
    thinker, perception, tmrope, tiny_bundle, reference_model
):
    """The reference puts the end markers after the last chunk's sound, below its later frames' time ids,
    which llama.cpp cannot decode: they and the question come later here by as much (a video of 4 s, its
    sound 2.5 s), and the reply reads the same cache."""
    video = moving_scene(8, seconds_of_sound=2.5)
    media = [perception.encode_video(video, with_sound=True)]
    ids = prompt_ids(thinker, tiny_bundle.tokens, tmrope, media, "What is said?")
    segments, positions = prompt_segments(ids, media, tmrope)
    end = len(ids) - ids[::-1].index(tmrope.vision_eos)
    frames_reach = positions[0, : end - 2].max()
    assert positions[0, end - 2] <= frames_reach, "the reference's end markers go back in time"
    thinker.reset()
    _, cached = thinker.prefill(segments, all_logits=True)
    states = thinker.states(0, len(ids))
    assert states.positions[0, -(len(ids) - end) - 2] == frames_reach + 1, "here they follow the frames"
    ours = cached[in_prompt_order(states, ids, _as_cached(positions, end, frames_reach))]
    inputs = reference_video_inputs(video) | reference_inputs([], [video.audio.samples])
    reference, _ = reference_forward(reference_model, ids, inputs | {"use_audio_in_video": True})
    start = ids.index(tmrope.vision_bos)
    before = max_abs_error("logits before the video", ours[:start], reference[:start])
    after = max_abs_error("logits of the question after it", ours[end:], reference[end:])
    assert before < 1e-4
    assert after < 0.05 * np.abs(reference[end:]).max()


def _as_cached(positions: np.ndarray, end: int, frames_reach: int) -> np.ndarray:
    """The reference's positions with the end markers and what follows moved after the frames."""
    moved = positions.copy()
    moved[:, end - 2 :] += frames_reach + 1 - positions[0, end - 2]
    return moved


def in_prompt_order(states, ids: list[int], positions: np.ndarray) -> np.ndarray:
    """For each prompt index, the cache row holding it (interleaved chunks are cached in time order):
    a token is known by its id and its three position ids."""
    cached = zip(states.token_ids.tolist(), states.positions.T.tolist(), strict=True)
    row = {(t, *p): i for i, (t, p) in enumerate(cached)}
    return np.array([row[(t, *p)] for t, p in zip(ids, positions.T.tolist(), strict=True)])


class TestFrameSampling:
    def test_two_frames_a_second_at_a_constant_rate(self, tmp_path):
        frames = np.stack([np.full((56, 56, 3), 8 * i, np.uint8) for i in range(30)])
        path = write_video(tmp_path / "cfr.mp4", frames, np.arange(30) / 10)  # 10 fps, 3 s
        video = load_video(path)
        assert sampled_frame_count(30, 10.0) == len(video.frames) == 6
        assert video.timestamps.tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
        assert video.seconds_per_frame == pytest.approx(0.5)
        brightness = video.frames.reshape(6, -1).mean(axis=1)
        assert np.all(np.diff(brightness) > 0), "the frames come in time order"

    def test_a_variable_frame_rate_keeps_true_time(self, tmp_path):
        times = np.array([0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 1.0, 1.9, 2.0, 2.8])  # bursts and gaps
        frames = np.stack([np.full((56, 56, 3), 20 * i, np.uint8) for i in range(len(times))])
        video = load_video(write_video(tmp_path / "vfr.mp4", frames, times))
        # 10 frames over 3.11 s: 6 sampled at 0, 0.52, 1.04, ... s of true time, not every 2nd frame.
        assert len(video.frames) == 6
        assert video.timestamps.tolist() == pytest.approx([0.0, 0.25, 1.0, 1.9, 2.0, 2.8])

    def test_the_sound_comes_along(self, tmp_path):
        frames = np.zeros((20, 56, 56, 3), np.uint8)
        path = write_video(tmp_path / "talk.mp4", frames, np.arange(20) / 10, speech_like(2.0))
        video = load_video(path, with_audio=True)
        assert video.audio is not None and abs(video.audio.seconds - 2.0) < 0.1

    def test_no_sound_track_is_a_clear_message(self, tmp_path):
        path = write_video(tmp_path / "silent.mp4", np.zeros((20, 56, 56, 3), np.uint8), np.arange(20) / 10)
        with pytest.raises(OmnideskError, match="no sound track"):
            load_video(path, with_audio=True)

    @pytest.mark.parametrize(("name", "content", "message"), [
        ("clip.mp4", b"\x00" * 100, "not a readable video"),
        ("clip.txt", b"hello", "unsupported video format"),
    ])  # fmt: skip
    def test_bad_files(self, tmp_path, name, content, message):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(OmnideskError, match=message):
            load_video(path)
