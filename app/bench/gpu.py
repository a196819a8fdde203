"""`omnidesk bench gpu`: speech on this machine's GPU in one short run, and a user's session, random weights.

One process, on `--device` (default: CUDA when torch sees it), in the precision the app's plan picks
there. Parts 1 to 3 measure the speech stages apart (`model/bench/parts/gpu_speech.py`: the Talker's
codes/s, Token2Wav's real-time factor in three precisions, a streaming turn's first audio). Part 4 is
what a user meets, through the app's own code:

4. A session (`--size`'s bundle that sees and hears, `look_bundle`): the model loads as the window
   loads it (`Conversation.planned`, then `prepare`, which captures Token2Wav's window graph: its
   time is printed), a spoken question about a 1920x1080 screen is heard as the talk key gives it
   (the screen at the press, the audio at real time, `Conversation.listen`), and answered; then a
   speech setting changes (Speech quality, which makes the window load the model again: the
   conversation is closed and a new one loaded, with the other speech profile: Exact after Fast, Fast
   after Exact) and the same question is answered again; after the first answer, a call of
   `--call-seconds` at the plan's frames (`bench call`'s), then the question. No warm-up
   turn: the first answer after each load is what the user hears. First audio is counted from the
   end of the question twice: when its first chunk is made, and when the speakers may play it
   (`app.sound.pacing.Pacer`, as the window's playback decides). The GPU memory in use (the whole
   device's, llama.cpp's included; the process's resident memory on a CPU) is printed before the
   first load, after each load and after each close: what a reload gives back.

Budget on an H100-class GPU (estimated; the first run checks it): the 3B Thinker GGUF ~2 minutes to
build (6 GB of float16 written with random weights, then quantized by llama.cpp on the CPU; `--size
7b` ~5 minutes, hence 3B by default), the encoders of the session's bundle ~1 minute more, the two
Talkers ~30 s with capture, Token2Wav ~1 minute for 3 precisions x 10 s of speech, the turn and the
session ~1 minute: about 6 minutes in all, within the 8 the check may take. Everything built is cached
in `--cache`, so a second run skips it.

`--size tiny --device cpu` runs every part at toy shapes on a CPU in about a minute
(tests/app/bench/test_gpu.py), so this bench cannot rot where no GPU is at hand.

Nothing is downloaded: every weight is random; the outputs are noise, the work is the real work. The
question is spoken by espeak-ng where it is installed, else it is a synthetic voiced sound of the same
length (the random model hears noise either way). Needs torch, numpy, safetensors, gguf, opencv and
llama-cpp-python, not Qt (docs/gpu-check.md: how to carry them to a machine without network). Run
from the source tree: `python -m app.bench.gpu` (or `omnidesk bench gpu` where installed).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from dataclasses import replace
from typing import Literal

import numpy as np
import torch

from app.sound.pacing import Pacer
from model.audio_rates import INPUT_SAMPLE_RATE, OUTPUT_SAMPLE_RATE
from model.bench.call import call_line, call_then_ask
from model.bench.look import QUESTION, SCREEN, forced_reply, listen_as_spoken, screenshot_like, spoken
from model.bench.parts.gpu_speech import (
    add_arguments,
    device_name,
    measure_speech,
    report_goals,
    speech_choice,
)
from model.bench.parts.look_bundle import look_bundle
from model.bench.parts.measure import peak_rss, rss
from model.files.bundle import Bundle
from model.hardware import probe
from model.media import Audio, Image, Question
from model.pipeline import AudioChunk, Conversation, TurnFinished
from model.placement import estimated_needs, make_plan
from model.sizing import SIZES

SESSION_REPLY = (8, 15)  # the session's replies: text tokens, codes per token
QUESTION_S = 3.0  # the synthetic question's length where espeak-ng is missing


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnidesk bench gpu", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"torch {torch.__version__} sees no CUDA device: a CPU build, or no driver")
    choice = speech_choice(device)
    plan = make_plan(probe(), estimated_needs(SIZES["7b" if args.size == "7b" else "3b"], args.quant), choice)
    if plan.talker.device != device.type:
        parser.error(
            f"the plan puts speech on {plan.talker.device}, not {device.type}: {' '.join(plan.notes)}"
        )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    print(
        f"bench gpu: {device_name(device)}, torch {torch.__version__}, {args.size} shapes; plan:", flush=True
    )
    for line in plan.describe():
        print(f"  {line}")

    figures = measure_speech(args, device, plan)
    session = _session(args, device)

    print(f"\nwhole run {time.perf_counter() - started:.0f} s", end="; ")
    if device.type == "cuda":
        print(f"peak GPU memory torch allocated: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    else:
        print(f"peak RSS {peak_rss() / 2**30:.1f} GiB (no GPU memory on {device.type})")
    report_goals({**figures, **session}, plan)
    return 0


def _session(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Part 4; returns the first audio heard after the reload ("heard_s") and the call's first audio
    and how far behind real time its prefill ran ("call_first_audio_s", "call_behind_s"), in seconds."""
    built = time.perf_counter()
    bundle = Bundle.open(look_bundle(args.size, args.quant, args.cache), verify=False)
    voice = next(iter(bundle.voices))
    samples, said_by = _question_audio()
    screen = screenshot_like(*SCREEN)
    print(
        f"\nA session: a random {args.size.upper()} {args.quant} bundle that sees and hears (ready in "
        f"{time.perf_counter() - built:.0f} s); a {len(samples) / INPUT_SAMPLE_RATE:.2f} s question "
        f"({said_by}) about a {SCREEN[1]}x{SCREEN[0]} screen; replies of {SESSION_REPLY[0]} tokens x "
        f"{SESSION_REPLY[1]} codes; memory in use {_in_use(device)} before loading",
        flush=True,
    )
    choice = speech_choice(device)
    heard, step = math.nan, "load"
    quality: Literal["auto", "exact", "fast"] = "auto"
    call: dict[str, float] = {}
    for _ in range(2):
        started = time.perf_counter()
        conversation = Conversation.planned(bundle, replace(choice, quality=quality))
        moves = conversation.prepare(voice)
        load_s = time.perf_counter() - started
        loaded = _in_use(device)
        made, heard = _ask(conversation, screen, samples, voice)
        if not call:  # a call after the first question: its frames at the plan's rate, then the question
            tokens, per_token = SESSION_REPLY
            options = forced_reply(voice, tokens, tokens * per_token)
            call = call_then_ask(conversation, samples, args.call_seconds, options)
            print(
                f"  a call of {args.call_seconds:.0f} s ({conversation.plan.vision.call.label}), then the "
                f"question: {call_line(call)}",
                flush=True,
            )
        conversation.close()  # gives torch's cached GPU memory back, as a reload in the window does
        print(
            f"  {step}: ready in {load_s:.1f} s ({conversation.plan.profile} speech, Token2Wav's window "
            f"graph captured in {conversation.graph_capture_s * 1e3:.0f} ms; 0: windows run eagerly); first "
            f"audio made {made:.3f} s, heard {heard:.3f} s after the question; memory in use {loaded} "
            f"loaded, {_in_use(device)} after closing" + "".join(f"; {move}" for move in moves),
            flush=True,
        )
        quality = "exact" if conversation.plan.profile == "fast" else "fast"  # the other speech profile
        step = f"reload after Speech quality: {quality.capitalize()}"
    return {"heard_s": heard, "call_first_audio_s": call["first_audio"], "call_behind_s": call["behind"]}


def _ask(
    conversation: Conversation, screen: np.ndarray, samples: np.ndarray, voice: str
) -> tuple[float, float]:
    """The question heard as it is spoken, then answered: seconds from its end to the first audio made
    and to the moment the speakers may start playing it."""
    heard_so_far, _, end = listen_as_spoken(conversation, screen, samples, [])
    question = Question(images=(Image(screen),), audios=(Audio(samples),))
    tokens, per_token = SESSION_REPLY
    pacer = Pacer(OUTPUT_SAMPLE_RATE)
    pacer.begin(end)
    made = heard = None
    finished = None
    for event in conversation.turn(question, forced_reply(voice, tokens, tokens * per_token), heard_so_far):
        now = time.perf_counter()
        if isinstance(event, AudioChunk):
            made = now - end if made is None else made
            start_at = pacer.written(event.samples, now, played=0, playing=False).start_at
            if heard is None and start_at < math.inf:
                heard = max(start_at, now) - end
        elif isinstance(event, TurnFinished):
            finished = event
    if finished is None or finished.reason not in ("end", "length") or made is None:
        raise RuntimeError(f"the session's turn did not speak: {finished}")
    if heard is None:  # held to the end of the reply: it all plays then
        heard = pacer.finished(time.perf_counter()).start_at - end
    return made, heard


def _question_audio() -> tuple[np.ndarray, str]:
    """The question's samples at INPUT_SAMPLE_RATE, and what said it."""
    if shutil.which("espeak-ng"):
        return spoken(QUESTION), "espeak-ng"
    t = np.arange(int(QUESTION_S * INPUT_SAMPLE_RATE)) / INPUT_SAMPLE_RATE
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None)  # four a second
    return (0.2 * voiced * syllables).astype(np.float32), "a synthetic voice: espeak-ng is not installed"


def _in_use(device: torch.device) -> str:
    """The GPU's memory in use (every process's) on CUDA; this process's resident memory elsewhere."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return f"{(total - free) / 2**30:.2f} GiB of the GPU"
    return f"{rss() / 2**30:.2f} GiB resident"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
