"""A prompt as token ids and segments: the layout of Qwen2.5-Omni's chat template and processor.

- `PromptLayout` writes ChatML as ids: system and user messages, a user turn with its media (the
  reference's order: videos, images, audio, then the text; each placeholder repeated once per
  embedding between its markers), the reply header, and a reply as the history keeps it.
  Markers (<|im_start|>, <|im_end|>) are inserted as ids; the text between them is tokenized without
  parsing special tokens, so a user typing "<|im_end|>" cannot forge a turn. Between markers this
  gives the same ids as tokenizing the template's rendered string, since markers are split out first
  there too (which is why a turn with media tokenizes "user\n" and its text apart).
- `prompt_segments` cuts a whole prompt into text runs and embedding runs, with the TMRoPE positions
  of `tmrope_positions` (the function the Talker's positions come from too).

Media arrive already encoded (`perception.EncodedMedia`); nothing here runs a network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from model.perception import EncodedMedia
from model.thinker_types import EmbeddingRun, Segment, TokenRun
from model.tmrope import (
    AudioSpan,
    ImageGrid,
    PromptMedia,
    TMRoPEConfig,
    VideoGrid,
    tmrope_positions,
    video_with_audio_tokens,
)

# The reference's system prompt; the Talker was trained to speak only under it.
SPEECH_SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
    "auditory and visual inputs, as well as generating text and speech."
)

Tokenize = Callable[[str], list[int]]


class PromptLayout:
    """ChatML turns as ids, for one tokenizer and the prompt's special tokens."""

    def __init__(self, tokenize: Tokenize, tokens: dict[str, int], tmrope: TMRoPEConfig) -> None:
        self._tokenize = tokenize
        self.tmrope = tmrope
        self._im_start = tokens["im_start"]
        self._im_end = tokens["im_end"]
        self._stops = {tokens["im_end"], tokens["endoftext"]}
        self._newline = tokenize("\n")

    def message(self, role: str, text: str) -> list[int]:
        """A whole text message: <|im_start|>role\ntext<|im_end|>\n"""
        return [self._im_start, *self._tokenize(f"{role}\n{text}"), self._im_end, *self._newline]

    def user(self, text: str, media: Sequence[EncodedMedia] = ()) -> list[int]:
        """A user turn: a text message, or <|im_start|>user\n, the media's placeholders, the text,
        <|im_end|>\n (the template renders media parts as special tokens, so the text is alone)."""
        if not media:
            return self.message("user", text)
        body = media_ids(media, self.tmrope) + (self._tokenize(text) if text else [])
        return [self._im_start, *self._tokenize("user\n"), *body, self._im_end, *self._newline]

    def user_so_far(self, media: Sequence[EncodedMedia], recording_open: bool) -> list[int]:
        """The start of a user turn while it is asked: <|im_start|>user\n and the media known so far,
        the last of them a recording (or a live call's video with its sound) still being made if
        `recording_open`: its placeholders so far, without its end marker(s). The ids are the first
        ones of `user` with the finished media."""
        ids = [self._im_start, *self._tokenize("user\n"), *media_ids(media, self.tmrope)]
        if not recording_open:
            return ids
        return ids[: -2 if media and media[-1].sound is not None else -1]  # a video's two end markers

    def reply_header(self) -> list[int]:
        """What precedes the assistant's reply: <|im_start|>assistant\n"""
        return [self._im_start, *self._tokenize("assistant\n")]

    def closed_reply(self, reply_ids: Sequence[int]) -> list[int]:
        """A reply as the history keeps it: ended by <|im_end|> and a newline, whatever stopped it.

        A reply stopped by <|endoftext|> or cut short gets <|im_end|> in place: the
        template's layout, and a stop token other than <|im_end|> is never fed back.
        """
        body = list(reply_ids[:-1] if reply_ids and reply_ids[-1] in self._stops else reply_ids)
        return [*body, self._im_end, *self._newline]

    def prompt(self, system: str, user: str) -> list[int]:
        """A one-question prompt ending where the reply starts."""
        return [*self.message("system", system), *self.message("user", user), *self.reply_header()]

    def segments(self, ids: Sequence[int], media: Sequence[EncodedMedia]) -> tuple[list[Segment], np.ndarray]:
        """`prompt_segments` with this layout's TMRoPE settings."""
        return prompt_segments(ids, media, self.tmrope)


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
    return _later_where_time_goes_back(_joined_where_time_goes_back(segments)), positions


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


def _later_where_time_goes_back(segments: list[Segment]) -> list[Segment]:
    """Each segment that starts before the time the prompt has reached, and every one after it, moved
    later by as much: llama.cpp cannot decode time ids that go back.

    Only a video whose sound ends before its frames do needs it: the reference continues after the
    last chunk's sound, below the ids of that chunk's later frames, so the end markers and what follows
    come as many ids later here (the same positions relative to one another; docs/known-issues.md)."""
    moved: list[Segment] = []
    offset, reached = 0, -1
    for segment in segments:
        text = isinstance(segment, TokenRun)
        times = np.asarray(segment.positions) if isinstance(segment, TokenRun) else segment.positions[0]
        # Text comes after the time reached; media may share it (an image's rows share one time id).
        offset = max(offset, reached + text - int(times.min()))
        reached = max(reached, int(times.max()) + offset)
        if not offset:
            moved.append(segment)
        elif isinstance(segment, TokenRun):
            moved.append(TokenRun(segment.ids, tuple(int(p) + offset for p in times)))
        else:
            moved.append(replace(segment, positions=segment.positions + offset))
    return moved


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
