"""Qwen2.5-Omni's audio tower in plain PyTorch: log-mel frames -> audio embeddings for the Thinker.

The mel is cut into blocks of `2 * n_window` frames (2 s). Each block is encoded on its own, as in the
reference: conv1 (k3) + GELU, conv2 (k3, stride 2) + GELU, its own sinusoidal positions 0.., the
transformer layers with attention inside the block only, then average pooling of frame pairs,
`ln_post` and `proj`. One embedding per 4 mel frames (40 ms): a full block gives `n_window // 2` of them.

Because blocks never see each other, `StreamingAudioEncoder` encodes each block as soon as its mel
frames have arrived ("prefill while listening"); `AudioEncoder.encode` runs the same per-block
computation, so both give bitwise equal embeddings. The mel itself is not final until release (its
floor is 8 below the loudest value of the whole recording): `ListeningEncoder` takes samples and
re-encodes at release the few blocks whose features changed, so it too is exact.

Checkpoint quirks are handled at load time only (`audio_encoder_from_file`): the `thinker.audio_tower.`
prefix is stripped, and `audio_bos_eos_token.weight`, which the reference defines but never uses in the
forward pass (the Thinker embeds `<|audio_bos|>`/`<|audio_eos|>` as text), is dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from model.audio_features import HOP_LENGTH, N_FFT, RELEASED_MAX_SAMPLES, log_mel
from model.errors import ModelFileError
from model.torch_threads import intra_op_threads

CHECKPOINT_PREFIX = "thinker.audio_tower."
UNUSED_TENSORS = ("audio_bos_eos_token.weight",)
FRAMES_PER_TOKEN = 4  # mel frames (10 ms) per output embedding: conv2 stride 2, then pairs averaged


@dataclass(frozen=True)
class AudioEncoderConfig:
    """The checkpoint's `thinker_config.audio_config` (defaults: Qwen2.5-Omni's real size)."""

    num_mel_bins: int = 128
    d_model: int = 1280
    encoder_layers: int = 32
    encoder_attention_heads: int = 20
    encoder_ffn_dim: int = 5120
    max_source_positions: int = 1500
    n_window: int = 100  # half a block, in mel frames
    output_dim: int = 3584

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> AudioEncoderConfig:
        names = cls.__dataclass_fields__.keys()
        result = cls(**{k: config[k] for k in names if k in config})
        if result.n_window % 2:
            raise ValueError(f"n_window {result.n_window} is odd: pooled pairs would straddle blocks")
        return result

    @property
    def block_frames(self) -> int:
        """Mel frames per block (200: 2 s)."""
        return 2 * self.n_window

    @property
    def head_dim(self) -> int:
        return self.d_model // self.encoder_attention_heads


def audio_token_count(mel_frames: int) -> int:
    """Embeddings the reference makes from `mel_frames` frames (its `_get_feat_extract_output_lengths`)."""
    after_conv = (mel_frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


class AudioEncoder(nn.Module):
    positions: torch.Tensor  # (max_source_positions, d_model) sinusoids, not in the checkpoint
    threads: int | None = None  # torch's CPU threads while it encodes (None: as they are)

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.conv1 = nn.Conv1d(config.num_mel_bins, d, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positions", sinusoids(config.max_source_positions, d), persistent=False)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.ln_post = nn.LayerNorm(d)
        self.proj = nn.Linear(d, config.output_dim)

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (n_mels, n_frames) -> embeddings (audio_token_count(n_frames), output_dim), block by block."""
        if mel.shape[1] == 0:
            return self._empty()
        return torch.cat([self.encode_block(block) for block in mel.split(self.config.block_frames, dim=1)])

    @torch.inference_mode()
    def encode_block(self, mel: torch.Tensor) -> torch.Tensor:
        """One block, mel (n_mels, n <= block_frames) -> (audio_token_count(n), output_dim)."""
        with intra_op_threads(self.threads):
            return self._encode_block(mel)

    def _encode_block(self, mel: torch.Tensor) -> torch.Tensor:
        weight = self.conv1.weight
        x = mel.to(weight.device, weight.dtype)[None]
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))[0].T  # (frames after conv, d_model)
        x = x + self.positions[: x.shape[0]].to(x.dtype)
        for layer in self.layers:
            x = layer(x)
        pairs = x.shape[0] // 2
        x = (x[0 : 2 * pairs : 2] + x[1 : 2 * pairs : 2]) / 2
        return self.proj(self.ln_post(x))

    def _empty(self) -> torch.Tensor:
        return self.proj.weight.new_zeros(0, self.config.output_dim)


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer, bidirectional attention over one block's frames."""

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__()
        d = config.d_model
        self.heads = config.encoder_attention_heads
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (frames, d_model) -> (frames, d_model)."""
        x = x + self._attention(self.self_attn_layer_norm(x))
        x = x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        if x.dtype == torch.float16:  # as the reference: keep float16 activations finite
            limit = torch.finfo(torch.float16).max - 1000
            x = x.clamp(-limit, limit)
        return x

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        """x (frames, d_model) -> (frames, d_model); 4-D (1, heads, frames, head_dim) as the reference, so
        the same fused CPU kernel runs."""
        frames = x.shape[0]
        q, k, v = (
            p(x).view(1, frames, self.heads, -1).transpose(1, 2)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = F.scaled_dot_product_attention(q, k, v)  # scale head_dim ** -0.5
        return self.out_proj(out.transpose(1, 2).reshape(frames, -1))


def sinusoids(length: int, channels: int, max_timescale: float = 10_000.0) -> torch.Tensor:
    """Whisper's sinusoidal positions (length, channels): sines then cosines, float32 as the reference."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2).float())
    scaled = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


class StreamingAudioEncoder:
    """Encodes mel frames as they arrive, one completed block at a time ("prefill while listening").

    Not thread-safe: one owner (the worker thread) calls `push` and `finish`. `push` returns the embeddings
    of the blocks completed by its frames; `finish` encodes the last partial block. The concatenation of
    everything returned equals `encoder.encode(whole_mel)` exactly.
    """

    def __init__(self, encoder: AudioEncoder) -> None:
        self._encoder = encoder
        self._pending: list[torch.Tensor] = []  # mel pieces (n_mels, k) of the block being filled
        self._pending_frames = 0
        self.frames = 0  # mel frames received so far

    def push(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (n_mels, n) -> embeddings (tokens, output_dim) of the blocks these frames completed (0+)."""
        size = self._encoder.config.block_frames
        self.frames += mel.shape[1]
        done = []
        while mel.shape[1]:
            take = min(size - self._pending_frames, mel.shape[1])
            self._pending.append(mel[:, :take])
            self._pending_frames += take
            mel = mel[:, take:]
            if self._pending_frames == size:
                done.append(self._encoder.encode_block(self._take_pending()))
        return torch.cat(done) if done else self._encoder._empty()

    def finish(self) -> torch.Tensor:
        """Embeddings (tokens, output_dim) of the last partial block; the stream is then empty."""
        if not self._pending_frames:
            return self._encoder._empty()
        return self._encoder.encode_block(self._take_pending())

    def _take_pending(self) -> torch.Tensor:
        block = torch.cat(self._pending, dim=1)
        self._pending, self._pending_frames = [], 0
        return block


class ListeningEncoder:
    """Prefill while listening, from samples: exact even though the mel's floor depends on the loudest frame.

    The reference's features floor every value at (loudest value of the whole recording) - 8, which is
    known only at release. While listening, each completed block is featurised with the loudest value so
    far and encoded at once; at release the whole recording's features are computed and any block whose
    features changed (the peak rose and the block had values below the new floor: typically the quiet
    start) is encoded again. The result is bitwise `encoder.encode(log_mel(recording, max_samples))`.
    Not thread-safe: one owner (the worker thread) calls `push` and `finish`.
    """

    def __init__(self, encoder: AudioEncoder, max_samples: int = RELEASED_MAX_SAMPLES) -> None:
        """`max_samples`: how much of the recording is heard (the bundle's `recording_limit`)."""
        self._encoder = encoder
        self._max_samples = max_samples
        self._pieces: list[np.ndarray] = []  # the recording so far (16 kHz), joined when a block completes
        self._samples = 0
        self._blocks: list[tuple[torch.Tensor, torch.Tensor]] = []  # (mel used, embeddings) per early block
        self.reencoded = 0  # blocks encoded again at release
        self.kept_blocks = 0  # leading early blocks whose embeddings `finish` kept as they were

    @property
    def blocks_encoded(self) -> int:
        """Blocks encoded so far while listening."""
        return len(self._blocks)

    @property
    def frames_per_block(self) -> int:
        """Mel frames of one block (2 s)."""
        return self._encoder.config.block_frames

    @property
    def tokens_per_block(self) -> int:
        """Embeddings of one block."""
        return audio_token_count(self._encoder.config.block_frames)

    @property
    def frames_encoded(self) -> int:
        """Mel frames of the blocks encoded so far while listening."""
        return len(self._blocks) * self._encoder.config.block_frames

    def push(self, samples: np.ndarray) -> None:
        """Append samples (n,) at INPUT_SAMPLE_RATE; encodes every block whose frames are now complete."""
        self._pieces.append(np.asarray(samples, np.float32))
        self._samples += len(samples)
        block = self._encoder.config.block_frames
        while True:
            end = (
                len(self._blocks) + 1
            ) * block * HOP_LENGTH + N_FFT // 2  # the block's last window is whole
            if end > min(self._samples, self._max_samples):
                return
            start = len(self._blocks) * block
            mel = log_mel(self._recording()[:end], max_samples=self._max_samples)[:, start : start + block]
            self._blocks.append((mel, self._encoder.encode_block(mel)))

    def finish(self, recording: np.ndarray | None = None) -> torch.Tensor:
        """Embeddings (audio_token_count(frames), output_dim) of the whole recording: the samples
        pushed, or `recording` (n,) where the one sent differs from them (voice activity sends the
        utterance without its trailing silence); an early block is kept only where its features are
        unchanged in it, so the result is exact either way."""
        whole = self._recording() if recording is None else np.asarray(recording, np.float32)
        mel = log_mel(whole, max_samples=self._max_samples)  # OmnideskError if empty
        out = []
        for b, block in enumerate(mel.split(self._encoder.config.block_frames, dim=1)):
            if b < len(self._blocks) and torch.equal(self._blocks[b][0], block):
                out.append(self._blocks[b][1])
                self.kept_blocks += 1 if self.kept_blocks == b else 0
            else:
                self.reencoded += 1 if b < len(self._blocks) else 0
                out.append(self._encoder.encode_block(block))
        return torch.cat(out)

    def finish_as_heard(self) -> torch.Tensor:
        """Embeddings of all the samples pushed, the early blocks as they were encoded (each featurised
        with the loudest value heard by then: what a live stream can know), the rest from the whole
        recording's features. Equals `finish()` bitwise unless the peak rose past an early block's
        quietest values; a live call takes this, so that its cached blocks stay (model/pipeline/call.py)."""
        mel = log_mel(self.recording, max_samples=self._max_samples)  # OmnideskError if empty
        rest = mel[:, self.frames_encoded :]
        out = [embeddings for _, embeddings in self._blocks]
        if rest.shape[1]:
            out += [self._encoder.encode_block(b) for b in rest.split(self._encoder.config.block_frames, 1)]
        return torch.cat(out) if out else self._encoder._empty()

    @property
    def recording(self) -> np.ndarray:
        """All the samples pushed so far (n,) float32 at INPUT_SAMPLE_RATE."""
        return self._recording()

    def embeddings_so_far(self) -> torch.Tensor:
        """The early blocks' embeddings (blocks_encoded * n_window // 2, output_dim), as encoded while
        listening (a block may still be encoded again at release, see `finish`)."""
        if not self._blocks:
            return self._encoder._empty()
        return torch.cat([embeddings for _, embeddings in self._blocks])

    def _recording(self) -> np.ndarray:
        """All samples so far (n,), joined into one piece."""
        if len(self._pieces) != 1:
            self._pieces = [np.concatenate(self._pieces) if self._pieces else np.zeros(0, np.float32)]
        return self._pieces[0]


def audio_encoder_from_file(
    path: Path, config: dict[str, Any], dtype: torch.dtype = torch.float32
) -> AudioEncoder:
    """Load `audio_encoder.safetensors` (checkpoint names) with its `audio_config` dict."""
    encoder_config = AudioEncoderConfig.from_dict(config)
    try:
        tensors = load_file(str(path))
    except (OSError, RuntimeError, SafetensorError) as exc:
        raise ModelFileError(
            path, f"unreadable audio encoder weights ({exc})", "Convert the model again"
        ) from None
    try:
        return audio_encoder_from_tensors(tensors, encoder_config).to(dtype)
    except ValueError as exc:
        raise ModelFileError(path, str(exc), "Convert the model again") from None


def audio_encoder_from_tensors(tensors: dict[str, torch.Tensor], config: AudioEncoderConfig) -> AudioEncoder:
    """An encoder that shares `tensors` (checkpoint names, with or without `thinker.audio_tower.`)."""
    state = {
        _module_name(name): tensor
        for name, tensor in tensors.items()
        if name.removeprefix(CHECKPOINT_PREFIX) not in UNUSED_TENSORS
    }
    with torch.device("meta"):
        encoder = AudioEncoder(config)
    missing, unexpected = encoder.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(
            f"audio encoder tensors do not match its config (missing {missing}, unexpected {unexpected})"
        )
    encoder.positions = sinusoids(config.max_source_positions, config.d_model).to(encoder.conv1.weight.device)
    return encoder.eval()


def _module_name(name: str) -> str:
    """Checkpoint name -> our module's: `layers.N.self_attn.q_proj` lives at `layers.N.q_proj` here."""
    return name.removeprefix(CHECKPOINT_PREFIX).replace(".self_attn.", ".")
