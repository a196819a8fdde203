"""`omnidesk bench pipeline`: time to first audio of a spoken turn, in the app's plan and in Exact.

One spoken turn, its reply forced to N text tokens for each N of `--tokens` and to N x
`--codes-per-token` codes (15: speech at ~3.3 tokens per second), on the same prompt ids, in
each of our plans (`--plans`):

  app        the plan the app makes on this machine (`placement.make_plan`: Fast when speech runs
             on the CPU, Exact on a GPU), with `--speech-device` as the user's choice;
  exact      the same placement in the Exact profile (the reference's path);
  fast       the same placement in the Fast profile;
  quick      the app's plan with Settings' Start speaking sooner (`PlanChoice.quick_start`: in the
             Fast profile, the first chunk without look-ahead);

each `Conversation.turn` exactly as the app runs it (all three stages at once), and, with
`--reference`, transformers' `Qwen2_5OmniForConditionalGeneration.generate` in float32, which
returns the waveform at the end, so that its time to first audio is its whole run.

Lengths are forced on every side the same way (min = max new tokens, min = max codes; codes the
DiT cannot embed are barred on the reference's side, as ours never makes them). Each run is in a
process of its own, one after the other (the 3B reference alone needs ~20 GB), after one short
untimed warm-up turn. Times are `time.perf_counter` seconds from the end of input: our turn's
input_ready mark, the reference's call of generate. The breakdown of our first audio: the prompt
(to the first text), the Talker's first code, the DiT's first window (to the first mel) and the
vocoder (to the first audio). Peak RSS is each process's maximum resident set, loading included;
on CUDA the peak memory torch allocated is printed too (llama.cpp's is not in it).

Without `--models`, a bundle at the real 3B (or `--size 7b`) shape with random weights is built
and cached (model/bench/parts/random_bundle.py). The reference gets the bundle's own Talker,
Token2Wav and voice, and a float32 Thinker of the bundle's shape with random weights (the GGUF's
are quantized; with lengths forced the work is the same); its unused audio and vision encoders
are cut to one layer to save memory.
"""

from __future__ import annotations

import argparse
import copy
import gc
import multiprocessing
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from model.audio_rates import OUTPUT_SAMPLE_RATE
from model.bench.parts.measure import in_own_process, peak_rss, sync
from model.bench.parts.random_bundle import random_bundle
from model.bench.parts.random_thinker import SHAPES
from model.files.bundle import Bundle
from model.pipeline import AudioChunk, Conversation, TurnFinished, TurnOptions
from model.placement import Plan, PlanChoice
from model.sampling import SamplingOptions
from model.talker import SpeechIds, SpeechOptions
from model.token2wav.streaming import StreamingSynthesizer
from model.token2wav.synthesizer import CODE_RATE, Token2Wav
from model.voices import load_voices

QUESTION = "What am I looking at? Tell me in a few words."
SEED = 0
# Tokens and codes of the untimed first turn; its audio, made at its end, runs the DiT and vocoder too.
WARM_UP = (2, 30)
PLANS = {  # the user's choice each plan is made from (with --speech-device)
    "app": PlanChoice(),
    "exact": PlanChoice(quality="exact"),
    "fast": PlanChoice(quality="fast"),
    "quick": PlanChoice(quick_start=True),
}


@dataclass(frozen=True)
class OurTurn:
    tokens: int
    codes: int
    first_text: float
    first_code: float
    first_mel: float
    first_audio: float
    thinker_done: float
    talker_done: float
    done: float
    tokens_per_s: float
    speech_s: float

    @property
    def codes_per_s(self) -> float:
        return (self.codes - 1) / max(self.talker_done - self.first_code, 1e-9)

    @property
    def real_time_factor(self) -> float:
        """Seconds of the turn per second of speech made."""
        return self.done / max(self.speech_s, 1e-9)


@dataclass(frozen=True)
class ReferenceTurn:
    tokens: int
    codes: int
    seconds: float
    speech_s: float


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnidesk bench pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, help="a model bundle (default: random weights at --size)")
    parser.add_argument("--size", choices=sorted(SHAPES), default="3b")
    parser.add_argument("--quant", default="Q4_K_M", help="the random Thinker's quantization")
    parser.add_argument(
        "--tokens", default="60", help="reply lengths in text tokens, comma-separated (default: 60)"
    )
    parser.add_argument("--codes-per-token", type=int, default=15)
    parser.add_argument("--voice", help="default: Chelsie, or the bundle's first voice")
    parser.add_argument(
        "--plans", default="app,exact", help=f"our plans to run, comma-separated: {', '.join(PLANS)}"
    )
    parser.add_argument("--speech-device", choices=("auto", "gpu", "cpu"), default="auto")
    parser.add_argument("--reference", action="store_true", help="time transformers' generate too")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "omnidesk-bench")
    args = parser.parse_args(argv)
    lengths = [int(n) for n in args.tokens.split(",")]
    plans = args.plans.split(",")
    if not lengths or min(lengths) < 1 or args.codes_per_token < 1:
        parser.error("reply lengths and codes per token must be positive")
    if not plans or not set(plans) <= set(PLANS):
        parser.error(f"--plans takes {', '.join(PLANS)}")

    started = time.perf_counter()
    root = args.models or random_bundle(SHAPES[args.size], args.quant, args.cache)
    bundle = Bundle.open(root, verify=False)
    voice = args.voice or ("Chelsie" if "Chelsie" in bundle.voices else next(iter(bundle.voices)))
    what = "the bundle" if args.models else f"a random {args.size.upper()} {args.quant} bundle"
    print(f"{what} at {root} (ready in {time.perf_counter() - started:.0f} s); voice {voice}", flush=True)
    print(
        f"replies forced to {', '.join(map(str, lengths))} text tokens x {args.codes_per_token} codes; "
        f"{multiprocessing.cpu_count()} logical CPUs",
        flush=True,
    )
    ours = {}
    for name in plans:
        choice = replace(PLANS[name], speech_device=args.speech_device)
        ours[name] = in_own_process(_run_ours, str(root), lengths, args.codes_per_token, voice, choice)
    theirs = None
    if args.reference:
        first = next(iter(ours.values()))
        theirs = in_own_process(
            _run_reference,
            str(root),
            first["prompt_ids"],
            lengths,
            args.codes_per_token,
            voice,
            first["device"],
        )
    _report(ours, theirs)
    return 0


# -- ours ---------------------------------------------------------------------------------


def _run_ours(
    root: str, lengths: list[int], codes_per_token: int, voice: str, choice: PlanChoice
) -> dict[str, Any]:
    bundle = Bundle.open(root, verify=False)
    conversation = Conversation.planned(bundle, choice)
    plan = conversation.plan
    print(
        f"  {plan.profile} plan: "
        + "; ".join(line.split(":", 1)[0] + ":" + line.split(":", 1)[1].strip() for line in plan.describe()),
        flush=True,
    )
    _our_turn(conversation, *WARM_UP, voice)
    turns, finished = [], []
    for n in lengths:
        turn, end = _our_turn(conversation, n, n * codes_per_token, voice)
        print(
            f"  {plan.profile}, {n} tokens: first text at {turn.first_text:.2f} s, first code at "
            f"{turn.first_code:.2f} s, first audio at {turn.first_audio:.2f} s, done at {turn.done:.1f} s",
            flush=True,
        )
        turns.append(asdict(turn))
        finished.append(end)
    conversation.close()
    gc.collect()
    return {
        "profile": plan.profile,
        "device": plan.talker.device,
        "turns": turns,
        "prompt_ids": list(finished[-1].prompt_ids),
        "codes": list(finished[-1].codes),
        "token2wav_rtf": _token2wav_alone(bundle, voice, list(finished[-1].codes), conversation.plan),
        "peak_rss": peak_rss(),
        "peak_vram": _peak_vram(plan.talker.device),
    }


def _our_turn(
    conversation: Conversation, tokens: int, codes: int, voice: str
) -> tuple[OurTurn, TurnFinished]:
    """A first turn with its lengths forced, as the app's first question meets it: no history, and
    the system prompt already decoded when the model loaded (`Conversation.prepare`)."""
    conversation.history = []
    conversation.prepare(voice)
    options = TurnOptions(
        max_tokens=tokens,
        min_tokens=tokens,
        sampling=SamplingOptions(seed=SEED),
        speech=SpeechOptions(voice=voice, max_codes=codes, min_codes=codes),
        seed=SEED,
    )
    samples = 0
    finished = None
    for event in conversation.turn(QUESTION, options):
        if isinstance(event, AudioChunk):
            samples += len(event.samples)
        elif isinstance(event, TurnFinished):
            finished = event
    assert finished is not None
    if finished.reason not in ("end", "length") or len(finished.codes) != codes:
        raise RuntimeError(
            f"the turn ended with {finished.reason} after {len(finished.codes)} codes {finished.error}"
        )
    marks = finished.marks
    turn = OurTurn(
        tokens=len(finished.reply_ids),
        codes=len(finished.codes),
        first_text=marks["first_text"],
        first_code=marks["first_code"],
        first_mel=marks["first_mel"],
        first_audio=marks["first_audio"],
        thinker_done=marks["thinker_done"],
        talker_done=marks["talker_done"],
        done=marks["done"],
        tokens_per_s=finished.tokens_per_s or float("nan"),
        speech_s=samples / OUTPUT_SAMPLE_RATE,
    )
    return turn, finished


def _token2wav_alone(bundle: Bundle, voice_name: str, codes: list[int], plan: Plan) -> float:
    """Real-time factor of streaming synthesis on its own, the codes pushed one by one as they come."""
    t2w = Token2Wav.load(
        bundle, plan.token2wav.device, plan.token2wav.dtype, plan.int8_dit, plan.fused_vocoder
    )
    voice = load_voices(bundle)[voice_name]
    t2w.voice_features(voice)
    synth = StreamingSynthesizer(t2w, voice, SEED, plan.stream)
    started = time.perf_counter()
    samples = sum(synth.push([code]).numel() for code in codes) + synth.finish().numel()
    sync(torch.device(plan.token2wav.device))
    return (time.perf_counter() - started) / (samples / OUTPUT_SAMPLE_RATE)


# -- the reference --------------------------------------------------------------------------


def _run_reference(
    root: str, prompt_ids: list[int], lengths: list[int], codes_per_token: int, voice: str, device: str
) -> dict[str, Any]:
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration

    bundle = Bundle.open(root, verify=False)
    config = copy.deepcopy(bundle.config)
    config["thinker_config"]["vision_config"]["depth"] = 1  # unused by a text turn
    config["thinker_config"]["audio_config"]["encoder_layers"] = 1
    started = time.perf_counter()
    torch.manual_seed(SEED)
    model = Qwen2_5OmniForConditionalGeneration(Qwen2_5OmniConfig.from_dict(config)).eval()
    for part in ("talker", "token2wav"):
        _load_in_place(model, bundle.file(part), part)
    model.to(device)
    chosen = load_voices(bundle)[voice]
    model.speaker_map = {
        voice: {"cond": chosen.cond, "ref_mel": chosen.ref_mel, "bos_token": chosen.bos_token}
    }
    print(f"  reference built in {time.perf_counter() - started:.0f} s", flush=True)

    ids = SpeechIds.from_bundle(bundle)
    barred = [[i] for i in range(ids.embeddable, int(config["talker_config"]["vocab_size"]))]
    stops = [bundle.tokens["im_end"], bundle.tokens["endoftext"]]

    def generate(tokens: int, codes: int) -> ReferenceTurn:
        torch.manual_seed(SEED)
        start = time.perf_counter()
        with torch.no_grad():
            sequences, wav = model.generate(
                input_ids=torch.tensor([prompt_ids], device=device),
                speaker=voice,
                thinker_max_new_tokens=tokens,
                thinker_min_new_tokens=tokens,
                thinker_do_sample=False,
                thinker_eos_token_id=stops,
                thinker_pad_token_id=bundle.tokens["endoftext"],
                talker_max_new_tokens=codes,
                talker_min_new_tokens=codes,
                talker_bad_words_ids=barred,
            )
        sync(torch.device(device))
        seconds = time.perf_counter() - start
        speech_s = wav.numel() / OUTPUT_SAMPLE_RATE
        if sequences.shape[1] - len(prompt_ids) != tokens or round(speech_s * CODE_RATE) < codes:
            raise RuntimeError(
                f"the reference did not keep the forced lengths ({sequences.shape}, {speech_s} s)"
            )
        return ReferenceTurn(tokens, codes, seconds, speech_s)

    generate(*WARM_UP)
    turns = []
    for n in lengths:
        turn = generate(n, n * codes_per_token)
        print(f"  reference, {n} tokens: audio after {turn.seconds:.1f} s", flush=True)
        turns.append(asdict(turn))
    return {"turns": turns, "peak_rss": peak_rss(), "peak_vram": _peak_vram(device)}


def _load_in_place(model: torch.nn.Module, path: Path, part: str) -> None:
    """Copy the checkpoint tensors of `part` into `model`, one at a time (a whole file beside the
    model would not fit in memory at real size)."""
    from safetensors import safe_open

    state = model.state_dict()
    with safe_open(str(path), framework="pt") as file:
        names = set(file.keys())
        missing = {name for name in state if name.startswith(f"{part}.")} - names
        unexpected = names - set(state)
        if missing or unexpected:
            raise RuntimeError(
                f"the reference's {part} does not match {path.name}: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        with torch.no_grad():
            for name in names:
                state[name].copy_(file.get_tensor(name))


def _peak_vram(device: str) -> int:
    """Bytes torch allocated at most on a CUDA device (llama.cpp's own allocations are not counted)."""
    return torch.cuda.max_memory_allocated(device) if torch.device(device).type == "cuda" else 0


# -- the report -----------------------------------------------------------------------------


def _report(ours: dict[str, dict[str, Any]], theirs: dict[str, Any] | None) -> None:
    runs = {name: [OurTurn(**t) for t in run["turns"]] for name, run in ours.items()}
    reference = [ReferenceTurn(**t) for t in theirs["turns"]] if theirs else []
    exact = runs.get("exact")
    first = next(iter(ours.values()))
    print(f"\nprompt: {len(first['prompt_ids'])} tokens; seconds from the end of input")
    print(
        f"{'reply':>11} {'plan':>6} {'1st text':>8} {'1st code':>8} {'1st mel':>8} {'1st audio':>9} "
        f"{'thinker':>7} {'done':>7} {'tok/s':>6} {'codes/s':>7} {'RTF':>6} {'vs exact':>8} {'ref audio':>9} "
        f"{'ratio':>7}"
    )
    for name, turns in runs.items():
        for i, turn in enumerate(turns):
            versus = f"{exact[i].first_audio / turn.first_audio:7.1f}x" if exact else f"{'-':>8}"
            ref = reference[i].seconds if reference else None
            against_ref = f"{ref:9.1f} {ref / turn.first_audio:6.1f}x" if ref else f"{'not run':>9} {'-':>7}"
            print(
                f"{turn.tokens:>3} t {turn.codes:>4} c {name:>6} {turn.first_text:8.2f} "
                f"{turn.first_code:8.2f} {turn.first_mel:8.2f} {turn.first_audio:9.2f} "
                f"{turn.thinker_done:7.1f} {turn.done:7.1f} {turn.tokens_per_s:6.1f} {turn.codes_per_s:7.1f} "
                f"{turn.real_time_factor:6.2f} {versus} {against_ref}"
            )
    print(
        "1st mel: the DiT's first window done; 1st audio: its first chunk vocoded and out; thinker: the\n"
        "Thinker done; RTF: the turn's time per second of speech; vs exact: Exact's 1st audio / this\n"
        "plan's; ref audio: the reference's generate, whose audio all comes at its end; ratio: ref\n"
        "audio / our 1st audio"
    )
    for name, turns in runs.items():
        turn = turns[-1]
        print(
            f"{name}: first audio {turn.first_audio:.2f} s = prompt {turn.first_text:.2f} + first code "
            f"{turn.first_code - turn.first_text:.2f} + DiT window {turn.first_mel - turn.first_code:.2f} "
            f"+ vocoder {turn.first_audio - turn.first_mel:.2f}; Token2Wav alone, streaming: RTF "
            f"{ours[name]['token2wav_rtf']:.2f}"
        )
    for name, turns in runs.items():
        if len(turns) > 1:
            growth = f"{turns[-1].first_audio - turns[0].first_audio:+.2f} s"
            ref_growth = f"{reference[-1].seconds - reference[0].seconds:+.1f} s" if reference else "not run"
            print(
                f"{name}: from {turns[0].tokens} to {turns[-1].tokens} reply tokens, time to first audio: "
                f"ours {growth}, the reference {ref_growth}"
            )
    if exact is not None:
        for name, run in ours.items():
            if name != "exact" and run["profile"] != "exact":
                agree = _agreement(run["codes"], ours["exact"]["codes"])
                print(f"{name}: its codes agree with Exact's at {agree:.0%} of the steps (same seed)")
    for what, key in (("RSS", "peak_rss"), ("VRAM (torch's)", "peak_vram")):
        for name, run in ours.items():
            if run[key] or (theirs and theirs[key]):
                reference_peak = f", the reference {theirs[key] / 2**30:.1f} GiB" if theirs else ""
                print(f"peak {what}: ours {run[key] / 2**30:.1f} GiB{reference_peak} ({name} plan)")


def _agreement(codes: list[int], exact: list[int]) -> float:
    """The share of steps where two turns chose the same code."""
    return sum(a == b for a, b in zip(codes, exact, strict=False)) / max(1, min(len(codes), len(exact)))
