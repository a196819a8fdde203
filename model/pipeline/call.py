"""A live call's user turn while it happens: what the camera (or the screen) shows and what the
microphone hears, put in the Thinker's cache 2 s at a time, as the model was trained to take them.

A call is a conversation whose user turns are videos with their sound: from the end of the last reply
(or the call's start) to the end of the user's speech, frames at the plan's rate (`CallFrames`) and
the microphone's sound, laid out as the reference's processor lays out a video with
`use_audio_in_video` (per 2 s chunk the chunk's frames, then its sound; TMRoPE time ids from the
turn's start). `CallTurn.question` is that turn as a `Question`, which `Conversation.turn` answers
like any other.

Frames keep the sound's clock: frame k is taken (`look`: what the camera or screen shows now) when
the sound heard reaches k / fps seconds, so the two keep the same time whatever the caller's timers do.

Incremental: every chunk whose frames and sound are both complete is encoded and put in the cache
at once (each frame pair by `encode_pair`, the sound in 2 s blocks, one block per chunk), so when the
user stops speaking only the last partial chunk remains (`Conversation.turn(question, heard=turn)`).

Exactness: the frames' embeddings and the prompt (ids, positions) are bitwise what encoding the
whole turn at its end gives, but for frame pairs that barely differ from the last one encoded
(`still`): those take its embeddings (exact for a screen that did not change at all). The sound is
featurised as it is heard (`ListeningEncoder.finish_as_heard`: each block with the loudest value heard
by then), where encoding the recording whole floors every block at its final peak; a block heard
before a louder voice may differ in its quietest bins, and re-encoding it would mean decoding the
whole turn again at its end. The deviation is measured in
tests/model/test_call.py (docs/known-issues.md).

`Call` runs the turns one after another, and where each begins is the plan's (`CallFrames.from_speech`):
- on a GPU, at the end of the last reply: the model sees what happened while the user was silent too.
  An idle turn that reaches its share of the context (`full`: what the history leaves of it, less the
  reply's tokens) or the most sound the model hears in one recording (300 s) starts again, emptied:
  the model sees the last minutes of a quiet call;
- on a CPU, when the user starts to speak (with the `LEAD_S` before it that voice activity needs to
  tell speech): a CPU cannot keep up with a call's every second (at 3B on two cores, a 2 s chunk and
  its frame take about 1.8 s to encode and prefill, nearly all of it: `omnidesk bench call`), so it
  spends itself on what the user says and what the camera shows meanwhile. The lead's frames are
  taken as it is fed, up to `LEAD_S` after their time.
The history forgets its oldest media first (`Conversation.forget_old_media`).

Threads: one owner (the worker thread) calls everything here; encoding and decoding block it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Protocol

import numpy as np

from model.audio_encoder import audio_token_count
from model.audio_features import mel_frame_count
from model.audio_rates import INPUT_SAMPLE_RATE
from model.media import Audio, Question, Video
from model.perception import EncodedMedia, Perception
from model.pipeline.listening import QuestionStart
from model.thinker import ContextFull, Thinker
from model.tmrope import AudioSpan, TMRoPEConfig, VideoGrid
from model.vision import FACTOR, PATCH_SIZE, TEMPORAL_PATCH, resize_pixels
from model.vision_plan import CallFrames

# What the camera or the screen shows now: (h, w, 3) uint8 RGB.
Look = Callable[[], np.ndarray]
LEAD_S = 1.0  # kept before speech is told (voice activity's pre-roll and onset), where turns begin at it
# Frame pairs whose pixels differ from the last pair encoded by at most this on average (of 255) take its
# embeddings instead of being encoded: a screen that did not change (0), a camera on a still scene. The
# embeddings' deviation at this level is measured in tests/model/test_call.py.
STILL_MEAN_DIFFERENCE = 1.0


class CallTurn:
    """One user turn of a live call while it happens (see the module)."""

    def __init__(
        self,
        perception: Perception,
        thinker: Thinker,
        prefill: QuestionStart,
        tmrope: TMRoPEConfig,
        frames: CallFrames,
        look: Look,
        budget: int,
    ) -> None:
        """`budget`: the most positions the turn may take in the context (see `full`)."""
        self._perception = perception
        self.budget = budget
        self._thinker = thinker
        self._prefill = prefill
        self._tmrope = tmrope
        self.frames = frames
        self._look = look
        self._cached_before = thinker.n_cached
        self._encoder = perception.listening_encoder()
        self._size: tuple[int, int] | None = None  # (height, width) of every frame, from the first
        self._shown: list[np.ndarray] = []  # the frames taken, at `_size`
        self._pairs: list[np.ndarray] = []  # the embeddings of each frame pair encoded
        self._last_encoded: tuple[list[np.ndarray], np.ndarray] | None = None  # frames and embeddings
        self.pairs_reused = 0  # frame pairs that took the last one's embeddings (`still`)
        key = secrets.token_hex(8)
        self._video_key, self._sound_key = f"call-{key}-frames", f"call-{key}-sound"
        self.chunks_cached = 0  # chunks (frames and sound) in the Thinker's cache
        self.heard_samples = 0
        if tmrope.ids_per_chunk != self._encoder.tokens_per_block:
            raise ValueError("a call needs one audio block per 2 s chunk")

    @property
    def heard_s(self) -> float:
        return self.heard_samples / INPUT_SAMPLE_RATE

    @property
    def behind_s(self) -> float:
        """How far the cache is behind what was heard: seconds heard past the chunks it holds."""
        return max(0.0, self.heard_s - self.chunks_cached * self._tmrope.seconds_per_chunk)

    @property
    def positions(self) -> int:
        """Positions the turn takes in the context so far (frames and sound, as laid out)."""
        if self._size is None:
            return self._sound_tokens
        pairs = -(-len(self._shown) // TEMPORAL_PATCH)  # a last odd frame is doubled
        return self._sound_tokens + pairs * (self._size[0] // FACTOR) * (self._size[1] // FACTOR)

    @property
    def _sound_tokens(self) -> int:
        """Embeddings of the sound heard so far, as the model hears it (at most `max_samples`)."""
        return audio_token_count(mel_frame_count(self.heard_samples, self._perception.max_samples))

    @property
    def full(self) -> bool:
        """The turn holds its `budget` of positions or the most sound one recording may hold."""
        return self.positions >= self.budget or self.heard_samples >= self._perception.max_samples

    @property
    def frames_taken(self) -> int:
        return len(self._shown)

    def hear(self, samples: np.ndarray) -> None:
        """The next samples (n,) float32 at INPUT_SAMPLE_RATE; the frames due by their end are taken,
        and each chunk they complete is encoded and put in the cache."""
        self.heard_samples += len(samples)
        while len(self._shown) / self.frames.fps * INPUT_SAMPLE_RATE <= self.heard_samples:
            self._take_frame()
        self._encoder.push(samples)
        self._extend()

    def question(self, text: str = "") -> Question:
        """The turn as a question: one video (the frames taken within its sound, at their size) with
        its sound."""
        shown = self._shown[: self._frames_within_sound()]
        video = Video(
            np.stack(shown),
            np.arange(len(shown)) / self.frames.fps,
            Audio(self._encoder.recording.copy()),
            frame_seconds=1 / self.frames.fps,
            frame_size=self._size,
        )
        return Question(text, videos=(video,), use_audio_in_video=True)

    def media(self, question: Question) -> list[EncodedMedia]:
        """The turn's media as `Conversation.turn` takes them: its video and sound, the chunks in the
        cache as they were encoded, the rest encoded now (`question` must be this turn's `question`)."""
        if len(question.videos) != 1 or question.images or question.audios:
            raise ValueError("a call's turn is its own video with its sound")
        shown = self._shown[: self._frames_within_sound()]
        whole = len(shown) // TEMPORAL_PATCH
        if len(shown) % TEMPORAL_PATCH:  # the last frame doubled, as the reference's processor does
            shown.append(shown[-1])
        del self._pairs[whole:]  # a pair with a frame past the sound is made again without it
        while len(self._pairs) < len(shown) // TEMPORAL_PATCH:
            self._encode_pair(shown)
        audio = Audio(self._encoder.recording)
        sound = self._perception.recording_media(audio, self._encoder.finish_as_heard(), self._sound_key)
        return [self._video(len(self._pairs), sound)]

    def discard(self) -> None:
        """No turn after all (the call ended, or an idle turn is started again): the cache holds again
        what it held before, and nothing seen or heard is kept."""
        self._shown, self._pairs, self._last_encoded = [], [], None
        self._thinker.truncate(self._cached_before)

    def _take_frame(self) -> None:
        pixels = self._look()
        if self._size is None:
            self._size = self.frames.frame_size(*pixels.shape[:2])
        self._shown.append(resize_pixels(pixels, *self._size))  # kept small: a call holds many
        if len(self._shown) // TEMPORAL_PATCH > len(self._pairs):
            self._encode_pair(self._shown)

    def _encode_pair(self, shown: list[np.ndarray]) -> None:
        """The next frame pair of `shown` (the frames taken, or those of the finished turn); a pair that
        barely differs from the last one encoded takes its embeddings (see `still`)."""
        assert self._size is not None
        first = len(self._pairs) * TEMPORAL_PATCH
        pair = shown[first : first + TEMPORAL_PATCH]
        last = self._last_encoded
        if last is not None and still(last[0], pair):
            self._pairs.append(last[1])
            self.pairs_reused += 1
            return
        embeddings = self._perception.encode_frame_pair(pair, self._size)
        self._pairs.append(embeddings)
        self._last_encoded = (pair, embeddings)

    def _frames_within_sound(self) -> int:
        """Frames whose time id comes before the end of the sound heard: a frame pair timed past the
        sound's last position would share its end markers' position, which llama.cpp cannot decode
        (the reference's `get_rope_index` places those markers after the last chunk's sound)."""
        tokens = self._sound_tokens
        per_frame = np.float32(self._tmrope.position_id_per_seconds / self.frames.fps)
        frames = 0
        while frames < len(self._shown) and int(np.float32(frames) * per_frame) < tokens:
            frames += 1
        return frames

    def _extend(self) -> None:
        """The chunks now complete into the Thinker's cache (nothing, if the context cannot hold them)."""
        chunks = self._encoder.blocks_encoded
        while chunks > self.chunks_cached and self._pairs_before(chunks) > len(self._pairs):
            chunks -= 1  # its frames are not all encoded yet (they come before its sound)
        if chunks <= self.chunks_cached:
            return
        rows = chunks * self._encoder.tokens_per_block
        so_far = self._encoder.embeddings_so_far()[:rows].float().cpu().numpy()
        span = AudioSpan(chunks * self._encoder.frames_per_block)
        sound = EncodedMedia(so_far, span, self._sound_key)
        try:
            self._prefill([self._video(self._pairs_before(chunks), sound)], True)
        except ContextFull:
            return
        self.chunks_cached = chunks

    def _pairs_before(self, chunks: int) -> int:
        """Frame pairs whose time id falls in the first `chunks` chunks (`tmrope._vision_positions`)."""
        seconds = np.float32(TEMPORAL_PATCH / self.frames.fps)
        limit = chunks * self._tmrope.ids_per_chunk
        pairs = 0
        while int(np.float32(pairs) * seconds * np.float32(self._tmrope.position_id_per_seconds)) < limit:
            pairs += 1
        return pairs

    def _video(self, pairs: int, sound: EncodedMedia) -> EncodedMedia:
        """The first `pairs` frame pairs, with `sound`, as one video."""
        assert self._size is not None
        height, width = self._size
        grid = VideoGrid(pairs, height // PATCH_SIZE, width // PATCH_SIZE, TEMPORAL_PATCH / self.frames.fps)
        embeddings = np.concatenate(self._pairs[:pairs])
        return EncodedMedia(embeddings, grid, self._video_key, sound)


class Call:
    """A live call: its user turns one after another (see the module). `hear` while the call is on;
    `turn` when the user has finished speaking, then `conversation.turn(...)` with it; `next_turn` once
    the reply has been spoken; `end` when the call ends."""

    def __init__(self, conversation: CallHost, look: Look, reply_tokens: int) -> None:
        self._conversation = conversation
        self._look = look
        self._reply_tokens = reply_tokens
        self.restarts = 0  # idle turns started again
        self._turn: CallTurn | None = conversation.call_turn(look, reply_tokens)
        self._lead: list[np.ndarray] = []  # the last LEAD_S heard before the turn began (from speech)

    @property
    def current(self) -> CallTurn | None:
        """The turn being heard; None between the end of a turn and `next_turn`."""
        return self._turn

    def hear(self, samples: np.ndarray, speaking: bool) -> None:
        """The microphone's next samples (heard between turns: dropped); `speaking`: voice activity
        hears the user, so a full turn is not started again under them."""
        if self._turn is None:
            return
        if self._turn.frames.from_speech and not self._turn.heard_samples:
            if not speaking:
                self._keep_lead(samples)
                return
            samples, self._lead = np.concatenate([*self._lead, samples]), []
        elif self._turn.full and not speaking:
            self._turn.discard()
            self._turn = self._conversation.call_turn(self._look, self._reply_tokens)
            self.restarts += 1
        self._turn.hear(samples)

    @property
    def heard(self) -> bool:
        """The turn being heard has begun (from speech: the user has spoken)."""
        return self._turn is not None and self._turn.heard_samples > 0

    def _keep_lead(self, samples: np.ndarray) -> None:
        self._lead.append(samples)
        keep = int(LEAD_S * INPUT_SAMPLE_RATE)
        while sum(len(piece) for piece in self._lead) - len(self._lead[0]) >= keep:
            self._lead.pop(0)

    def turn(self) -> CallTurn:
        """The turn heard so far, ended: the caller answers it (`turn.question()`, heard=it)."""
        if self._turn is None:
            raise RuntimeError("no turn is being heard: call next_turn after the reply")
        turn, self._turn = self._turn, None
        return turn

    def next_turn(self) -> None:
        """Start hearing the next turn (after the reply was spoken, or when it was interrupted)."""
        if self._turn is None:
            self._turn = self._conversation.call_turn(self._look, self._reply_tokens)
            self._lead = []

    def end(self) -> None:
        """The call is over: a turn still being heard leaves nothing behind."""
        if self._turn is not None:
            self._turn.discard()
            self._turn = None


class CallHost(Protocol):
    """What a call needs of its conversation (`Conversation`)."""

    def call_turn(self, look: Look, reply_tokens: int) -> CallTurn: ...


def still(before: list[np.ndarray], after: list[np.ndarray]) -> bool:
    """Two frame pairs (at one size) that barely differ: STILL_MEAN_DIFFERENCE at most, frame by frame."""
    return all(
        float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) <= STILL_MEAN_DIFFERENCE
        for a, b in zip(before, after, strict=True)
    )
