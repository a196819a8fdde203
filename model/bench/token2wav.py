"""`omnidesk bench token2wav`: our Token2Wav against transformers' at the released size, random weights.

The reference `Qwen2_5OmniToken2WavModel` is built from the package-default configs (DiT 334 M,
BigVGAN 115 M parameters) and ours loads the very same tensors through our checkpoint adapters. For
`--codes` codes (50 codes = 1 s of speech) it times: the reference's whole-utterance run
(`--reference-repeats` times), and our whole-utterance run and our streaming run in each speech
profile: Exact (float32, the reference's RK4 sampler, 36 evaluations, exact chunk joins) and Fast
(the plan's precision for this machine, with int8 DiT projections where the plan has them,
`int8_dit.py`; `placement.FAST_STREAM`: Euler in 5 steps, 5-block chunks vocoded against the DiT's
look-ahead; the vocoder's activations fused where the plan fuses them, `fused_snake.py`), Fast's
streaming without the int8 projections and without the fused activations where it has them, and with
three named changes
(`NAMED_STREAMS`: the samplers `sampler.EULER_3` and `sampler.UNGUIDED`, in no plan, and Settings'
Start speaking sooner, `placement.QUICK_START_STREAM`: the first chunk without look-ahead, whose
sound needs 12 codes instead of 24). Streaming gets the codes one at a time as fast as it takes
them; its first-chunk latency is the time from the push of the code that completes the first chunk's
window to the return of its audio. Real-time factor = wall time / seconds of speech. What Fast costs
is the waveform's signal-to-error ratio against Exact's (random weights: the figures bound the
numerics, not what an ear would hear of a trained model).

On a 2-core CPU the reference needs ~30 s per second of speech, so the default is 50 codes
(1 s) and one reference run, ~6 minutes in all; `--codes 500` gives the 10 s utterance.

Times are wall-clock, `time.perf_counter`, after a device synchronisation and one short untimed
warm-up run of each implementation. Peak memory is the
peak resident set above the level before each run (CPU) or the peak allocated by torch (CUDA).
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from model.audio_rates import OUTPUT_SAMPLE_RATE
from model.bench.parts.measure import DTYPES, peak_memory, sync
from model.bench.parts.streaming import stream_one_by_one
from model.hardware import probe
from model.placement import (
    EXACT_STREAM,
    FAST_STREAM,
    QUICK_START_STREAM,
    PlanChoice,
    estimated_needs,
    make_plan,
)
from model.sizing import SIZES
from model.token2wav import fused_snake
from model.token2wav.bigvgan import BigVGAN, BigVGANConfig
from model.token2wav.dit import DiT, DiTConfig
from model.token2wav.int8_dit import int8_projections
from model.token2wav.sampler import EULER_3, FAST, UNGUIDED
from model.token2wav.speaker_encoder import SpeakerEncoder
from model.token2wav.synthesizer import CODE_RATE, Token2Wav
from model.token2wav.weights import bigvgan_tensors, dit_tensors
from model.voices import Voice

REF_MEL_FRAMES = 300  # the bench voice's reference mel (3 s)
SAMPLES_PER_CODE = OUTPUT_SAMPLE_RATE // CODE_RATE  # 480
NO_AHEAD = "first chunk without look-ahead"
FLOAT_DIT = "DiT projections not int8"
TORCH_ACTIVATIONS = "vocoder's activations not fused"
NAMED_STREAMS = {  # Fast's streaming with one change each: two samplers in no plan, and Start speaking sooner
    "Euler in 3": replace(FAST_STREAM, sampler=EULER_3),
    "unguided": replace(FAST_STREAM, sampler=UNGUIDED),
    NO_AHEAD: QUICK_START_STREAM,
}
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


def _warm_up(
    reference: Any, exact: Token2Wav, fast: Token2Wav, voice: Voice, codes: torch.Tensor, device: torch.device
) -> None:
    """One short untimed run of each, so that one-time costs (allocator, kernels) stay out of the times,
    and each Fast stream once over the bench's own codes (`codes`): a CPU builds kernels once per window
    width, and the last chunk's width is the utterance's own, so without it the first stream timed paid
    for widths the later ones found built. Exact's streaming is not repeated (that would take a
    minute): its row includes building its kernels, about a second of its tens."""
    exact.synthesize(codes[:24], voice, SEED, FAST)
    fast.synthesize(codes[:24], voice, SEED, FAST)
    for stream in (FAST_STREAM, *NAMED_STREAMS.values()):
        stream_one_by_one(fast, voice, codes, stream, SEED)
    with torch.no_grad():
        reference.code2wav_dit_model.sample(
            voice.cond[None].to(device),
            voice.ref_mel[None].to(device),
            codes[None, :24].to(device),
            num_steps=2,
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnidesk bench token2wav", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--fast-dtype",
        choices=sorted(DTYPES),
        help="the Fast profile's dtype (default: the plan's for this machine; Exact is float32)",
    )
    parser.add_argument("--codes", type=int, default=50, help="utterance length in codes (50 per second)")
    parser.add_argument("--reference-repeats", type=int, default=1, help="reference runs (0: skip it)")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    plan_dtype, int8_dit, fused_vocoder = _fast_plan(device)
    fast_dtype = DTYPES[args.fast_dtype] if args.fast_dtype else plan_dtype
    seconds_of_speech = args.codes / CODE_RATE
    print(
        f"token2wav bench: {args.codes} codes = {seconds_of_speech:.1f} s of speech, {device}, "
        f"{torch.get_num_threads()} threads; Exact in float32, Fast in {str(fast_dtype)[6:]}"
        + (", its DiT's projections int8" if int8_dit else "")
        + (", its vocoder's activations fused" if fused_vocoder else "")
    )
    if args.codes < 500:
        print("(shorter than the issue's 10 s / 500 codes, to keep the run near 6 minutes; pass --codes 500)")

    reference, exact = _build(device, torch.float32)
    fast = Token2Wav(
        copy.deepcopy(exact.dit).to(device, fast_dtype),
        copy.deepcopy(exact.speaker_encoder).to(device, fast_dtype),
        copy.deepcopy(exact.vocoder).to(device, fast_dtype),
    )
    variants = {}  # Fast's streaming with another Token2Wav: without one of the plan's faster paths
    torch_vocoder = fast.vocoder
    if fused_vocoder:
        fast.vocoder = copy.deepcopy(torch_vocoder)
        fast.vocoder.fuse_activations(fused_snake.load())
    if int8_dit:
        variants[FLOAT_DIT] = fast
        fast = Token2Wav(int8_projections(copy.deepcopy(fast.dit)), fast.speaker_encoder, fast.vocoder)
    if fused_vocoder:
        variants[TORCH_ACTIVATIONS] = Token2Wav(fast.dit, fast.speaker_encoder, torch_vocoder)
    generator = torch.Generator().manual_seed(SEED)
    codes = torch.randint(0, 8192, (args.codes,), generator=generator)
    cond = torch.randn(DiTConfig().enc_emb_dim, generator=generator)
    ref_mel = torch.randn(REF_MEL_FRAMES, DiTConfig().mel_dim, generator=generator) - 5
    voice = Voice(name="bench", cond=cond, ref_mel=ref_mel, bos_token=0)
    rows: list[tuple[str, float, float, int]] = []  # name, seconds, first chunk, peak bytes

    for t2w in (exact, fast, *variants.values()):
        t2w.voice_features(voice)  # once per voice, as in use
    _warm_up(reference, exact, fast, voice, codes, device)
    audio: dict[str, torch.Tensor] = {}
    for profile, t2w, stream in (("Exact", exact, EXACT_STREAM), ("Fast", fast, FAST_STREAM)):
        sampler = stream.sampler
        whole: list[torch.Tensor] = []
        secs, peak = _timed(
            device,
            lambda t=t2w, s=sampler, out=whole: out.append(t.synthesize(codes, voice, SEED, s)),  # type: ignore[misc]
        )
        audio[f"{profile} whole"] = whole[0]
        rows.append((f"{profile}, whole utterance ({sampler.evaluations} evals)", secs, float("nan"), peak))
        with peak_memory(device) as peaks:
            first, secs, audio[profile] = stream_one_by_one(t2w, voice, codes, stream, SEED)
        rows.append((f"{profile}, streaming ({sampler.evaluations} evals)", secs, first, peaks[0]))
        print(f"  done: {rows[-2][0]}; {rows[-1][0]}", flush=True)
    streams = [(name, fast, stream) for name, stream in NAMED_STREAMS.items()]  # named options, in no plan
    streams += [(name, t2w, FAST_STREAM) for name, t2w in variants.items()]
    for name, t2w, stream in streams:
        with peak_memory(device) as peaks:
            first, secs, audio[f"Fast, {name}"] = stream_one_by_one(t2w, voice, codes, stream, SEED)
        rows.append((f"Fast, {name} ({stream.sampler.evaluations} evals)", secs, first, peaks[0]))

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

    exact_stream = rows[1][1]
    header = f"{'run':<44} {'wall s':>8} {'RTF':>7} {'vs Exact':>9} {'vs ref':>7} {'1st chunk s':>11}"
    print(f"{header} {'peak MB':>8}")
    for name, secs, first_chunk, peak in rows:
        print(
            f"{name:<44} {secs:8.2f} {secs / seconds_of_speech:7.2f} {exact_stream / secs:8.2f}x "
            f"{ref_seconds / secs:6.2f}x {first_chunk:11.3f} {peak / 2**20:8.0f}"
        )
    print(
        "RTF: wall time per second of speech; vs Exact: Exact streaming's time / this run's; vs ref: the\n"
        "reference's whole-utterance time / this run's."
    )
    pairs = [
        ("Fast streaming vs Exact streaming", audio["Fast"], audio["Exact"]),
        ("Fast whole utterance vs Exact whole utterance", audio["Fast whole"], audio["Exact whole"]),
        ("Exact streaming vs Exact whole utterance", audio["Exact"], audio["Exact whole"]),
    ]
    for name, _, _ in streams:
        named = audio[f"Fast, {name}"]
        pairs += [
            (f"Fast, {name} vs Exact streaming", named, audio["Exact"]),
            (f"Fast, {name} vs Fast streaming", named, audio["Fast"]),
        ]
    for what, ours, base in pairs:
        print(f"{what}: waveform signal-to-error {_snr_db(ours, base):.1f} dB")
    head = FAST_STREAM.first_chunk_blocks * fast.block_codes * SAMPLES_PER_CODE
    no_ahead, fast_audio = audio[f"Fast, {NO_AHEAD}"][:head], audio["Fast"][:head]
    print(
        "Fast, first chunk without look-ahead vs Fast streaming, over the first chunk alone: waveform "
        f"signal-to-error {_snr_db(no_ahead, fast_audio):.1f} dB"
    )
    samplers = {"Fast": FAST}  # and each named stream's own sampler (the others' whole mel is Fast's)
    samplers |= {f"Fast, {n}": s.sampler for n, s in NAMED_STREAMS.items() if s.sampler != FAST}
    models = {name: fast for name in samplers}
    if FLOAT_DIT in variants:  # the other variant's mel is Fast's: only its vocoder differs
        models[f"Fast, {FLOAT_DIT}"] = variants[FLOAT_DIT]
        samplers[f"Fast, {FLOAT_DIT}"] = FAST
    exact_mel = exact.mel(codes, voice, SEED).float()
    for name, sampler in samplers.items():
        distance = (models[name].mel(codes, voice, SEED, sampler).float() - exact_mel).abs().mean().item()
        print(
            f"{name} whole-utterance mel vs Exact's: L1 {distance:.4f} "
            f"(mean |mel| {exact_mel.abs().mean().item():.3f})"
        )
    return 0


def _fast_plan(device: torch.device) -> tuple[torch.dtype, bool, bool]:
    """The precision the plan gives Token2Wav in the Fast profile on this machine, whether its DiT's
    projections are int8, and whether its vocoder's activations are fused."""
    plan = make_plan(probe(), estimated_needs(SIZES["3b"], "Q4_K_M"), PlanChoice(quality="fast"))
    if device.type != plan.token2wav.device:
        return torch.float16, False, False
    return plan.token2wav.dtype, plan.int8_dit, plan.fused_vocoder


def _snr_db(ours: torch.Tensor, base: torch.Tensor) -> float:
    n = min(len(ours), len(base))
    error = ours[:n].float() - base[:n].float()
    return 10 * torch.log10(base[:n].float().pow(2).mean() / error.pow(2).mean().clamp(min=1e-30)).item()
