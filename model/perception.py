"""A question's media as the Thinker takes them: encoded, with their placeholder ids and positions.

- `Perception` owns the encoders (llama.cpp's vision encoder on the mmproj, our audio encoder), loaded
  on first use, and turns images and recordings into `EncodedMedia`.
- `user_message` lays a user turn out as the reference's chat template and processor do: its parts in
  one fixed order (videos, images, audio, then the text), each placeholder repeated once per embedding
  between its markers (`<|vision_bos|>` ... `<|vision_eos|>`, `<|audio_bos|>` ... `<|audio_eos|>`).
- `prompt_segments` cuts a whole prompt into text runs and embedding runs, with the TMRoPE positions of
  `tmrope_positions` (the function the Talker's positions come from too).

Threads: everything here runs on the caller's thread (the turn's); encoding blocks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from model.audio_encoder import AudioEncoder, audio_encoder_from_file
from model.audio_features import check_recording, log_mel, mel_frame_count
from model.errors import OmnideskError
from model.files.bundle import Bundle
from model.media import Audio, Image, Question, Video
from model.thinker import EmbeddingRun, Segment, Thinker, TokenRun
from model.tmrope import (
    AudioSpan,
    ImageGrid,
    PromptMedia,
    TMRoPEConfig,
    VideoGrid,
    tmrope_positions,
    video_with_audio_tokens,
)
from model.vision import VisionEncoder, VisionOptions


@dataclass(frozen=True, eq=False)
class EncodedMedia:
    """One image, recording or video as the Thinker takes it (a video may carry its own sound,
    interleaved with its frames in 2 s chunks)."""

    embeddings: np.ndarray = field(repr=False)  # (n, n_embd) float32
    grid: ImageGrid | VideoGrid | AudioSpan
    key: str  # identifies the content, so a later prompt with it reuses the KV cache
    sound: EncodedMedia | None = None  # a video's audio, interleaved with it

    @property
    def placeholder(self) -> str:
        """The token role of its embeddings' positions: "image", "video" or "audio"."""
        return {ImageGrid: "image", VideoGrid: "video", AudioSpan: "audio"}[type(self.grid)]


class Perception:
    """The encoders of one loaded bundle, each loaded when first needed."""

    def __init__(
        self,
        bundle: Bundle,
        thinker: Thinker,
        vision: VisionOptions = VisionOptions(),
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.bundle = bundle
        self.thinker = thinker
        self.vision_options = vision
        self.device = device
        self.dtype = dtype
        self._vision: VisionEncoder | None = None
        self._audio: AudioEncoder | None = None

    def encode(self, question: Question) -> list[EncodedMedia]:
        """The question's media in prompt order: videos, images, then recordings."""
        videos = [self.encode_video(v, question.use_audio_in_video) for v in question.videos]
        return [*videos, *map(self.encode_image, question.images), *map(self.encode_audio, question.audios)]

    def encode_video(self, video: Video, with_sound: bool = False) -> EncodedMedia:
        sound = None
        if with_sound:
            if video.audio is None:
                raise OmnideskError("the video has no sound track: ask about it without its audio")
            sound = self.encode_audio(video.audio)
        encoded = self._vision_encoder().encode_video(video)
        return EncodedMedia(encoded.embeddings, encoded.grid, encoded.key, sound)

    def encode_image(self, image: Image) -> EncodedMedia:
        encoded = self._vision_encoder().encode(image)
        return EncodedMedia(encoded.embeddings, encoded.grid, encoded.key)

    def encode_audio(self, audio: Audio) -> EncodedMedia:
        check_recording(audio.samples)
        encoder = self._audio_encoder()
        embeddings = encoder.encode(log_mel(audio.samples)).float().cpu().numpy()
        digest = hashlib.blake2b(audio.samples.tobytes(), digest_size=16, person=b"omnidesk-audio")
        return EncodedMedia(embeddings, AudioSpan(mel_frame_count(len(audio.samples))), digest.hexdigest())

    def _vision_encoder(self) -> VisionEncoder:
        if self._vision is None:
            if "mmproj" not in self.bundle.files:
                raise OmnideskError(
                    "this model has no vision projector (mmproj), so it cannot see images: "
                    "download the model again (omnidesk models download) or convert it from the checkpoint"
                )
            self._vision = VisionEncoder(
                self.bundle.file("mmproj"), self.thinker.llama_model, self.thinker.n_embd, self.vision_options
            )
        return self._vision

    def _audio_encoder(self) -> AudioEncoder:
        if self._audio is None:
            config = self.bundle.config["thinker_config"]["audio_config"]
            encoder = audio_encoder_from_file(self.bundle.file("audio_encoder"), config, self.dtype)
            self._audio = encoder.to(self.device)
        return self._audio


def media_ids(media: Sequence[EncodedMedia], config: TMRoPEConfig) -> list[int]:
    """The placeholder ids of a user turn's media, each between its markers, in the given order
    (a video with its sound laid out as the reference's processor interleaves them)."""
    ids: list[int] = []
    for item in media:
        n = len(item.embeddings)
        if isinstance(item.grid, VideoGrid) and item.sound is not None:
            assert isinstance(item.sound.grid, AudioSpan)
            ids += video_with_audio_tokens(item.grid, item.sound.grid, config)
        elif isinstance(item.grid, AudioSpan):
            ids += [config.audio_bos, *[config.audio] * n, config.audio_eos]
        else:
            ids += [config.vision_bos, *[_placeholder(item.placeholder, config)] * n, config.vision_eos]
    return ids


def user_message(
    tokenize: Callable[[str], list[int]],
    tokens: dict[str, int],
    config: TMRoPEConfig,
    media: Sequence[EncodedMedia],
    text: str,
) -> list[int]:
    """<|im_start|>user\n, the media's placeholders, the text, <|im_end|>\n: the reference's layout
    (its tokenizer splits the rendered template at special tokens, so the text is tokenized alone)."""
    body = media_ids(media, config) + (tokenize(text) if text else [])
    return [tokens["im_start"], *tokenize("user\n"), *body, tokens["im_end"], *tokenize("\n")]


def prompt_segments(
    ids: Sequence[int], media: Sequence[EncodedMedia], config: TMRoPEConfig
) -> tuple[list[Segment], np.ndarray]:
    """A prompt's text runs and media runs, and its positions (3, n) as the reference computes them.

    `media` lists every media item of the prompt in order of appearance. As the reference scatters
    embeddings, each run of one placeholder takes the next embeddings of that kind, in order (so an
    interleaved video's chunks take its frames' and its sound's embeddings in turn).
    """
    in_order = [part for item in media for part in (item, item.sound) if part is not None]
    kinds = {kind: [m for m in in_order if m.placeholder == kind] for kind in ("image", "video", "audio")}
    prompt_media = PromptMedia(
        images=tuple(m.grid for m in kinds["image"] if isinstance(m.grid, ImageGrid)),
        videos=tuple(m.grid for m in kinds["video"] if isinstance(m.grid, VideoGrid)),
        audios=tuple(m.grid for m in kinds["audio"] if isinstance(m.grid, AudioSpan)),
        use_audio_in_video=any(m.sound is not None for m in media),
    )
    positions = tmrope_positions(ids, prompt_media, config)
    queues = {_placeholder(kind, config): _Rows(items) for kind, items in kinds.items()}
    segments: list[Segment] = []
    start = 0
    i = 0
    while i < len(ids):
        token = ids[i]
        if token not in queues:
            i += 1
            continue
        stop = i
        while stop < len(ids) and ids[stop] == token:
            stop += 1
        if i > start:
            segments.append(_text_run(ids, positions, start, i))
        embeddings, key = queues[token].take(stop - i)
        segments.append(EmbeddingRun(embeddings, positions[:, i:stop], key, token))
        start = i = stop
    if start < len(ids):
        segments.append(_text_run(ids, positions, start, len(ids)))
    for queue in queues.values():
        queue.check_empty()
    return _joined_where_time_goes_back(segments), positions


def _joined_where_time_goes_back(segments: list[Segment]) -> list[Segment]:
    """Adjacent media runs that go back in time (a video's 2 s chunk, then the chunk's sound, which
    starts again at the chunk's first time id) joined into one run in time order.

    llama.cpp refuses positions that decrease, within a batch or after the cache; its attention
    mask is by position anyway, so the order only changes which rows are where in the cache. The
    rows of such a run are therefore not in the prompt's order (its placeholders say which is which).
    """
    joined: list[Segment] = []
    for segment in segments:
        last = joined[-1] if joined else None
        if (
            isinstance(segment, EmbeddingRun)
            and isinstance(last, EmbeddingRun)
            and segment.positions[0].min() < last.positions[0].max()
        ):
            positions = np.concatenate([last.positions, segment.positions], axis=1)
            order = np.argsort(positions[0], kind="stable")
            rows = np.asarray(_rows(last) + _rows(segment))[order]
            joined[-1] = EmbeddingRun(
                np.concatenate([last.embeddings, segment.embeddings])[order],
                positions[:, order],
                f"{last.key}+{segment.key}",
                tuple(int(r) for r in rows),
            )
        else:
            joined.append(segment)
    return joined


def _rows(run: EmbeddingRun) -> tuple[int, ...]:
    """The run's placeholder id for each of its rows."""
    p = run.placeholder
    return (p,) * len(run.embeddings) if isinstance(p, int) else p


class _Rows:
    """The embeddings of one kind of media, taken run by run in order."""

    def __init__(self, items: list[EncodedMedia]) -> None:
        self._items = items
        self._item = 0
        self._row = 0

    def take(self, n: int) -> tuple[np.ndarray, str]:
        """The next n rows (all from one item) and a key naming them within the prompt's media."""
        if self._item >= len(self._items):
            raise ValueError("the prompt has more placeholders than its media have embeddings")
        item = self._items[self._item]
        rows = item.embeddings[self._row : self._row + n]
        if len(rows) < n:
            raise ValueError("a run of placeholders is longer than its media's embeddings")
        key = item.key if self._row == 0 else f"{item.key}@{self._row}"
        self._row += n
        if self._row == len(item.embeddings):
            self._item, self._row = self._item + 1, 0
        return rows, key

    def check_empty(self) -> None:
        if self._item < len(self._items):
            raise ValueError("the prompt has fewer placeholders than its media have embeddings")


def _placeholder(kind: str, config: TMRoPEConfig) -> int:
    return {"image": config.image, "video": config.video, "audio": config.audio}[kind]


def _text_run(ids: Sequence[int], positions: np.ndarray, start: int, stop: int) -> TokenRun:
    """Text tokens with the positions the layout gave them (one id on all three axes)."""
    line = positions[0, start:stop]
    if not np.array_equal(positions[1:, start:stop], np.broadcast_to(line, (2, stop - start))):
        raise ValueError("text tokens must have one position id on all three axes")
    return TokenRun(tuple(ids[start:stop]), tuple(int(p) for p in line))
