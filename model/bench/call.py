"""`omnidesk bench call`: a live call at the plan's frame rate, then a spoken question, timed from its end.

A call of `--seconds` (default 60) with a camera whose scene changes every 5 s (a synthetic desktop
drawn anew, `look.screenshot_like`, at 1280x720) and a microphone that hears a quiet room (noise 60 dB
below the question's peak), then the question spoken by espeak-ng; everything fed at real time in
20 ms pieces, as the window feeds them (`Call.hear`: frames by the sound's clock, each complete 2 s
chunk encoded and put in the Thinker's cache at once; pieces that came while the worker was busy,
at once). At the question's end the turn is answered with a forced reply of `--tokens` x
`--codes-per-token`, as `bench look` does.

It prints the plan's frames for calls, then the first audio after the question, how far behind real
time the prefill ran (the largest delay of a chunk, from the moment its sound was complete to the
moment it was in the cache: at most a chunk's worth means it kept up), the context the turn's prompt
took, and the load average at the start and the end. Its last line reads
`call: first audio X.XX s after the question, prefill Y.YY s behind real time, context Z tokens`, for
scripts. Random weights at the real 3B shape (`--size 7b` too; `--size tiny` at toy shapes in seconds,
for the tests), built once and cached in `--cache`. Times are `time.perf_counter` seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np

from model.audio_rates import INPUT_SAMPLE_RATE
from model.bench.look import PIECE, QUESTION, answer_timed, forced_reply, screenshot_like, spoken
from model.bench.parts.look_bundle import look_bundle
from model.files.bundle import Bundle
from model.hardware import cpu_name
from model.pipeline import Conversation, TurnOptions
from model.pipeline.call import Call, CallTurn
from model.placement import PlanChoice
from model.tmrope import DEFAULT_SECONDS_PER_CHUNK

CAMERA = (720, 1280)  # height, width
STEPS = ("ready", "prompt", "first_code", "first_window", "vocoder", "first_text", "first_audio")
SCENE_SECONDS = 5.0  # the camera's scene changes this often
ROOM_DB = -60.0  # the quiet room's noise, against the question's peak


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnidesk bench call", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "3b", "7b"), default="3b")
    parser.add_argument("--quant", default="Q4_K_M", help="the random Thinker's quantization")
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="the call before the question (default: 60)"
    )
    parser.add_argument("--tokens", type=int, default=8, help="reply length in text tokens (default: 8)")
    parser.add_argument("--codes-per-token", type=int, default=15)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "omnidesk-bench")
    args = parser.parse_args(argv)
    if args.tokens < 1 or args.codes_per_token < 1 or args.seconds < 0:
        parser.error("lengths must be positive")
    if shutil.which("espeak-ng") is None:
        parser.error("espeak-ng speaks the question: install it (apt install espeak-ng)")

    root = look_bundle(args.size, args.quant, args.cache)
    question = spoken(QUESTION)
    load_at_start = os.getloadavg()[0]
    conversation = Conversation.planned(Bundle.open(root, verify=False), PlanChoice())
    voice = next(iter(conversation.bundle.voices))
    conversation.prepare(voice)
    print(
        f"a random {args.size.upper()} {args.quant} bundle at {root}; {cpu_name()}, {os.cpu_count()} logical "
        f"CPUs; call frames: {conversation.plan.vision.call.label}; the call {args.seconds:.0f} s, then "
        f"{QUESTION!r} ({len(question) / INPUT_SAMPLE_RATE:.2f} s, espeak-ng)",
        flush=True,
    )
    options = forced_reply(voice, args.tokens, args.tokens * args.codes_per_token)
    run = call_then_ask(conversation, question, args.seconds, options)
    conversation.close()
    load_at_end = os.getloadavg()[0]
    steps = ", ".join(f"{step.replace('_', ' ')} {run[step]:.2f} s" for step in STEPS)
    print(
        f"after the question: {steps}; frames taken {run['frames']:.0f}, idle turns started again "
        f"{run['restarts']:.0f}; load average {load_at_start:.1f} to {load_at_end:.1f}"
    )
    print(call_line(run))
    return 0


def call_then_ask(
    conversation: Conversation, question: np.ndarray, seconds: float, options: TurnOptions
) -> dict[str, float]:
    """A call of `seconds` in a quiet room, then `question` (samples at INPUT_SAMPLE_RATE), fed at real
    time, then answered with `options`: the turn's timings (`look.answer_timed`), how far behind real
    time the prefill ran ("behind"), the frames taken and the idle turns started again."""
    rng = np.random.default_rng(0)
    room = rng.standard_normal(int(seconds * INPUT_SAMPLE_RATE)).astype(np.float32)
    room *= np.abs(question).max() * 10 ** (ROOM_DB / 20) / 3  # 3 sigma at the room's level
    camera = Camera()
    call = Call(conversation, camera, options.max_tokens)
    behind, end = on_call(call, np.concatenate([room, question]), len(room), camera)
    turn = call.turn()
    times = answer_timed(conversation, turn.question(), options, turn, end)
    call.end()
    return {**times, "behind": behind, "frames": camera.taken, "restarts": call.restarts}


def call_line(run: dict[str, float]) -> str:
    """The line scripts read."""
    return (
        f"call: first audio {run['first_audio']:.2f} s after the question, prefill {run['behind']:.2f} s "
        f"behind real time, context {run['context']:.0f} tokens"
    )


class Camera:
    """A camera whose scene changes every SCENE_SECONDS of the call (by its own clock)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.taken = 0
        self._scenes: dict[int, np.ndarray] = {}

    def __call__(self) -> np.ndarray:
        self.taken += 1
        scene = int((time.perf_counter() - self.started) / SCENE_SECONDS)
        if scene not in self._scenes:
            self._scenes = {scene: screenshot_like(*CAMERA, seed=scene)}
        return self._scenes[scene]


def on_call(call: Call, samples: np.ndarray, speech_from: int, camera: Camera) -> tuple[float, float]:
    """The call as the window feeds it, in real time from `camera.started` (the user speaking from sample
    `speech_from` on). Returns how far behind real time the prefill ran (the largest delay of a chunk,
    see the module) and the time the samples ended."""
    start = camera.started
    fed = 0
    turn: CallTurn | None = None
    cached = 0
    behind = 0.0
    while fed < len(samples):
        due = min(len(samples), int((time.perf_counter() - start) * INPUT_SAMPLE_RATE) // PIECE * PIECE)
        if due <= fed:
            time.sleep(PIECE / INPUT_SAMPLE_RATE)
            continue
        call.hear(samples[fed:due], speaking=due > speech_from)
        if call.current is not turn:  # a new turn (an idle one started again): its chunks from here
            turn, cached = call.current, 0
        assert turn is not None
        now = time.perf_counter() - start
        began = (due - turn.heard_samples) / INPUT_SAMPLE_RATE  # the call's time of the turn's first sample
        for chunk in range(cached, turn.chunks_cached):
            behind = max(behind, now - (began + (chunk + 1) * DEFAULT_SECONDS_PER_CHUNK))
        cached = turn.chunks_cached
        fed = due
    end = start + len(samples) / INPUT_SAMPLE_RATE
    time.sleep(max(0.0, end - time.perf_counter()))
    return behind, end
