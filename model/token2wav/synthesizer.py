"""Whole-utterance Token2Wav, equal to transformers' `Qwen2_5OmniToken2WavModel` for the same seed.

codes (n_codes,) at 50 codes/s -> mel (mel_dim, 2 n_codes) at 100 frames/s -> waveform
(480 n_codes,) at 24 kHz. The initial noise for seed S is what `torch.manual_seed(S)` followed
by the reference's `torch.randn([1, 2 n_codes, mel_dim])` gives, drawn on the CPU in float32:
`NoiseStream` draws the same numbers in pieces, frame by frame (a frame is 80 floats, a
multiple of the 16 that the CPU generator transforms at a time, so pieces join exactly).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import torch

from model.errors import OmnideskError
from model.files.bundle import Bundle
from model.token2wav import fused_snake
from model.token2wav.bigvgan import BigVGAN, BigVGANConfig
from model.token2wav.dit import DiT, DiTConfig
from model.token2wav.graph import WindowGraph, captured_window
from model.token2wav.int8_dit import int8_projections
from model.token2wav.sampler import REFERENCE, SamplerOptions, Velocity, guided_velocity, integrate
from model.token2wav.speaker_encoder import SpeakerEncoder
from model.token2wav.weights import load_token2wav
from model.voices import Voice

CODE_RATE = 50  # codes per second of speech


@dataclass(frozen=True)
class VoiceFeatures:
    """speaker: (2, enc_dim) encoder output for the voice's reference mel and for a zero mel (the
    unconditional row); cond: (enc_emb_dim,) the voice's speaker vector."""

    speaker: torch.Tensor
    cond: torch.Tensor


class NoiseStream:
    """The initial noise of one utterance, drawn on demand: frames(a, b) is (b - a, mel_dim)."""

    def __init__(self, seed: int | None, mel_dim: int) -> None:
        self._generator = torch.Generator()
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)
        self._noise = torch.empty(0, mel_dim)

    def frames(self, start: int, end: int) -> torch.Tensor:
        drawn, mel_dim = self._noise.shape
        if end > drawn:
            more = torch.randn([1, end - drawn, mel_dim], generator=self._generator)[0]
            self._noise = torch.cat([self._noise, more])
        return self._noise[start:end]


class Cancelled(Exception):
    """The synthesis was stopped from another thread."""


def _cancellable(velocity: Velocity, cancel: threading.Event) -> Velocity:
    def checked(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if cancel.is_set():
            raise Cancelled
        return velocity(t, x)

    return checked


class Token2Wav:
    """The DiT, its speaker encoder and the vocoder on one device and dtype."""

    def __init__(self, dit: DiT, speaker_encoder: SpeakerEncoder, vocoder: BigVGAN) -> None:
        self.dit, self.speaker_encoder, self.vocoder = dit, speaker_encoder, vocoder
        self._features: dict[str, VoiceFeatures] = {}
        self._windows: dict[tuple[int, SamplerOptions], WindowGraph | None] = {}  # see `mel_window`

    @classmethod
    def load(
        cls,
        bundle: Bundle,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        int8_dit: bool = False,
        fused_vocoder: bool = False,
    ) -> Token2Wav:
        """`int8_dit`: the DiT's block projections as int8 products (`int8_dit.int8_projections`);
        `fused_vocoder`: the vocoder's activations by the native kernel (`fused_snake`), built first, so
        that where it cannot be (NativeBuildError) no weights were loaded in vain."""
        kernel = fused_snake.load() if fused_vocoder else None
        config = bundle.config["token2wav_config"]
        dit_cfg = DiTConfig.from_dict(config.get("dit_config") or {})
        vocoder_cfg = BigVGANConfig.from_dict(config.get("bigvgan_config") or {})
        dit, speaker, vocoder = load_token2wav(bundle.file("token2wav"), dit_cfg, vocoder_cfg)
        dit = dit.to(device, dtype)
        if int8_dit:
            int8_projections(dit)
        vocoder = vocoder.to(device, dtype)
        vocoder.fuse_activations(kernel)
        return cls(dit, speaker.to(device, dtype), vocoder)

    @property
    def device(self) -> torch.device:
        return self.dit.proj_out.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.dit.proj_out.weight.dtype

    @property
    def graphs(self) -> bool:
        """Windows at a fixed shape (`mel_window`'s pad_to) replay CUDA graphs: on CUDA only."""
        return self.device.type == "cuda"

    def warm(self, window_codes: int, options: SamplerOptions) -> float:
        """Capture now the graph of the windows of `window_codes` codes that a stream with fixed windows
        replays (`StreamOptions.window_codes`), so that the first reply does not: capture synchronises
        the device while the other speech stages run. Returns the seconds it took; 0.0 where windows run
        eagerly (no CUDA) or the graph is already captured."""
        key = (window_codes * self.dit.cfg.repeats, options)
        if not self.graphs or key in self._windows:
            return 0.0
        started = time.perf_counter()
        self._window(*key)
        return time.perf_counter() - started

    @property
    def block_codes(self) -> int:
        """Codes per DiT attention block (12 codes = 24 mel frames = 240 ms)."""
        return self.dit.cfg.block_size // self.dit.cfg.repeats

    def voice_features(self, voice: Voice) -> VoiceFeatures:
        """Speaker encoder outputs for `voice`, computed on first use and kept."""
        if voice.name not in self._features:
            ref_mel = voice.ref_mel.to(self.device, self.dtype).unsqueeze(0)
            with torch.inference_mode():
                speaker = self.speaker_encoder(torch.cat([ref_mel, torch.zeros_like(ref_mel)]))
            self._features[voice.name] = VoiceFeatures(speaker, voice.cond.to(self.device, self.dtype))
        return self._features[voice.name]

    def check_codes(self, codes: torch.Tensor | list[int]) -> torch.Tensor:
        """codes as a (n_codes,) int64 tensor on the device, or an OmnideskError saying what is wrong."""
        codes = torch.as_tensor(codes)
        if codes.numel() == 0:
            codes = codes.to(torch.int64)
        if codes.ndim != 1 or codes.is_floating_point():
            raise OmnideskError(
                f"speech codes must be a 1-D integer sequence, got shape {tuple(codes.shape)}"
            )
        highest = self.dit.cfg.num_embeds
        bad = (codes < 0) | (codes > highest)
        if bool(bad.any()):
            raise OmnideskError(
                f"speech code {int(codes[bad][0])} is out of range: the DiT knows codes 0..{highest}"
            )
        limit = self.dit.cfg.max_position_embeddings // self.dit.cfg.repeats
        if codes.numel() > limit:
            raise OmnideskError(
                f"{codes.numel()} speech codes are too many: at most {limit} in one utterance"
            )
        return codes.to(self.device, torch.int64)

    def mel_window(
        self,
        codes: torch.Tensor,
        features: VoiceFeatures,
        noise: torch.Tensor,
        first_frame: int,
        options: SamplerOptions,
        cancel: threading.Event | None = None,
        pad_to: int = 0,
    ) -> torch.Tensor:
        """codes: (n_codes,) starting at absolute frame `first_frame`; noise: (2 n_codes, mel_dim)
        float32 -> mel (2 n_codes, mel_dim). Raises Cancelled between DiT evaluations once `cancel` is set.

        pad_to: run the DiT on a window of this many codes (a fixed shape), the codes after `codes`
        padding that the real frames never see (`DiT.block_masks`); on CUDA such a window's whole ODE is
        one CUDA graph (`graph.WindowGraph`), captured on first use."""
        n_codes, repeats = codes.numel(), self.dit.cfg.repeats
        padding = max(0, pad_to - n_codes)
        if padding:
            codes = torch.cat([codes, codes.new_zeros(padding)])
            noise = torch.cat([noise, noise.new_zeros(padding * repeats, noise.shape[1])])
        with torch.inference_mode():
            cond = self.dit.conditioning(codes, features.speaker, features.cond, first_frame, n_codes)
            window = self._window(codes.numel() * repeats, options) if pad_to and self.graphs else None
            if window is not None:
                mel = window(cond, noise.to(self.device, torch.float32))[: n_codes * repeats].clone()
                if cancel is not None and cancel.is_set():
                    raise Cancelled
                return mel
            velocity = guided_velocity(self.dit, cond, options.guidance)
            if cancel is not None:
                velocity = _cancellable(velocity, cancel)
            return integrate(velocity, noise.to(self.device, torch.float32), options)[: n_codes * repeats]

    def _window(self, frames: int, options: SamplerOptions) -> WindowGraph | None:
        """The captured window of `frames` frames for `options` (None: capture failed, run eagerly)."""
        key = (frames, options)
        if key not in self._windows:
            self._windows[key] = captured_window(self.dit, frames, options)
        return self._windows[key]

    def mel(
        self,
        codes: torch.Tensor | list[int],
        voice: Voice,
        seed: int | None,
        options: SamplerOptions = REFERENCE,
    ) -> torch.Tensor:
        """The whole utterance at once, as the reference: mel (mel_dim, 2 n_codes)."""
        codes = self.check_codes(codes)
        if codes.numel() == 0:
            raise OmnideskError("no speech codes to turn into sound")
        frames = codes.numel() * self.dit.cfg.repeats
        noise = NoiseStream(seed, self.dit.cfg.mel_dim).frames(0, frames)
        return self.mel_window(codes, self.voice_features(voice), noise, 0, options).T

    def vocode(self, mel: torch.Tensor) -> torch.Tensor:
        """mel: (mel_dim, frames) -> waveform (frames * 240,) float32 in [-1, 1] at 24 kHz."""
        with torch.inference_mode():
            return self.vocoder(mel.to(self.device, self.dtype).unsqueeze(0))[0].float()

    def synthesize(
        self,
        codes: torch.Tensor | list[int],
        voice: Voice,
        seed: int | None,
        options: SamplerOptions = REFERENCE,
    ) -> torch.Tensor:
        """Whole-utterance mode: waveform (480 n_codes,) at 24 kHz."""
        return self.vocode(self.mel(codes, voice, seed, options))
