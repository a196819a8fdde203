"""TMRoPE: the three position ids (time, height, width) of every token of a Qwen2.5-Omni prompt.

`tmrope_positions` equals transformers' `get_rope_index` (Thinker and Talker alike) token for token:
- text: one id on all three axes, one more than the last id of what precedes it;
- an image (grid t, h, w in patches): ids start + (t * `position_id_per_seconds`, row, column) over the
  merged grid (h / merge, w / merge);
- a video: the same, with time id `int(frame_group * seconds_per_grid * position_id_per_seconds)` in
  float32 (so 25 ids per second of real time);
- audio: consecutive ids, one per embedding (40 ms);
- with audio in video: `<|vision_bos|><|audio_bos|>` share one id, the video and its audio both start
  at the next id and are interleaved in `seconds_per_chunk` (2 s) chunks, video first; the two end
  markers share one id. Positions follow the model's chunking (float32 frame times), placeholders the
  processor's (float64; `video_with_audio_tokens`); where they differ, so does the reference.
After each part the next id is the largest id of the *last chunk* placed plus one (the reference takes
`llm_pos_ids_list[-1].max() + 1`, which after an interleaved video is its last chunk, not the whole).

Text-only fallback, as the reference: when the prompt has no image and no video, the reference does
not look for media at all and returns 0..n-1 on all three axes, even for a prompt with audio. That is the
same as walking through it (audio ids are consecutive like text), so the two paths agree whenever the
audio lengths match the prompt's placeholders; the fallback is reproduced literally all the same.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.audio_encoder import audio_token_count

DEFAULT_POSITION_ID_PER_SECONDS = 25  # time ids per second (one per 40 ms), the reference's default
DEFAULT_SECONDS_PER_CHUNK = 2.0  # audio-in-video interleaving chunk, the reference's default


@dataclass(frozen=True)
class TMRoPEConfig:
    image: int  # token ids (Thinker vocabulary)
    video: int
    audio: int
    vision_bos: int
    vision_eos: int
    audio_bos: int
    audio_eos: int
    spatial_merge_size: int = 2
    position_id_per_seconds: float = DEFAULT_POSITION_ID_PER_SECONDS
    seconds_per_chunk: float = DEFAULT_SECONDS_PER_CHUNK

    @classmethod
    def from_bundle(cls, tokens: dict[str, int], thinker_config: dict[str, Any]) -> TMRoPEConfig:
        """From `bundle.tokens` and `bundle.config["thinker_config"]`."""
        return cls(
            image=tokens["image"],
            video=tokens["video"],
            audio=tokens["audio"],
            vision_bos=tokens["vision_bos"],
            vision_eos=tokens["vision_eos"],
            audio_bos=tokens["audio_bos"],
            audio_eos=tokens["audio_eos"],
            spatial_merge_size=thinker_config.get("vision_config", {}).get("spatial_merge_size", 2),
            position_id_per_seconds=thinker_config.get(
                "position_id_per_seconds", DEFAULT_POSITION_ID_PER_SECONDS
            ),
            seconds_per_chunk=thinker_config.get("seconds_per_chunk", DEFAULT_SECONDS_PER_CHUNK),
        )

    @property
    def ids_per_chunk(self) -> int:
        return int(self.position_id_per_seconds * self.seconds_per_chunk)


@dataclass(frozen=True)
class ImageGrid:
    """An image's patch grid before the 2x2 merge (t is 1 for a still image: two identical frames)."""

    t: int
    h: int
    w: int


@dataclass(frozen=True)
class VideoGrid:
    """A video's patch grid before the merge, and the real seconds one temporal patch spans."""

    t: int
    h: int
    w: int
    seconds_per_grid: float


@dataclass(frozen=True)
class AudioSpan:
    """A recording given to the audio tower, as its number of mel frames."""

    mel_frames: int

    @property
    def tokens(self) -> int:
        return audio_token_count(self.mel_frames)


@dataclass(frozen=True)
class PromptMedia:
    """The prompt's media, each kind in order of appearance (a video's own audio is in `audios` too)."""

    images: tuple[ImageGrid, ...] = ()
    videos: tuple[VideoGrid, ...] = ()
    audios: tuple[AudioSpan, ...] = ()
    use_audio_in_video: bool = False


def tmrope_positions(token_ids: Sequence[int], media: PromptMedia, config: TMRoPEConfig) -> np.ndarray:
    """Position ids (3, n) int64 of the prompt `token_ids` (n,): rows are time, height, width.

    Raises ValueError when the media placeholders of the prompt do not match `media` (with images or
    videos; the text-only fallback, like the reference, does not look at them).
    """
    n = len(token_ids)
    if not media.images and not media.videos:
        return np.broadcast_to(np.arange(n, dtype=np.int64), (3, n)).copy()
    placer = _Placer(token_ids, media, config)
    placer.run()
    return np.concatenate(placer.parts, axis=1) if placer.parts else np.zeros((3, 0), np.int64)


class _Placer:
    """Walks the prompt once, appending (3, k) position blocks in token order and checking placeholders."""

    def __init__(self, token_ids: Sequence[int], media: PromptMedia, config: TMRoPEConfig) -> None:
        self.ids, self.media, self.config = list(token_ids), media, config
        self.parts: list[np.ndarray] = []
        self.i = 0  # next token to place
        self.images, self.videos, self.audios = iter(media.images), iter(media.videos), iter(media.audios)

    @property
    def next_id(self) -> int:
        return int(self.parts[-1].max()) + 1 if self.parts else 0

    def run(self) -> None:
        c = self.config
        while self.i < len(self.ids):
            token = self.ids[self.i]
            if token == c.image:
                self._take(token, _vision_positions(_next(self.images, "image"), c, self.next_id), whole=True)
            elif token == c.audio:
                self._take(token, _sequential(_next(self.audios, "audio").tokens, self.next_id), whole=True)
            elif token == c.video and not self.media.use_audio_in_video:
                self._take(token, _vision_positions(_next(self.videos, "video"), c, self.next_id), whole=True)
            elif self._starts_video_with_audio():
                self._place_video_with_audio()
            else:
                self._take(token, _sequential(1, self.next_id))
        for kind, rest in (("image", self.images), ("video", self.videos), ("audio", self.audios)):
            if next(rest, None) is not None:
                raise ValueError(
                    f"media placeholders do not match the media: more {kind}s than in the prompt"
                )

    def _starts_video_with_audio(self) -> bool:
        ids, c, i = self.ids, self.config, self.i
        return (
            self.media.use_audio_in_video
            and ids[i] == c.vision_bos
            and ids[i + 1 : i + 3] == [c.audio_bos, c.video]
        )

    def _place_video_with_audio(self) -> None:
        """`<|vision_bos|><|audio_bos|>`, the interleaved chunks, then the two end markers."""
        c = self.config
        bos = _sequential(1, self.next_id)
        self._take(c.vision_bos, bos)
        self._take(c.audio_bos, bos)
        runs = _interleaved(_next(self.videos, "video"), _next(self.audios, "audio"), c, self.next_id)
        length = sum(block.shape[1] for _, block in runs)
        span = self.ids[self.i : self.i + length]
        for token in (c.video, c.audio):
            if span.count(token) != sum(block.shape[1] for t, block in runs if t == token):
                raise ValueError(f"media placeholders do not match the media: video with audio at {self.i}")
        self.parts += [block for _, block in runs]  # in the model's chunk order, whatever the token order
        self.i += length
        if self.i == len(self.ids):  # a live call's turn still open (call.py): its end markers come later
            return
        eos = _sequential(1, self.next_id)
        self._take(c.audio_eos, eos)
        self._take(c.vision_eos, eos)

    def _take(self, token: int, block: np.ndarray, whole: bool = False) -> None:
        """Place `block` on the next block.shape[1] tokens, which must all be `token` (and, if `whole`,
        the entire run of it)."""
        end = self.i + block.shape[1]
        run = self.ids[self.i : end]
        if (
            len(run) < block.shape[1]
            or any(t != token for t in run)
            or (whole and self.ids[end : end + 1] == [token])
        ):
            raise ValueError(
                f"media placeholders do not match the media: expected token {token} "
                f"{block.shape[1]} times at {self.i}"
            )
        self.parts.append(block)
        self.i = end


def _next(items: Iterator[Any], kind: str) -> Any:
    try:
        return next(items)
    except StopIteration:
        raise ValueError(
            f"media placeholders do not match the media: more {kind} placeholders than {kind}s"
        ) from None


def video_with_audio_tokens(video: VideoGrid, audio: AudioSpan, config: TMRoPEConfig) -> list[int]:
    """The placeholder ids of a video with its audio as the reference's processor lays them out:
    `<|vision_bos|><|audio_bos|>`, video and audio runs per 2 s chunk, `<|audio_eos|><|vision_eos|>`.

    The processor chunks frame times in float64; `get_rope_index` (and `tmrope_positions`) chunk them in
    float32 truncated to integers. At some frame rates (e.g. 2.6 fps) a frame group falls in different
    chunks, and the reference then gives those tokens the positions of the other modality's tokens.
    This layout and `tmrope_positions` reproduce that as it is.
    """
    rows, cols = video.h // config.spatial_merge_size, video.w // config.spatial_merge_size
    times = np.repeat(
        np.arange(video.t) * video.seconds_per_grid * config.position_id_per_seconds, rows * cols
    )
    video_chunks = _chunks(times, config.ids_per_chunk, 0)
    audio_chunks = _chunks(np.arange(audio.tokens), config.ids_per_chunk, 0)
    ids = [config.vision_bos, config.audio_bos]
    for j in range(max(len(video_chunks), len(audio_chunks))):
        if j < len(video_chunks):
            ids += [config.video] * (video_chunks[j][1] - video_chunks[j][0])
        if j < len(audio_chunks):
            ids += [config.audio] * (audio_chunks[j][1] - audio_chunks[j][0])
    return [*ids, config.audio_eos, config.vision_eos]


def _interleaved(
    video: VideoGrid, audio: AudioSpan, config: TMRoPEConfig, start: int
) -> list[tuple[int, np.ndarray]]:
    """(token id, positions (3, k)) per chunk: video then audio, chunk after chunk, both from `start`."""
    video_positions = _vision_positions(video, config, start)
    audio_positions = _sequential(audio.tokens, start)
    video_chunks = _chunks(video_positions[0], config.ids_per_chunk, start)
    audio_chunks = _chunks(audio_positions[0], config.ids_per_chunk, start)
    runs = []
    for j in range(max(len(video_chunks), len(audio_chunks))):
        if j < len(video_chunks):
            runs.append((config.video, video_positions[:, slice(*video_chunks[j])]))
        if j < len(audio_chunks):
            runs.append((config.audio, audio_positions[:, slice(*audio_chunks[j])]))
    return runs


def _sequential(length: int, start: int) -> np.ndarray:
    """(3, length): start, start + 1, ... on all three axes."""
    return np.broadcast_to(np.arange(start, start + length, dtype=np.int64), (3, length))


def _vision_positions(grid: ImageGrid | VideoGrid, config: TMRoPEConfig, start: int) -> np.ndarray:
    """(3, t * h/m * w/m): (time id, row, column) + start, time-major then rows then columns."""
    m = config.spatial_merge_size
    rows, cols = grid.h // m, grid.w // m
    # Time ids in float32 as the reference, truncated toward zero; an image's frame group counts as 1 s.
    seconds_per_grid = grid.seconds_per_grid if isinstance(grid, VideoGrid) else 1.0
    seconds = np.arange(grid.t, dtype=np.float32) * np.float32(seconds_per_grid)
    times = (seconds * np.float32(config.position_id_per_seconds)).astype(np.int64)
    t = np.repeat(times, rows * cols)
    h = np.tile(np.repeat(np.arange(rows, dtype=np.int64), cols), grid.t)
    w = np.tile(np.arange(cols, dtype=np.int64), grid.t * rows)
    return np.stack([t, h, w]) + start


def _chunks(time_ids: np.ndarray, ids_per_chunk: int, start: int) -> list[tuple[int, int]]:
    """(begin, end) slices of `time_ids` per chunk of `ids_per_chunk` time ids (the reference's
    `get_chunked_index`: one boundary per token that reaches the next threshold, so a jump over
    two thresholds makes a one-token chunk, as there)."""
    slices, begin, chunk = [], 0, 1
    for i, time_id in enumerate(time_ids.tolist()):
        if time_id - start >= chunk * ids_per_chunk:
            slices.append((begin, i))
            begin, chunk = i, chunk + 1
    slices.append((begin, len(time_ids)))
    return slices
