"""Streaming Token2Wav: codes go in as the Talker makes them, audio chunks come out.

Rates: 1 code = 2 mel frames = 480 samples = 20 ms; a DiT block is 24 frames = 12 codes = 240 ms.

DiT (`MelStream`). Mel is made block-aligned, chunk by chunk. The first chunk is
`first_chunk_blocks` (default 2 blocks: 24 codes, 480 ms) and every later chunk
`chunk_blocks` (default 3 blocks: 36 codes, 720 ms). A chunk is sampled on a window that adds
`past_blocks` (2) before and `future_blocks` (1) after it: one block ahead is what the block
attention needs (one look-ahead layer), two behind is the network's look-back. So a chunk can
start once the codes of its last block and of one more block are in: the first chunk needs
36 codes (720 ms of speech), each later chunk 36 more. At the end of the utterance the last
chunks take whatever codes there are. Each window integrates the whole ODE on its own, with
the absolute RoPE positions and block indices of the utterance and the matching slice of the
utterance's noise (`NoiseStream`, seeded as the whole-utterance mode). The result differs
slightly from the whole-utterance mel (the ODE's evaluations reach further than one window);
tests/model/test_token2wav.py measures by how much.

Vocoder (`ChunkedVocoder`). BigVGAN is symmetric: an output sample reads up to
`receptive_field_frames` mel frames on each side (34 for the released layout, 340 ms). Each call
vocodes the new frames with that many frames of final mel before and after them and keeps only
the new frames' audio, so the joined chunks equal one BigVGAN run over the whole mel, and the
last 34 frames of mel wait for the next DiT chunk (or the end). Hence the first audio chunk:
after the first DiT chunk (36 codes in), 48 - 34 = 14 frames = 140 ms of audio; then about
72 frames (720 ms) per DiT chunk. That is as early as the DiT's look-ahead plus an exact
vocoder allow. A smaller context trades exactness for latency: in the listening check (tiny
random vocoder) 16 frames left seams below one 16-bit step (-110 dB) and 8 frames did not
(-45 dB); with `vocoder_context_frames=16, first_chunk_blocks=1` the first 80 ms of audio come
with the 24th code. That margin belongs to those weights, so the default stays exact. Each window
is widened to the left to whole DiT blocks (`ChunkedVocoder`'s `width_step`), so that its width is
one of a few, whose kernels a CPU builds once; the utterance's last frames are vocoded in one call.

Look-ahead (`vocoder_lookahead`, the Fast profile's). The DiT's window for a chunk computes one
block past it (its look-ahead), a provisional mel of the next block that is then thrown away.
Given to the vocoder as the right context of the chunk's last frames, it lets every chunk be
vocoded to its end at once: the first sound comes with the first chunk whole (240 ms after 24
codes) instead of its first frames only, and no frame waits for the next chunk. The frames at a
chunk's end then saw a right context that the next window recomputes slightly differently:
tests/model/test_token2wav.py and `omnidesk bench token2wav` measure the cost.

Growing chunks (`max_chunk_blocks`). Each window pays for its look-back and look-ahead blocks and
each vocoder call for its context frames, whatever the chunk's length: a longer chunk costs less
per block. So once the first sound is out, a later chunk may be as long as the sound made before
it (at least `chunk_blocks`, at most `max_chunk_blocks`): where speech is made about as fast as it
plays, its codes come in while that sound plays.

First chunk without look-ahead (`first_future_blocks=0`, with `vocoder_lookahead`). The first
window stops at the first chunk's end, so its sound needs one block of codes fewer (12 with a
one-block first chunk, against 24); its last frames are made and vocoded without the codes after
them, as an utterance's end is. Early in a reply each code waits for a Thinker token, so on a CPU
one block fewer is about 12 of the Thinker's tokens sooner. The same two tools measure its cost.

No threads here: `push` and `finish` compute on the caller's thread; a `cancel` event set from
another thread stops them between DiT evaluations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from model.errors import OmnideskError
from model.token2wav.bigvgan import BigVGAN, receptive_field_frames
from model.token2wav.sampler import REFERENCE, SamplerOptions
from model.token2wav.synthesizer import NoiseStream, Token2Wav
from model.voices import Voice

WARM_CODES = 100  # the dummy utterance's codes cycle through these


@dataclass(frozen=True)
class StreamOptions:
    """Chunk sizes in DiT blocks (12 codes, 24 mel frames, 240 ms each).
    vocoder_context_frames: mel frames either side of a vocoder chunk; None: the receptive field.
    fixed_windows: every DiT window padded to the largest one's shape (`window_codes`), so that on
    CUDA each window's ODE is one CUDA graph replay (`graph.WindowGraph`); the padding changes no
    real frame (`DiT.block_masks`) but costs work, up to twice the first window's on a CPU, so the plan
    sets it on CUDA only."""

    first_chunk_blocks: int = 2
    chunk_blocks: int = 3
    max_chunk_blocks: int | None = None  # later chunks grow up to this (None: all chunk_blocks)
    past_blocks: int = 2
    future_blocks: int = 1
    first_future_blocks: int | None = None  # the first chunk's own look-ahead (None: future_blocks)
    vocoder_context_frames: int | None = None
    sampler: SamplerOptions = field(default=REFERENCE)
    fixed_windows: bool = False
    vocoder_lookahead: bool = False  # vocode each chunk to its end against the DiT's provisional mel

    def future(self, first_chunk: bool) -> int:
        """Blocks of look-ahead of a chunk's window."""
        if first_chunk and self.first_future_blocks is not None:
            return self.first_future_blocks
        return self.future_blocks

    def first_sound_codes(self, block_codes: int) -> int:
        """Codes the first chunk's window needs: the first sound comes once they are in."""
        return (self.first_chunk_blocks + self.future(first_chunk=True)) * block_codes

    def blocks_from(self, first: int) -> int:
        """Blocks of the chunk that starts at block `first`. With `max_chunk_blocks`, a later chunk
        is as long as the sound made before it, from chunk_blocks up to max_chunk_blocks: a window's
        look-back and look-ahead then cost less per block, and where speech is made about as fast as
        it plays, the chunk's codes come in while the sound before it plays."""
        if first == 0:
            return self.first_chunk_blocks
        if self.max_chunk_blocks is None:
            return self.chunk_blocks
        return min(max(self.chunk_blocks, first), self.max_chunk_blocks)

    def window_codes(self, block_codes: int) -> int:
        """Codes of the largest DiT window: look-back, the largest chunk, look-ahead."""
        chunk = max(self.first_chunk_blocks, self.chunk_blocks, self.max_chunk_blocks or 0)
        return (self.past_blocks + chunk + self.future_blocks) * block_codes


@dataclass(frozen=True)
class MelChunk:
    """final: (mel_dim, frames) mel that no later code changes; ahead: (mel_dim, frames') the DiT
    window's provisional mel of the frames after it (empty at the end, or when not kept)."""

    final: torch.Tensor
    ahead: torch.Tensor

    @property
    def frames(self) -> int:
        return self.final.shape[1]


class ChunkedVocoder:
    """Final mel frames in, waveform out. push/finish return (samples,) float32 tensors.

    `width_step`: every call's window is widened to the left (over frames already vocoded, kept for
    this) to a multiple of this many frames, where the frames before it allow. A CPU builds kernels
    for each new window width (oneDNN's: 0.3 to 0.6 s per width for the released vocoder on one
    thread, more than vocoding 48 frames); whole DiT blocks make every width one of a few that recur
    from reply to reply, the last chunk's included. More left context changes no kept sample where
    the context is the receptive field, and brings the others closer to a whole run where it is less.
    """

    def __init__(self, vocoder: BigVGAN, context_frames: int, width_step: int = 1) -> None:
        self._vocoder = vocoder
        self._context = context_frames
        self._step = width_step
        self._hop = vocoder.cfg.hop
        self._mel = torch.empty(vocoder.cfg.mel_dim, 0)  # frames from self._first onwards
        self._first = 0  # absolute index of self._mel[:, 0]
        self._emitted = 0  # frames whose audio is out

    def push(self, mel: torch.Tensor, ahead: torch.Tensor | None = None) -> torch.Tensor:
        """mel: (mel_dim, frames) following the frames pushed before. With `ahead` (provisional mel of
        the frames after `mel`), all of `mel` is vocoded now, `ahead` standing in for what follows."""
        self._append(mel)
        end = self._first + self._mel.shape[1]
        if ahead is None:
            return self._emit(end - self._context)
        return self._emit(end, ahead[:, : self._context].float().cpu())

    def finish(self, mel: torch.Tensor | None = None) -> torch.Tensor:
        """The audio of everything pushed and of `mel`, the utterance's last frames, in one call."""
        if mel is not None:
            self._append(mel)
        return self._emit(self._first + self._mel.shape[1])

    def _append(self, mel: torch.Tensor) -> None:
        self._mel = torch.cat([self._mel, mel.float().cpu()], dim=1)

    def _emit(self, end: int, ahead: torch.Tensor | None = None) -> torch.Tensor:
        if end <= self._emitted:
            return torch.zeros(0)
        start = max(self._first, self._emitted - self._context)
        width = self._first + self._mel.shape[1] - start + (0 if ahead is None else ahead.shape[1])
        start = max(self._first, start - (-width) % self._step)
        weight = self._vocoder.conv_pre.weight
        window = self._mel[:, start - self._first :]
        if ahead is not None:
            window = torch.cat([window, ahead], dim=1)
        window = window.to(weight.device, weight.dtype)
        with torch.inference_mode():
            wave = self._vocoder(window.unsqueeze(0))[0].float().cpu()
        audio = wave[(self._emitted - start) * self._hop : (end - start) * self._hop]
        self._emitted = end
        keep_from = max(self._first, end - self._context - (self._step - 1))
        self._mel = self._mel[:, keep_from - self._first :]
        self._first = keep_from
        return audio


class MelStream:
    """Codes in, mel chunks out: `chunks` and `last_chunks` yield each MelChunk as it is made."""

    def __init__(
        self,
        t2w: Token2Wav,
        voice: Voice,
        seed: int | None,
        options: StreamOptions,
        cancel: threading.Event | None = None,
    ) -> None:
        self._t2w = t2w
        self._cancel = cancel
        self._features = t2w.voice_features(voice)
        self._options = options
        self._noise = NoiseStream(seed, t2w.dit.cfg.mel_dim)
        self._codes = torch.empty(0, dtype=torch.int64, device=t2w.device)
        self._next_block = 0  # first block not yet made

    def chunks(self, codes: torch.Tensor | list[int]) -> Iterator[MelChunk]:
        """Add `codes`; yield each chunk they complete as soon as it is made, so that a caller behind
        (codes come faster than the DiT samples) hands each to the vocoder at once instead of all of
        them at the end, in one wide call."""
        self._codes = torch.cat([self._codes, self._t2w.check_codes(codes)])
        return self._run(finished=False)

    def last_chunks(self) -> Iterator[MelChunk]:
        """The chunks of the rest of the mel, now that no more codes come."""
        if self._codes.numel() == 0:
            raise OmnideskError("no speech codes to turn into sound")
        return self._run(finished=True)

    def _run(self, finished: bool) -> Iterator[MelChunk]:
        opts, per_block = self._options, self._t2w.block_codes
        n_codes = self._codes.numel()
        total_blocks = -(-n_codes // per_block)
        while self._next_block < total_blocks:
            first = self._next_block
            last = first + opts.blocks_from(first)
            future = opts.future(first_chunk=first == 0)
            if not finished and (last + future) * per_block > n_codes:
                break
            final, ahead = self._chunk(first, min(last, total_blocks), future)
            self._next_block = last
            yield MelChunk(final, ahead)

    def _chunk(self, first: int, last: int, future: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mel of blocks [first, last) and the window's provisional mel of the `future` blocks after
        them: (mel_dim, frames)."""
        opts, per_block, repeats = self._options, self._t2w.block_codes, self._t2w.dit.cfg.repeats
        n_codes = self._codes.numel()
        start = max(0, first - opts.past_blocks) * per_block
        end = min((last + future) * per_block, n_codes)
        noise = self._noise.frames(start * repeats, end * repeats)
        pad_to = opts.window_codes(per_block) if opts.fixed_windows else 0
        mel = self._t2w.mel_window(
            self._codes[start:end], self._features, noise, start * repeats, opts.sampler, self._cancel, pad_to
        )
        keep_from = (first * per_block - start) * repeats
        keep_to = (min(last * per_block, n_codes) - start) * repeats
        return mel[keep_from:keep_to].T.float().cpu(), mel[keep_to:].T.float().cpu()


class StreamingSynthesizer:
    """Codes in, 24 kHz audio chunks out: push/finish return (samples,) float32 tensors."""

    def __init__(
        self,
        t2w: Token2Wav,
        voice: Voice,
        seed: int | None = None,
        options: StreamOptions | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        """With `cancel`, push/finish raise synthesizer.Cancelled soon after it is set."""
        options = options or StreamOptions()
        self._mel = MelStream(t2w, voice, seed, options, cancel)
        self._mel_dim = t2w.dit.cfg.mel_dim
        context = options.vocoder_context_frames
        if context is None:
            context = receptive_field_frames(t2w.vocoder.cfg)
        self._vocoder = ChunkedVocoder(t2w.vocoder, context, width_step=t2w.block_codes * t2w.dit.cfg.repeats)
        self._lookahead = options.vocoder_lookahead

    def push(self, codes: torch.Tensor | list[int]) -> torch.Tensor:
        """The audio that `codes` complete, each chunk vocoded on its own as the pipeline does."""
        return torch.cat([torch.zeros(0), *(self.vocode(chunk) for chunk in self.mel_chunks(codes))])

    def finish(self) -> torch.Tensor:
        return torch.cat([torch.zeros(0), *(self.vocode(c, last) for c, last in self.last_mel_chunks())])

    def mel_chunks(self, codes: torch.Tensor | list[int]) -> Iterator[MelChunk]:
        """The DiT's half of `push`: the mel chunks that `codes` complete, each as it is made
        (`MelStream.chunks`), each to go to `vocode` alone. On the DiT's thread."""
        return self._mel.chunks(codes)

    def last_mel_chunks(self) -> Iterator[tuple[MelChunk, bool]]:
        """The DiT's half of `finish`: the rest of the mel chunk by chunk, now that no more codes come,
        each with whether it is the last (to `vocode` with `last`, which vocodes all that is left: an
        empty last chunk where the codes made no more mel)."""
        held: MelChunk | None = None
        for chunk in self._mel.last_chunks():
            if held is not None:
                yield held, False
            held = chunk
        empty = torch.empty(self._mel_dim, 0)
        yield held if held is not None else MelChunk(empty, empty), True

    def vocode(self, mel: MelChunk, last: bool = False) -> torch.Tensor:
        """The vocoder's half: the audio of `mel` that is ready (all of it when `last`). On the
        vocoder's thread (one thread may do both halves)."""
        if last:
            return self._vocoder.finish(mel.final)
        if not mel.frames:
            return torch.zeros(0)
        # With look-ahead, a chunk is vocoded to its end against what its window made after it:
        # nothing, for a first chunk made without look-ahead (its end as an utterance's end).
        return self._vocoder.push(mel.final, mel.ahead if self._lookahead else None)


def warm_windows(t2w: Token2Wav, voice: Voice, options: StreamOptions) -> float:
    """Stream a short utterance of dummy codes once and drop its sound, so that the
    kernels a CPU builds for each new window width (oneDNN's, once per width: about 0.45 s for the
    vocoder's layers alone at the released size) are built now, not in the first reply: the first
    chunk's window and a later chunk's, pushed a block at a time as a reply pushes them. Returns the
    seconds it took."""
    started = time.perf_counter()
    per_block = t2w.block_codes
    blocks = options.first_chunk_blocks + options.chunk_blocks + options.future_blocks
    synthesizer = StreamingSynthesizer(t2w, voice, seed=0, options=options)
    for block in range(blocks):
        synthesizer.push([(block * per_block + i) % WARM_CODES for i in range(per_block)])
    synthesizer.finish()
    return time.perf_counter() - started
