"""`omnidesk bench token2wav`: our Token2Wav against transformers' at the released size, random weights.

The reference `Qwen2_5OmniToken2WavModel` is built from the package-default configs (DiT 334 M,
BigVGAN 115 M parameters) and ours loads the very same tensors through our checkpoint adapters.
For `--codes` codes (50 codes = 1 s of speech) it times: the reference's whole-utterance run
(`--reference-repeats` times), our whole-utterance run and our streaming run, each with the
reference sampler (RK4, 36 evaluations) and the fast one (Euler, 9). Streaming gets the codes
one at a time as fast as it takes them; its first-chunk latency is the time from the push of the
code that completes the first chunk's window to the return of its audio. Real-time factor =
wall time / seconds of speech.

On a 2-core CPU the reference needs ~30 s per second of speech, so the default is 50 codes
(1 s) and one reference run, ~6 minutes in all; `--codes 500` gives the 10 s utterance.

Times are wall-clock, `time.perf_counter`, after a device synchronisation and one short untimed
warm-up run of each implementation. Peak memory is the
peak resident set above the level before each run (CPU) or the peak allocated by torch (CUDA).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from model.bench.parts.measure import DTYPES, peak_memory, sync
from model.bench.parts.streaming import stream_one_by_one
from model.token2wav.bigvgan import BigVGAN, BigVGANConfig
from model.token2wav.dit import DiT, DiTConfig
from model.token2wav.sampler import FAST, REFERENCE
from model.token2wav.speaker_encoder import SpeakerEncoder
from model.token2wav.streaming import StreamOptions
from model.token2wav.synthesizer import CODE_RATE, Token2Wav
from model.token2wav.weights import bigvgan_tensors, dit_tensors
from model.voices import Voice

REF_MEL_FRAMES = 300  # the bench voice's reference mel (3 s)
SEED = 0


def _timed(device: torch.device, run: Callable[[], object]) -> tuple[float, int]:
    """(seconds, peak bytes) of one call."""
    with peak_memory(device) as peak:
        sync(device)
        start = time.perf_counter()
        run()
        sync(device)
        seconds = time.perf_counter() - start
    return seconds, peak[0]


def _build(device: torch.device, dtype: torch.dtype) -> tuple[torch.nn.Module, Token2Wav]:
    from transformers import Qwen2_5OmniToken2WavConfig
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniToken2WavModel

    torch.manual_seed(SEED)
    reference = Qwen2_5OmniToken2WavModel(Qwen2_5OmniToken2WavConfig()).eval().to(device)
    dit_cfg, vocoder_cfg = DiTConfig(), BigVGANConfig()
    dit_state, speaker_state = dit_tensors(dict(reference.code2wav_dit_model.state_dict()), dit_cfg)
    dit, speaker, vocoder = DiT(dit_cfg), SpeakerEncoder(dit_cfg.speaker_encoder), BigVGAN(vocoder_cfg)
    dit.load_state_dict(dit_state)
    speaker.load_state_dict(speaker_state)
    vocoder.load_state_dict(bigvgan_tensors(dict(reference.code2wav_bigvgan_model.state_dict())))
    nets = (dit.eval().to(device, dtype), speaker.eval().to(device, dtype), vocoder.eval().to(device, dtype))
    return reference, Token2Wav(*nets)


def _warm_up(reference: Any, t2w: Token2Wav, voice: Voice, codes: torch.Tensor, device: torch.device) -> None:
    """One short untimed run of each, so that one-time costs (allocator, kernels) stay out of the times."""
    t2w.synthesize(codes, voice, SEED, FAST)
    with torch.no_grad():
        reference.code2wav_dit_model.sample(
            voice.cond[None].to(device), voice.ref_mel[None].to(device), codes[None].to(device), num_steps=2
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnidesk bench token2wav", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default="float32", help="our dtype (the reference: float32)"
    )
    parser.add_argument("--codes", type=int, default=50, help="utterance length in codes (50 per second)")
    parser.add_argument("--reference-repeats", type=int, default=1, help="reference runs (0: skip it)")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    seconds_of_speech = args.codes / CODE_RATE
    print(
        f"token2wav bench: {args.codes} codes = {seconds_of_speech:.1f} s of speech, {device}, "
        f"ours in {args.dtype}"
    )
    if args.codes < 500:
        print("(shorter than the issue's 10 s / 500 codes, to keep the run near 6 minutes; pass --codes 500)")

    reference, t2w = _build(device, dtype)
    generator = torch.Generator().manual_seed(SEED)
    codes = torch.randint(0, 8192, (args.codes,), generator=generator)
    cond = torch.randn(DiTConfig().enc_emb_dim, generator=generator)
    ref_mel = torch.randn(REF_MEL_FRAMES, DiTConfig().mel_dim, generator=generator) - 5
    voice = Voice(name="bench", cond=cond, ref_mel=ref_mel, bos_token=0)
    rows: list[tuple[str, float, float, int]] = []  # name, seconds, first chunk, peak bytes

    t2w.voice_features(voice)  # once per voice, as in use
    _warm_up(reference, t2w, voice, codes[:24], device)
    for name, sampler in (("reference sampler", REFERENCE), ("fast sampler", FAST)):
        secs, peak = _timed(device, lambda s=sampler: t2w.synthesize(codes, voice, SEED, s))  # type: ignore[misc]
        rows.append(
            (f"ours, whole utterance, {name} ({sampler.evaluations} evals)", secs, float("nan"), peak)
        )
        with peak_memory(device) as peaks:
            first, secs = stream_one_by_one(t2w, voice, codes, StreamOptions(sampler=sampler), SEED)
        rows.append((f"ours, streaming, {name} ({sampler.evaluations} evals)", secs, first, peaks[0]))
        print(f"  done: {rows[-2][0]}; {rows[-1][0]}", flush=True)

    ref_seconds = float("nan")
    if args.reference_repeats > 0:
        times = []
        ref_codes, ref_cond, ref_ref = codes[None].to(device), cond[None].to(device), ref_mel[None].to(device)
        for _ in range(args.reference_repeats):
            torch.manual_seed(SEED)
            with torch.no_grad():
                secs, peak = _timed(device, lambda: reference(ref_codes, ref_cond, ref_ref))
            times.append(secs)
        ref_seconds = min(times)
        rows.append(
            (f"transformers, whole utterance (best of {len(times)})", ref_seconds, float("nan"), peak)
        )

    print(f"{'run':<58} {'wall s':>8} {'RTF':>7} {'vs ref':>7} {'1st chunk s':>11} {'peak MB':>8}")
    for name, secs, first_chunk, peak in rows:
        print(
            f"{name:<58} {secs:8.2f} {secs / seconds_of_speech:7.2f} {ref_seconds / secs:6.2f}x "
            f"{first_chunk:11.3f} {peak / 2**20:8.0f}"
        )
    print("RTF: wall time per second of speech; vs ref: the reference's whole-utterance time / this run's.")
    return 0
