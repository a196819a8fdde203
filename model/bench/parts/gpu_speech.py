"""The speech parts of `omnidesk bench gpu` (app/bench/gpu.py), random weights at the released shapes.

On `device`, in the precision the app's plan picks there (`placement.make_plan`: bfloat16 on Ampere
and newer, float16 on older cards):

1. Talker codes/s at the 3B and 7B layouts (the released 7B Talker's layout with each Thinker's
   width as its input width; the 3B Talker's own is not public): a 200-position prompt, then
   `--talker-steps` greedy steps, eagerly and with the decode step captured as CUDA graphs (CUDA
   only), and whether both made the same codes.
2. Token2Wav (the released DiT and BigVGAN shapes, the same for both sizes): streaming synthesis
   of `--codes` codes pushed one at a time in float32, float16 and bfloat16, with the Exact
   profile's sampler (RK4, 36 DiT evaluations per window) and, on CUDA, windows at one fixed shape,
   each one CUDA graph replay, as the plan runs it (and once eagerly, in the plan's precision): the
   first chunk's latency after the code that completes its window, and the real-time factor (wall
   time per second of speech).
3. Time to first audio of a streaming turn, run as `Conversation.turn` runs it (`TurnStages`: the
   Thinker, Talker and Token2Wav threads at once): a random `--size` Thinker GGUF on llama.cpp (its
   GPU build if that is installed, else the CPU, said in the output), the Talker and Token2Wav where
   the plan puts them; the system prompt decoded beforehand (as `Conversation.prepare` does when
   the model loads, and Token2Wav's window graph captured as it does, timed), the reply forced to
   `--tokens` text tokens x `--codes-per-token` codes, after an untimed warm-up turn. The first
   audio is broken down into prompt, first code, DiT window and vocoder.

Nothing is downloaded: every weight is random (PyTorch's default initialisation; the Thinker's as
`random_thinker` writes it); the outputs are noise, the work is the real work. Times are wall-clock,
`time.perf_counter`, after a device synchronisation.
"""

from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from model.bench.parts.measure import sync
from model.bench.parts.random_bundle import VOICE, VOICE_BOS, VOICE_MEL_FRAMES, talker_config
from model.bench.parts.random_thinker import SHAPES, ThinkerShape, random_thinker, special_tokens
from model.bench.parts.streaming import stream_one_by_one
from model.bench.parts.talker_run import SPEECH_IDS, bench_talker, run_talker, thinker_rows, thinker_states
from model.hardware import llama_backend
from model.pipeline.options import TurnOptions
from model.pipeline.stages import TurnStages
from model.placement import EXACT_STREAM, Plan, PlanChoice, talker_cache_positions
from model.prompt_layout import SPEECH_SYSTEM_PROMPT
from model.sampling import SamplingOptions
from model.talker import SpeechOptions, Talker
from model.talker.network import TalkerConfig, TalkerModel
from model.talker.quantize import quantize
from model.thinker import Thinker
from model.thinker_types import DEFAULT_CONTEXT, ThinkerOptions, TokenRun
from model.token2wav.bigvgan import BigVGAN, BigVGANConfig
from model.token2wav.dit import DiT, DiTConfig
from model.token2wav.speaker_encoder import SpeakerEncoder
from model.token2wav.synthesizer import CODE_RATE, Token2Wav
from model.voices import Voice

SEED = 0
PROMPT = 200  # Talker prompt positions
QUESTION = "What am I looking at? Tell me in a few words."
WARM_UP = (2, 30)  # text tokens and codes of the untimed first turn
CODEC_VOCAB = 8448
PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
APP_TALKER_POSITIONS = talker_cache_positions(DEFAULT_CONTEXT)  # the app's Talker cache
# 7B Q4_K_M, one GPU; a call (issue 28): its first audio within 500 ms, its prefill kept up (a 2 s chunk)
GOALS = {
    "first_audio_s": 0.4,
    "talker_codes_per_s": 200.0,
    "token2wav_rtf": 0.1,
    "call_first_audio_s": 0.5,
    "call_behind_s": 2.0,
}

# Toy shapes for `--size tiny`: a Thinker whose vocabulary holds the released special ids, and
# speech parts a few layers deep.
TINY_THINKER = ThinkerShape(
    "tiny", hidden=256, layers=2, heads=2, kv_heads=1, ffn=512, vocab=151936, tied=True
)
TINY_TALKER = TalkerConfig(
    embedding_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,
    vocab_size=CODEC_VOCAB,
    mrope_section=(4, 6, 6),
)
TINY_DIT = DiTConfig(
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=2,
    head_dim=16,
    emb_dim=32,
    enc_emb_dim=32,
    enc_dim=32,
    enc_channels=(32, 32, 32, 32, 96),
    enc_attention_channels=8,
    enc_se_channels=8,
    look_ahead_layers=(1,),
    look_backward_layers=(0, 3),
)
TINY_BIGVGAN = BigVGANConfig(
    upsample_initial_channel=64, resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3, 5),)
)


@dataclass(frozen=True)
class Shapes:
    """The shapes one run measures."""

    thinker: ThinkerShape
    talkers: dict[str, TalkerConfig]  # layout name -> Talker config
    dit: DiTConfig
    vocoder: BigVGANConfig

    @classmethod
    def of(cls, size: str) -> Shapes:
        if size == "tiny":
            return cls(TINY_THINKER, {"tiny": TINY_TALKER}, TINY_DIT, TINY_BIGVGAN)
        talkers = {
            name.upper(): TalkerConfig.from_dict(
                {**talker_config(name, SHAPES[name].hidden), "vocab_size": CODEC_VOCAB}
            )
            for name in ("3b", "7b")
        }
        return cls(SHAPES[size], talkers, DiTConfig(), BigVGANConfig())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The speech parts' options."""
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=("tiny", "3b", "7b"), default="3b", help="the turn's Thinker")
    parser.add_argument("--quant", default="Q4_K_M", help="the random Thinker's quantization")
    parser.add_argument("--talker-steps", type=int, default=200)
    parser.add_argument("--codes", type=int, default=500, help="Token2Wav's utterance (50 codes per second)")
    parser.add_argument("--tokens", type=int, default=60, help="the turn's reply, in text tokens")
    parser.add_argument("--codes-per-token", type=int, default=15)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "omnidesk-bench")
    parser.add_argument(
        "--call-seconds",
        type=float,
        default=20.0,
        help="the session's call before its question (default: 20)",
    )


def speech_choice(device: torch.device) -> PlanChoice:
    """The user's choice that puts speech on `device`."""
    return PlanChoice(speech_device="cpu" if device.type == "cpu" else "gpu")


def measure_speech(args: argparse.Namespace, device: torch.device, plan: Plan) -> dict[str, float]:
    """Parts 1 to 3; returns the figures the goals are held to."""
    shapes = Shapes.of(args.size)
    return {
        "talker_codes_per_s": _talkers(shapes, plan, device, args.talker_steps),
        "token2wav_rtf": _token2wav(shapes, plan, device, args.codes),
        "first_audio_s": _turn(shapes, plan, device, args),
    }


def report_goals(figures: dict[str, float], plan: Plan) -> None:
    """Each figure against its goal, met or not."""
    print("\ngoals (7B Q4_K_M on one GPU)      measured    goal")
    _goal("first audio after the input, s", figures["first_audio_s"], GOALS["first_audio_s"], below=True)
    _goal(
        "Talker codes/s (largest layout)",
        figures["talker_codes_per_s"],
        GOALS["talker_codes_per_s"],
        below=False,
    )
    _goal(
        f"Token2Wav RTF ({_name(plan.token2wav.dtype)})",
        figures["token2wav_rtf"],
        GOALS["token2wav_rtf"],
        below=True,
    )
    if "heard_s" in figures:  # the session's (app/bench/gpu.py): a spoken question, after a reload
        _goal("first audio heard in a session, s", figures["heard_s"], GOALS["first_audio_s"], below=True)
    if "call_first_audio_s" in figures:  # the session's call (app/bench/gpu.py)
        _goal(
            "first audio after a call's question, s",
            figures["call_first_audio_s"],
            GOALS["call_first_audio_s"],
            below=True,
        )
        _goal(
            "call's prefill behind real time, s", figures["call_behind_s"], GOALS["call_behind_s"], below=True
        )


# -- 1. the Talker ------------------------------------------------------------------------


def _talkers(shapes: Shapes, plan: Plan, device: torch.device, steps: int) -> float:
    """Prints each layout's codes/s; returns the largest layout's best rate."""
    print(
        f"\nTalker, {_name(plan.talker.dtype)}: prompt {PROMPT} positions, then {steps} greedy codes",
        flush=True,
    )
    best = float("nan")
    for layout, config in shapes.talkers.items():
        rows = thinker_rows(config.embedding_size, PROMPT + steps + 2)
        states = thinker_states(rows, PROMPT)
        model = _random_talker(config, device, plan.talker.dtype)
        rates = {}
        codes: dict[str, tuple[int, ...]] = {}
        for mode in ("eager", "CUDA graphs") if device.type == "cuda" else ("eager",):
            built = time.perf_counter()
            talker = bench_talker(model, rows, APP_TALKER_POSITIONS, compile=mode != "eager")
            ready = time.perf_counter() - built
            run_talker(talker, thinker_states(rows, 8)[:4], 2, device)  # kernels, allocator
            run = run_talker(talker, states, steps, device)
            rates[mode], codes[mode] = 1 / run.decode_s, run.code_ids
            print(
                f"  {layout} layout, {mode}: {rates[mode]:.1f} codes/s ({run.decode_s * 1e3:.2f} ms/code), "
                f"prefill {run.prefill_s * 1e3:.0f} ms"
                + (f", captured in {ready:.1f} s" if mode != "eager" else ""),
                flush=True,
            )
        if len(rates) > 1:
            same = sum(a == b for a, b in zip(*codes.values(), strict=True))
            speed_up = rates["CUDA graphs"] / rates["eager"]
            print(f"  {layout}: graphs {speed_up:.1f}x eager; codes agree {same}/{len(codes['eager'])}")
        best = max(rates.values())
        del model, talker
        _release(device)
    return best


def _random_talker(config: TalkerConfig, device: torch.device, dtype: torch.dtype) -> TalkerModel:
    torch.manual_seed(SEED)
    with torch.device(device):
        model = TalkerModel(config)
    return model.to(dtype).eval()


# -- 2. Token2Wav ---------------------------------------------------------------------------


def _token2wav(shapes: Shapes, plan: Plan, device: torch.device, n_codes: int) -> float:
    """Prints each precision's first chunk and real-time factor; returns the plan precision's RTF."""
    graphs = device.type == "cuda"
    seconds = n_codes / CODE_RATE
    print(
        f"\nToken2Wav, streaming {n_codes} codes ({seconds:.1f} s of speech) one at a time, "
        f"{EXACT_STREAM.sampler.evaluations} DiT evaluations per window"
        + (", each window one CUDA graph (windows at one shape)" if graphs else ""),
        flush=True,
    )
    generator = torch.Generator().manual_seed(SEED)
    codes = torch.randint(0, 8192, (n_codes,), generator=generator)
    voice = _voice(shapes.dit, generator)
    rtfs: dict[torch.dtype, float] = {}
    runs = [(name, dtype, graphs) for name, dtype in PRECISIONS.items()]
    if graphs:  # what the graphs save, in the plan's precision
        runs.append((f"{_name(plan.token2wav.dtype)}, eager", plan.token2wav.dtype, False))
    for name, dtype, fixed in runs:
        options = replace(EXACT_STREAM, fixed_windows=fixed)
        t2w = _random_token2wav(shapes, device, dtype)
        t2w.voice_features(voice)
        stream_one_by_one(t2w, voice, codes[: 4 * t2w.block_codes], options, SEED)  # kernels, capture
        first, total, _ = stream_one_by_one(t2w, voice, codes, options, SEED)
        rtfs.setdefault(dtype, total / seconds)
        print(
            f"  {name}: first chunk {first * 1e3:.0f} ms after its last code; RTF {total / seconds:.3f}",
            flush=True,
        )
        del t2w
        _release(device)
    return rtfs[plan.token2wav.dtype] if plan.token2wav.dtype in rtfs else rtfs[torch.float32]


def _random_token2wav(shapes: Shapes, device: torch.device, dtype: torch.dtype) -> Token2Wav:
    torch.manual_seed(SEED)
    with torch.device(device):
        dit, speaker, vocoder = (
            DiT(shapes.dit),
            SpeakerEncoder(shapes.dit.speaker_encoder),
            BigVGAN(shapes.vocoder),
        )
    return Token2Wav(dit.to(dtype).eval(), speaker.to(dtype).eval(), vocoder.to(dtype).eval())


def _voice(dit: DiTConfig, generator: torch.Generator) -> Voice:
    cond = torch.randn(dit.enc_emb_dim, generator=generator)
    ref_mel = torch.randn(VOICE_MEL_FRAMES, dit.mel_dim, generator=generator) - 5
    return Voice(name=VOICE, cond=cond, ref_mel=ref_mel, bos_token=VOICE_BOS)


# -- 3. a streaming turn ----------------------------------------------------------------------


def _turn(shapes: Shapes, plan: Plan, device: torch.device, args: argparse.Namespace) -> float:
    """Prints the turn's first audio and its parts; returns the first audio in seconds."""
    built = time.perf_counter()
    path = random_thinker(shapes.thinker, args.quant, args.cache, SEED)
    backend = llama_backend()
    options = plan.thinker_options(ThinkerOptions(n_ctx=2048))
    where = f"llama.cpp's {backend} build" if backend != "CPU" and options.n_gpu_layers != 0 else "the CPU"
    print(
        f"\nTurn: a random {shapes.thinker.name.upper()} {args.quant} Thinker on {where} (GGUF ready in "
        f"{time.perf_counter() - built:.0f} s), the Talker {plan.talker_label}"
        + (" with CUDA graphs" if plan.compile_talker else "")
        + f", Token2Wav {plan.token2wav.label}, {plan.profile.capitalize()} speech",
        flush=True,
    )
    thinker = Thinker(path, special_tokens(), options)
    talker_config = next(c for c in shapes.talkers.values() if c.embedding_size == shapes.thinker.hidden)
    model = _random_talker(talker_config, device, plan.talker.dtype)
    if plan.talker_weights == "iq4_nl":  # a llama.cpp file needs a bundle: torch's int4 stands in
        print("  (the Talker planned in llama.cpp runs here as torch's int4: this bench has no bundle)")
        quantize(model, "int4")
    elif plan.talker_weights != "float":
        quantize(model, plan.talker_weights)
    talker = Talker(
        model,
        SPEECH_IDS,
        thinker.input_embeddings,
        talker_cache_positions(thinker.n_ctx),
        plan.compile_talker,
    )
    token2wav = _random_token2wav(shapes, device, plan.token2wav.dtype)
    voice = _voice(shapes.dit, torch.Generator().manual_seed(SEED))
    system = thinker.tokenize(f"<|im_start|>system\n{SPEECH_SYSTEM_PROMPT}<|im_end|>\n", special=True)
    question = thinker.tokenize(
        f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n", special=True
    )

    def turn(tokens: int, codes: int) -> dict[str, float]:
        speech = SpeechOptions(voice=VOICE, max_codes=codes, min_codes=codes)
        forced = TurnOptions(
            max_tokens=tokens,
            min_tokens=tokens,
            sampling=SamplingOptions(seed=SEED),
            speech=speech,
            seed=SEED,
            stream=plan.stream,
        )
        return _timed_turn(thinker, talker, token2wav, voice, system, system + question, forced)

    stream = plan.stream
    capture_s = (
        token2wav.warm(stream.window_codes(token2wav.block_codes), stream.sampler)
        if stream.fixed_windows
        else 0
    )
    try:
        turn(*WARM_UP)
        marks = turn(args.tokens, args.tokens * args.codes_per_token)
    finally:
        thinker.close()
    first, text, code, mel = (marks[k] for k in ("first_audio", "first_text", "first_code", "first_mel"))
    codes_s = (args.tokens * args.codes_per_token - 1) / max(marks["talker_done"] - marks["first_code"], 1e-9)
    print(
        f"  {len(system) + len(question)}-token prompt ({len(system)} decoded before), reply forced to "
        f"{args.tokens} tokens x {args.codes_per_token} codes: first audio {first * 1e3:.0f} ms = prompt "
        f"{text * 1e3:.0f} + first code {(code - text) * 1e3:.0f} + DiT window {(mel - code) * 1e3:.0f} "
        f"+ vocoder {(first - mel) * 1e3:.0f}; Talker {codes_s:.0f} codes/s in the turn; "
        f"turn done at {marks['done']:.2f} s"
    )
    print(f"  Token2Wav's window graph captured at load in {capture_s * 1e3:.0f} ms (0: windows run eagerly)")
    return first


def _timed_turn(
    thinker: Thinker,
    talker: Talker,
    token2wav: Token2Wav,
    voice: Voice,
    system: list[int],
    prompt: list[int],
    options: TurnOptions,
) -> dict[str, float]:
    """One turn as `Conversation.prepare` then `Conversation.turn` run it; its marks (s from input)."""
    thinker.prefill([TokenRun(tuple(system))])
    talker.prime(thinker.states(0, len(system)))
    token2wav.voice_features(voice)
    parts = (talker, token2wav)
    run = TurnStages(
        thinker,
        prompt,
        [TokenRun(tuple(prompt))],
        options,
        voice,
        parts,
        time.perf_counter(),
        threading.Event(),
    )
    try:
        for _ in run.events():
            pass
    finally:
        run.stop()
    finished = run.finished
    if finished.reason not in ("end", "length") or len(finished.codes) != options.speech.max_codes:
        raise RuntimeError(
            f"the turn ended with {finished.reason} after {len(finished.codes)} codes {finished.error}"
        )
    return dict(finished.marks)


# -- helpers ------------------------------------------------------------------------------------


def _goal(what: str, measured: float, goal: float, below: bool) -> None:
    met = measured <= goal if below else measured >= goal
    sign = "<=" if below else ">="
    print(f"  {what:<32} {measured:>9.3f}   {sign} {goal:g}  {'met' if met else 'NOT met'}")


def _release(device: torch.device) -> None:
    sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return f"cuda ({properties.name}, {properties.total_memory / 2**30:.0f} GiB)"
    return device.type
