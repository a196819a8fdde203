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
from model.audio_features import log_mel, mel_frame_count
from model.errors import OmnideskError
from model.files.bundle import Bundle
from model.media import Audio, Image, Question
from model.thinker import EmbeddingRun, Segment, Thinker, TokenRun
from model.tmrope import AudioSpan, ImageGrid, PromptMedia, TMRoPEConfig, tmrope_positions
from model.vision import VisionEncoder, VisionOptions


@dataclass(frozen=True, eq=False)
class EncodedMedia:
    """One image or recording as the Thinker takes it."""

    embeddings: np.ndarray = field(repr=False)  # (n, n_embd) float32
    grid: ImageGrid | AudioSpan
    key: str  # identifies the content, so a later prompt with it reuses the KV cache

    @property
    def is_image(self) -> bool:
        return isinstance(self.grid, ImageGrid)


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
        """The question's media in prompt order (images, then audio)."""
        if question.videos:
            raise OmnideskError("video questions are not supported yet: ask about a frame (an image) instead")
        return [*map(self.encode_image, question.images), *map(self.encode_audio, question.audios)]

    def encode_image(self, image: Image) -> EncodedMedia:
        encoded = self._vision_encoder().encode(image)
        return EncodedMedia(encoded.embeddings, encoded.grid, encoded.key)

    def encode_audio(self, audio: Audio) -> EncodedMedia:
        if len(audio.samples) == 0:
            raise OmnideskError("the recording is empty: hold the talk button while you speak")
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


def media_ids(media: Sequence[EncodedMedia], tokens: dict[str, int]) -> list[int]:
    """The placeholder ids of a user turn's media, each between its markers, in the given order."""
    ids: list[int] = []
    for item in media:
        if item.is_image:
            ids += [tokens["vision_bos"], *[tokens["image"]] * len(item.embeddings), tokens["vision_eos"]]
        else:
            ids += [tokens["audio_bos"], *[tokens["audio"]] * len(item.embeddings), tokens["audio_eos"]]
    return ids


def user_message(
    tokenize: Callable[[str], list[int]], tokens: dict[str, int], media: Sequence[EncodedMedia], text: str
) -> list[int]:
    """<|im_start|>user\\n, the media's placeholders, the text, <|im_end|>\\n: the reference's layout
    (its tokenizer splits the rendered template at special tokens, so the text is tokenized alone)."""
    body = media_ids(media, tokens) + (tokenize(text) if text else [])
    return [tokens["im_start"], *tokenize("user\n"), *body, tokens["im_end"], *tokenize("\n")]


def prompt_segments(
    ids: Sequence[int], media: Sequence[EncodedMedia], config: TMRoPEConfig
) -> tuple[list[Segment], np.ndarray]:
    """A prompt's text runs and media runs, and its positions (3, n) as the reference computes them.

    `media` lists every media item of the prompt in order of appearance.
    """
    images = tuple(m.grid for m in media if isinstance(m.grid, ImageGrid))
    audios = tuple(m.grid for m in media if isinstance(m.grid, AudioSpan))
    positions = tmrope_positions(ids, PromptMedia(images=images, audios=audios), config)
    segments: list[Segment] = []
    start = 0
    for item in media:
        placeholder = config.image if item.is_image else config.audio
        first = _index(ids, placeholder, start)
        stop = first + len(item.embeddings)
        if list(ids[first:stop]) != [placeholder] * len(item.embeddings):
            raise ValueError("the prompt's placeholders do not match its media")
        if first > start:
            segments.append(_text_run(ids, positions, start, first))
        segments.append(EmbeddingRun(item.embeddings, positions[:, first:stop], item.key, placeholder))
        start = stop
    if start < len(ids):
        segments.append(_text_run(ids, positions, start, len(ids)))
    return segments, positions


def _text_run(ids: Sequence[int], positions: np.ndarray, start: int, stop: int) -> TokenRun:
    """Text tokens with the positions the layout gave them (one id on all three axes)."""
    line = positions[0, start:stop]
    if not np.array_equal(positions[1:, start:stop], np.broadcast_to(line, (2, stop - start))):
        raise ValueError("text tokens must have one position id on all three axes")
    return TokenRun(tuple(ids[start:stop]), tuple(int(p) for p in line))


def _index(ids: Sequence[int], token: int, start: int) -> int:
    for i in range(start, len(ids)):
        if ids[i] == token:
            return i
    raise ValueError("the prompt has fewer placeholders than media")
