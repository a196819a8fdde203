"""A question's media as the Thinker takes them: `Perception` encodes images, videos and recordings.

It owns the encoders (llama.cpp's vision encoder on the mmproj, our audio encoder), loaded on first
use, and turns media into `EncodedMedia`: embeddings, their patch grid or length, and a content key.
Where they go in a prompt is `prompt_layout`'s business.

Threads: everything here runs on the caller's thread (the turn's); encoding blocks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from model.audio_encoder import AudioEncoder, audio_encoder_from_file
from model.audio_features import log_mel, mel_frame_count
from model.errors import OmnideskError
from model.files.bundle import Bundle
from model.media import Audio, Image, Question, Video
from model.thinker import Thinker
from model.tmrope import AudioSpan, ImageGrid, VideoGrid
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
