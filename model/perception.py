"""A question's media as the Thinker takes them: `Perception` encodes images, videos and recordings.

It owns the encoders (the vision encoder the plan picked, on the mmproj: llama.cpp's mtmd or our
torch tower; our audio encoder), loaded on first use, and turns media into `EncodedMedia`:
embeddings, their patch grid or length, and a content key. A recording longer than the bundle's
`recording_limit` is cut here, as the reference's processor cuts it, and says so (`RecordingCut`).
Where media go in a prompt is `prompt_layout`'s business.

Threads: everything here runs on the caller's thread (the turn's); encoding blocks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from model.audio_encoder import AudioEncoder, ListeningEncoder, audio_encoder_from_file
from model.audio_features import check_recording, log_mel, mel_frame_count, recording_limit
from model.audio_rates import INPUT_SAMPLE_RATE
from model.errors import OmnideskError
from model.files.bundle import Bundle
from model.media import Audio, Image, Question, Video
from model.thinker import Thinker
from model.tmrope import AudioSpan, ImageGrid, VideoGrid
from model.vision import PATCH_SIZE, FrameEncoder, VisionEncoder, VisionOptions
from model.vision_plan import PIXELS_PER_EMBEDDING, SHARP_EMBEDDINGS, SMALL_TEXT_SCALE
from model.vision_tower import NativeVisionEncoder

IMAGES_KEPT = 4  # encodings of recent images kept for questions that show them again


@dataclass(frozen=True)
class RecordingCut:
    """A recording longer than the model hears: only its first `heard_s` of `length_s` seconds went in."""

    heard_s: float
    length_s: float

    @property
    def message(self) -> str:
        return (
            f"Heard only the first {_clock(self.heard_s)} of a {_clock(self.length_s)} recording: "
            "the most this model takes."
        )


@dataclass(frozen=True)
class PictureShrunk:
    """A picture shrunk by the image budget so far that small text may not be readable: said once
    per conversation, naming the setting that keeps more."""

    size: tuple[int, int]  # (width, height) pixels, as given
    encoded: tuple[int, int]  # (width, height) pixels, as encoded

    @property
    def message(self) -> str:
        (width, height), (to_width, to_height) = self.size, self.encoded
        return (
            f"A {width}x{height} picture was shrunk to {to_width}x{to_height} to be read quickly: small text "
            "may not be readable. Settings > Detail: Sharp keeps more."
        )


@dataclass(frozen=True, eq=False)
class EncodedMedia:
    """One image, recording or video as the Thinker takes it (a video may carry its own sound,
    interleaved with its frames in 2 s chunks)."""

    embeddings: np.ndarray = field(repr=False)  # (n, n_embd) float32
    grid: ImageGrid | VideoGrid | AudioSpan
    key: str  # identifies the content, so a later prompt with it reuses the KV cache
    sound: EncodedMedia | None = None  # a video's audio, interleaved with it
    cut: RecordingCut | None = None  # a recording heard only in part
    shrunk: PictureShrunk | None = None  # a picture whose small text may have become unreadable

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
        audio_threads: int | None = None,
    ) -> None:
        """`audio_threads`: the audio encoder's CPU threads (it runs while nothing else computes: as a
        question is spoken, or at its end); None: torch's own."""
        self.bundle = bundle
        self.thinker = thinker
        self.vision_options = vision
        self.device = device
        self.dtype = dtype
        self.audio_threads = audio_threads
        self.max_samples = recording_limit(bundle.preprocessor)  # of a recording, at INPUT_SAMPLE_RATE
        self._vision: FrameEncoder | None = None
        self._said_shrunk = False
        self._audio: AudioEncoder | None = None
        self._images: dict[str, EncodedMedia] = {}  # by pixel_hash, oldest first

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

    def encode_frame_pair(self, frames: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
        """One temporal patch of a video whose frames are all `size` (a live call's): `encode_pair`."""
        return self._vision_encoder().encode_pair(frames, size)

    def encode_image(self, image: Image) -> EncodedMedia:
        """The image's embeddings; pixels seen lately (the same screen asked about again) are not
        encoded again: the last IMAGES_KEPT images' encodings are kept, by a hash of their pixels."""
        pixels = pixel_hash(image.pixels)
        known = self._images.pop(pixels, None)
        if known is None:
            encoded = self._vision_encoder().encode(image)
            known = EncodedMedia(encoded.embeddings, encoded.grid, encoded.key)
        self._images[pixels] = known  # now the most recent
        while len(self._images) > IMAGES_KEPT:
            del self._images[next(iter(self._images))]
        assert isinstance(known.grid, ImageGrid)
        return replace(known, shrunk=self._shrunk(image, known.grid))

    def forget_images(self) -> None:
        """Drop the images' kept encodings (another conversation begins)."""
        self._images.clear()

    def _shrunk(self, image: Image, grid: ImageGrid) -> PictureShrunk | None:
        """The first picture that the budget (below Sharp's) shrinks under SMALL_TEXT_SCALE of its width."""
        height, width = image.pixels.shape[:2]
        to_width, to_height = grid.w * PATCH_SIZE, grid.h * PATCH_SIZE
        below_sharp = self.vision_options.max_pixels < SHARP_EMBEDDINGS * PIXELS_PER_EMBEDDING
        if self._said_shrunk or not below_sharp or to_width >= SMALL_TEXT_SCALE * width:
            return None
        self._said_shrunk = True
        return PictureShrunk((width, height), (to_width, to_height))

    def encode_audio(self, audio: Audio) -> EncodedMedia:
        check_recording(audio.samples)
        encoder = self._audio_encoder()
        heard = audio.samples[: self.max_samples]
        embeddings = encoder.encode(log_mel(heard, max_samples=self.max_samples))
        return self.recording_media(audio, embeddings, recording_key(heard))

    def listening_encoder(self) -> ListeningEncoder:
        """An encoder of a recording still being made (2 s blocks as they arrive), for this bundle."""
        return ListeningEncoder(self._audio_encoder(), self.max_samples)

    def recording_media(self, audio: Audio, embeddings: torch.Tensor, key: str) -> EncodedMedia:
        """A recording's embeddings (tokens, n_embd), of its first `max_samples` at most, as the
        Thinker takes them (with the cut said, if it was longer)."""
        heard = min(len(audio.samples), self.max_samples)
        cut = None
        heard_s = heard / INPUT_SAMPLE_RATE
        if heard_s < audio.recording_s:
            cut = RecordingCut(heard_s, audio.recording_s)
        span = AudioSpan(mel_frame_count(heard, self.max_samples))
        return EncodedMedia(embeddings.float().cpu().numpy(), span, key, cut=cut)

    def load_vision(self) -> None:
        """Load the vision encoder now (a call's first frame, say, should not wait for it)."""
        self._vision_encoder()

    def _vision_encoder(self) -> FrameEncoder:
        """The encoder the options name: llama.cpp's mtmd, or torch's tower (`options.tower`)."""
        if self._vision is None:
            if "mmproj" not in self.bundle.files:
                raise OmnideskError(
                    "this model has no vision projector (mmproj), so it cannot see images: "
                    "download the model again (omnidesk models download) or convert it from the checkpoint"
                )
            mmproj, options = self.bundle.file("mmproj"), self.vision_options
            if options.tower is None:
                self._vision = VisionEncoder(mmproj, self.thinker.llama_model, self.thinker.n_embd, options)
            else:
                self._vision = NativeVisionEncoder(mmproj, self.thinker.n_embd, options)
        return self._vision

    def place_audio_encoder(self, device: str, dtype: torch.dtype) -> None:
        """Run the audio encoder on `device` in `dtype` from now on (loaded again on next use)."""
        self.device, self.dtype, self._audio = device, dtype, None

    def _audio_encoder(self) -> AudioEncoder:
        if self._audio is None:
            config = self.bundle.config["thinker_config"]["audio_config"]
            encoder = audio_encoder_from_file(self.bundle.file("audio_encoder"), config, self.dtype)
            encoder.threads = self.audio_threads
            self._audio = encoder.to(self.device)
        return self._audio


def recording_cuts(media: Sequence[EncodedMedia]) -> list[RecordingCut]:
    """The cuts of the recordings among `media` (a video's sound included), in order."""
    parts = [part for item in media for part in (item, item.sound) if part is not None]
    return [part.cut for part in parts if part.cut is not None]


def pictures_shrunk(media: Sequence[EncodedMedia]) -> list[PictureShrunk]:
    """What `media` say of pictures shrunk past readable small text, in order."""
    return [item.shrunk for item in media if item.shrunk is not None]


def recording_key(heard: np.ndarray) -> str:
    """A hash of the samples (n,) of a recording that the model hears."""
    return hashlib.blake2b(heard.tobytes(), digest_size=16, person=b"omnidesk-audio").hexdigest()


def pixel_hash(pixels: np.ndarray) -> str:
    """A hash of an image's pixels (h, w, 3) and shape: the same screen shot twice hashes the same."""
    digest = hashlib.blake2b(digest_size=16, person=b"omnidesk-pixels")
    digest.update(repr(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).data)
    return digest.hexdigest()


def _clock(seconds: float) -> str:
    """A duration as minutes:seconds (m:ss), e.g. 300 -> 5:00."""
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}"
