"""TMRoPE positions against transformers' `get_rope_index`, on prompts laid out as its processor does."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from model.tmrope import (
    AudioSpan,
    ImageGrid,
    PromptMedia,
    TMRoPEConfig,
    VideoGrid,
    _interleaved,
    tmrope_positions,
    video_with_audio_tokens,
)

TEXT = list(range(10, 40))  # ordinary token ids of the tiny vocabulary


@dataclass
class Prompt:
    """A prompt built part by part, with the media lists the reference and ours take."""

    tokens: dict[str, int]
    merge: int
    ids: list[int] = field(default_factory=list)
    images: list[ImageGrid] = field(default_factory=list)
    videos: list[VideoGrid] = field(default_factory=list)
    audios: list[AudioSpan] = field(default_factory=list)

    def text(self, n: int) -> Prompt:
        self.ids += [TEXT[(len(self.ids) + k) % len(TEXT)] for k in range(n)]
        return self

    def image(self, t: int, h: int, w: int) -> Prompt:
        self.images.append(ImageGrid(t, h, w))
        count = t * h * w // self.merge**2
        self.ids += [self.tokens["vision_bos"], *[self.tokens["image"]] * count, self.tokens["vision_eos"]]
        return self

    def video(self, t: int, h: int, w: int, seconds_per_grid: float) -> Prompt:
        self.videos.append(VideoGrid(t, h, w, seconds_per_grid))
        count = t * h * w // self.merge**2
        self.ids += [self.tokens["vision_bos"], *[self.tokens["video"]] * count, self.tokens["vision_eos"]]
        return self

    def audio(self, mel_frames: int) -> Prompt:
        span = AudioSpan(mel_frames)
        self.audios.append(span)
        self.ids += [
            self.tokens["audio_bos"],
            *[self.tokens["audio"]] * span.tokens,
            self.tokens["audio_eos"],
        ]
        return self

    def video_with_audio(self, t: int, h: int, w: int, seconds_per_grid: float, mel_frames: int) -> Prompt:
        """The processor's `replace_video_with_audio_token` layout: 2 s chunks, video first, float64 times."""
        grid, span = VideoGrid(t, h, w, seconds_per_grid), AudioSpan(mel_frames)
        self.videos.append(grid)
        self.audios.append(span)
        per_frame = h * w // self.merge**2
        video_times = np.repeat(np.arange(t) * seconds_per_grid * 25, per_frame)
        video_chunks = _processor_chunks(video_times, 50)
        audio_chunks = _processor_chunks(np.arange(span.tokens), 50)
        ids = [self.tokens["vision_bos"], self.tokens["audio_bos"]]
        for j in range(max(len(video_chunks), len(audio_chunks))):
            if j < len(video_chunks):
                ids += [self.tokens["video"]] * (video_chunks[j][1] - video_chunks[j][0])
            if j < len(audio_chunks):
                ids += [self.tokens["audio"]] * (audio_chunks[j][1] - audio_chunks[j][0])
        self.ids += [*ids, self.tokens["audio_eos"], self.tokens["vision_eos"]]
        return self

    def turn(self) -> Prompt:
        self.ids += [self.tokens["im_end"], TEXT[0], self.tokens["im_start"]]
        return self


def _processor_chunks(times: np.ndarray, per_chunk: int) -> list[tuple[int, int]]:
    slices, begin, chunk = [], 0, 1
    for i, time in enumerate(times):
        if time >= chunk * per_chunk:
            slices.append((begin, i))
            begin, chunk = i, chunk + 1
    slices.append((begin, len(times)))
    return slices


@pytest.fixture(scope="module")
def config(tiny_bundle) -> TMRoPEConfig:
    return TMRoPEConfig.from_bundle(tiny_bundle.tokens, tiny_bundle.config["thinker_config"])


@pytest.fixture
def prompt(tiny_bundle, config) -> Prompt:
    tokens = dict(tiny_bundle.tokens)
    tokens.setdefault("im_start", TEXT[1])
    tokens.setdefault("im_end", TEXT[2])
    return Prompt(tokens, config.spatial_merge_size)


def _reference(reference_model, p: Prompt, use_audio_in_video: bool = False) -> np.ndarray:
    ids = torch.tensor([p.ids])

    def grid(items, *fields):
        return torch.tensor([[getattr(x, f) for f in fields] for x in items]) if items else None

    positions, _ = reference_model.thinker.get_rope_index(
        ids,
        image_grid_thw=grid(p.images, "t", "h", "w"),
        video_grid_thw=grid(p.videos, "t", "h", "w"),
        attention_mask=torch.ones_like(ids),
        use_audio_in_video=use_audio_in_video,
        audio_seqlens=torch.tensor([a.mel_frames for a in p.audios]) if p.audios else None,
        second_per_grids=torch.tensor([v.seconds_per_grid for v in p.videos]) if p.videos else None,
    )
    return positions[:, 0].numpy()


def _ours(p: Prompt, config: TMRoPEConfig, use_audio_in_video: bool = False) -> np.ndarray:
    media = PromptMedia(tuple(p.images), tuple(p.videos), tuple(p.audios), use_audio_in_video)
    return tmrope_positions(p.ids, media, config)


CASES = {
    "text": lambda p: p.text(7),
    "image": lambda p: p.text(3).image(1, 4, 6).text(5),
    "several images": lambda p: p.text(2).image(1, 4, 6).text(1).image(1, 8, 2).image(1, 2, 2).text(4),
    "image at the start": lambda p: p.image(1, 6, 4).text(3),
    "audio": lambda p: p.text(3).audio(300).text(4),
    "several audios": lambda p: p.text(3).audio(123).text(1).audio(1).audio(401).text(2),
    "image plus audio": lambda p: p.text(3).image(1, 4, 4).audio(700).text(5),
    "audio plus large image": lambda p: p.text(1).audio(250).image(1, 60, 40).text(2),
    "image plus a minute of audio": lambda p: p.text(2).image(1, 4, 4).audio(6000).text(3),
    "image plus 300 s of audio": lambda p: p.text(2).image(1, 4, 4).audio(30000).text(3),
    "video": lambda p: p.text(2).video(4, 4, 6, 2.0).text(3),
    "video at odd seconds per grid": lambda p: p.text(2).video(6, 2, 4, 0.7).text(3),
    "video with its audio": lambda p: p.text(2).video_with_audio(4, 4, 6, 1.0, 400).text(3),
    "video with longer audio": lambda p: p.text(2).video_with_audio(2, 2, 2, 2.0, 900).text(3),
    "video with shorter audio": lambda p: p.text(1).video_with_audio(8, 2, 4, 1.0, 150).text(2),
    "video with audio, tall frames": lambda p: p.text(1).video_with_audio(2, 80, 4, 0.5, 230).text(2),
    "video with audio, tall frames, short audio": lambda p: (
        p.text(1).video_with_audio(2, 80, 4, 0.5, 100).text(2)
    ),
    "video with audio, fast grid": lambda p: p.text(1).video_with_audio(6, 2, 2, 0.3, 210).text(2),
    "multi-turn mixture": lambda p: (
        p.text(4)
        .image(1, 4, 4)
        .text(2)
        .turn()
        .text(3)
        .audio(333)
        .text(2)
        .turn()
        .image(1, 2, 6)
        .audio(90)
        .text(3)
    ),
    "multi-turn with video": lambda p: p.text(3).video(3, 2, 2, 2.0).turn().audio(180).image(1, 4, 2).text(4),
}
AUDIO_IN_VIDEO = {name for name in CASES if "video with" in name}


@pytest.mark.parametrize("case", sorted(CASES))
def test_positions_equal_reference(case, prompt, config, reference_model):
    p = CASES[case](prompt)
    use_audio_in_video = case in AUDIO_IN_VIDEO
    ours = _ours(p, config, use_audio_in_video)
    reference = _reference(reference_model, p, use_audio_in_video)
    print(f"{case}: {len(p.ids)} tokens, last ids {ours[:, -1].tolist()}")
    assert ours.dtype == np.int64 and ours.shape == (3, len(p.ids))
    np.testing.assert_array_equal(ours, reference)


def test_mixture_with_audio_in_video_and_images(prompt, config, reference_model):
    p = prompt.text(2).image(1, 4, 4).video_with_audio(3, 2, 4, 1.0, 310).text(1).audio(120).text(2)
    np.testing.assert_array_equal(_ours(p, config, True), _reference(reference_model, p, True))


class TestTextOnlyFallback:
    def test_audio_without_vision_is_plain_arange(self, prompt, config):
        p = prompt.text(3).audio(300).text(2)
        expected = np.broadcast_to(np.arange(len(p.ids)), (3, len(p.ids)))
        np.testing.assert_array_equal(_ours(p, config), expected)

    def test_fallback_ignores_placeholder_counts(self, prompt, config, reference_model):
        """The reference does not check audio lengths without vision: neither do we (same ids)."""
        p = prompt.text(3).audio(300).text(2)
        p.audios = [AudioSpan(10)]
        np.testing.assert_array_equal(_ours(p, config), _reference(reference_model, p))


def test_mismatched_media_is_an_error(prompt, config):
    p = prompt.text(2).image(1, 4, 4).text(1)
    p.images = [ImageGrid(1, 2, 2)]
    with pytest.raises(ValueError, match="placeholders"):
        _ours(p, config)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: setattr(p, "images", []),
        lambda p: setattr(p, "images", [*p.images, ImageGrid(1, 2, 2)]),
        lambda p: setattr(p, "audios", [AudioSpan(400)]),
        lambda p: p.ids.remove(p.tokens["audio_eos"]),
    ],
    ids=["missing image", "extra image", "audio too long", "no audio end marker"],
)
def test_placeholders_not_matching_media_are_an_error(damage, prompt, config):
    p = prompt.text(1).image(1, 2, 2).video_with_audio(2, 2, 2, 1.0, 200).text(1)
    damage(p)
    with pytest.raises(ValueError, match="placeholders do not match"):
        _ours(p, config, True)


def test_after_interleaving_the_next_id_follows_the_last_chunk(prompt, config, reference_model):
    """The reference continues from the last chunk's largest id, not the block's: here the audio chunk
    (ids up to start + 24) comes last while the tall frames reach start + 39, so the end markers reuse ids."""
    p = prompt.text(1).video_with_audio(2, 80, 4, 0.5, 100).text(2)
    ours = _ours(p, config, True)
    np.testing.assert_array_equal(ours, _reference(reference_model, p, True))
    block = ours[:, 3:-4]  # text, the two start markers ... the two end markers, text
    assert ours[0, -4] == block[:, -1].max() + 1 < block.max() + 1


class TestVideoWithAudioLayout:
    @pytest.mark.parametrize("case", sorted(AUDIO_IN_VIDEO))
    def test_equals_processor_layout(self, case, prompt, config):
        p = CASES[case](prompt)
        ours = video_with_audio_tokens(p.videos[0], p.audios[0], config)
        start = p.ids.index(config.vision_bos)
        assert p.ids[start : start + len(ours)] == ours

    def test_processor_and_model_chunking_disagree_as_in_the_reference(self, prompt, config, reference_model):
        """At 2.6 fps (0.769 s per frame group) some frame groups land on a 2 s boundary in the processor's
        float64 times but not in the model's truncated float32 ones: the layout (processor) and the
        positions (model) chunk the 40 groups differently while the 30 s audio is still interleaved."""
        video, audio = VideoGrid(40, 2, 2, 2 / 2.6), AudioSpan(3000)
        layout = video_with_audio_tokens(video, audio, config)
        p = prompt.text(2).video_with_audio(40, 2, 2, 2 / 2.6, 3000).text(1)
        assert p.ids[2:-1] == layout
        model_chunking = [
            t for t, block in _interleaved(video, audio, config, 0) for _ in range(block.shape[1])
        ]
        assert layout[2:-2] != model_chunking
        np.testing.assert_array_equal(_ours(p, config, True), _reference(reference_model, p, True))
