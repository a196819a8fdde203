"""A question while it is still being asked: look and listen before the user lets go.

From the press of the talk key (or the start of speech, hands-free) to the release, `Listening`
encodes what is already known of the question and puts it in the Thinker's cache after the
conversation so far: the user turn's opening, the pictures it carries (`look`: encoded at once) and
each finished 2 s block of the recording (`hear`: `ListeningEncoder`). At release `media` gives the
question's media as `Conversation.turn` lays them out; the turn's prefill then finds all of that in
the cache and decodes only the last partial block and the question's closing tokens.

Exactness: the prompt is the one encoding at release makes (same ids, same positions: a position
depends only on what precedes it, and a recording's positions are consecutive from its start).
The recording's embeddings are bitwise those of encoding it whole (`ListeningEncoder.finish`); where
an early block had to be encoded again (the peak rose, or the recording sent is shorter than the one
heard), the recording gets a new key, so the rows decoded from the old block are not reused.

A press that ends with no question calls `discard`: the cache is cut back to what it held before
and nothing heard or seen is kept.

Threads: one owner (the worker thread) calls everything here; encoding and decoding block it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from model.audio_encoder import ListeningEncoder
from model.audio_features import check_recording
from model.media import Audio, Image, Question
from model.perception import EncodedMedia, Perception, recording_key
from model.thinker import ContextFull, Thinker
from model.tmrope import AudioSpan

log = logging.getLogger(__name__)

# Puts the start of a question in the Thinker's cache: its media so far, whether the last is an
# unfinished recording (Conversation.prefill_question_start).
QuestionStart = Callable[[Sequence[EncodedMedia], bool], None]


class Listening:
    """What is known of one question while it is asked (see the module)."""

    def __init__(self, perception: Perception, thinker: Thinker, prefill: QuestionStart) -> None:
        self._perception = perception
        self._thinker = thinker
        self._prefill = prefill
        self._cached_before = thinker.n_cached
        self._images: list[EncodedMedia] = []
        self._encoder: ListeningEncoder | None = None
        self._failed = False  # encoding while listening failed: the recording is encoded at release
        self._key = f"heard-{secrets.token_hex(8)}"  # the recording's, while it is not whole
        self._prefilled_blocks = 0  # of the recording, in the cache under `_key`
        self.heard_samples = 0  # pushed so far, at INPUT_SAMPLE_RATE

    @property
    def blocks_encoded(self) -> int:
        """Blocks of the recording encoded so far."""
        return self._encoder.blocks_encoded if self._encoder is not None else 0

    def look(self, image: Image) -> None:
        """A picture the question carries (a screen shot or camera frame taken at the press): encode it
        now and put it in the cache. Pictures come before any sound."""
        if self.heard_samples:
            raise ValueError("pictures go before the recording in a question: look before hearing")
        self._images.append(self._perception.encode_image(image))
        self._extend()

    def hear(self, samples: np.ndarray) -> None:
        """The next samples (n,) float32 at INPUT_SAMPLE_RATE; each 2 s block they complete is encoded
        and put in the cache. A failure here is logged and leaves the recording to be encoded whole
        at release."""
        self.heard_samples += len(samples)
        if self._failed:
            return
        try:
            if self._encoder is None:
                self._encoder = self._perception.listening_encoder()
            blocks = self._encoder.blocks_encoded
            self._encoder.push(samples)
            if self._encoder.blocks_encoded > blocks:
                self._extend()
        except Exception:  # an encoder out of memory, say: the release encodes it all, as before
            log.exception("encoding while listening failed; the recording is encoded at release")
            self._encoder, self._failed = None, True

    def media(self, question: Question) -> list[EncodedMedia]:
        """The question's media in prompt order, as `Perception.encode` makes them; its last recording
        is the one heard here (as sent: voice activity leaves out the trailing silence)."""
        encoder, self._encoder = self._encoder, None
        if encoder is None or not question.audios:
            return self._perception.encode(question)
        *others, spoken = question.audios
        media = self._perception.encode(replace(question, audios=tuple(others)))
        return [*media, self._recording(encoder, spoken)]

    def discard(self) -> None:
        """No question after all (too short, cancelled): the cache holds again what it held before, and
        nothing seen or heard is kept."""
        self._encoder = None
        self._images = []
        self._thinker.truncate(self._cached_before)

    def _recording(self, encoder: ListeningEncoder, audio: Audio) -> EncodedMedia:
        check_recording(audio.samples)
        embeddings = encoder.finish(audio.samples)
        key = self._key
        if encoder.kept_blocks < self._prefilled_blocks:  # rows in the cache are not these
            key = recording_key(audio.samples[: self._perception.max_samples])
        return self._perception.recording_media(audio, embeddings, key)

    def _extend(self) -> None:
        """The question so far into the Thinker's cache (nothing, if the context cannot hold it)."""
        media = list(self._images)
        encoder = self._encoder
        if encoder is not None and encoder.blocks_encoded:
            so_far = encoder.embeddings_so_far().float().cpu().numpy()
            media.append(EncodedMedia(so_far, AudioSpan(encoder.frames_encoded), self._key))
        try:
            self._prefill(media, encoder is not None and encoder.blocks_encoded > 0)
        except ContextFull:
            return
        self._prefilled_blocks = encoder.blocks_encoded if encoder is not None else 0
