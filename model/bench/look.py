"""`omnidesk bench look`: "what am I looking at?" asked aloud about a 1920x1080 screen, timed from its end.

The real use: a screen shot (a synthetic desktop of windows, text and shapes drawn with OpenCV, not
noise) and a question of about 3 s spoken by espeak-ng, fed at real time in 20 ms pieces as a
microphone gives them. Two paths, each in a process of its own, after an untimed warm-up turn that
loads every part (one small picture, half a second of sound):

  app plan      what the window does now: the picture is encoded when the talk key goes down and each
                finished 2 s block as it is spoken, all put in the Thinker's cache before the release
                (`Conversation.listen`), with the encoders and the image budget of the app's plan
                (today the same as before: mtmd, the default budget);
  today's path  what the window did before: everything encoded at the release, mtmd at the default
                image budget (`VisionOptions()`).

For each: first text and first audio counted from the end of the question, and where the time went:
vision and audio encoding and the Thinker's prefill while the user speaks (the app plan's; what runs
past the end of the question delays the release), the wait from the end of the question until the
turn's input is ready (what is encoded at the release), the prompt (to the first text), the Talker's
first code, the DiT's first window and the vocoder. The reply is forced to `--tokens` text tokens x
`--codes-per-token` codes. The load average is read at each path's start and end: other work on the
machine slows both. Its last line reads
`look: first audio X.XX s after the question (app plan), Y.YY s (today's path)`, for scripts.

`--quick-start` runs both paths with Settings' Start speaking sooner (the first sound after 12 codes).
Random weights at the real 3B shape (`--size 7b` too; `--size tiny` runs at toy shapes in seconds, for
the tests), built once and cached in `--cache` (model/bench/parts/look_bundle.py). Times are
`time.perf_counter` seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from model.audio_features import load_audio
from model.audio_rates import INPUT_SAMPLE_RATE
from model.bench.parts.look_bundle import look_bundle
from model.bench.parts.measure import in_own_process
from model.files.bundle import Bundle
from model.hardware import cpu_name
from model.media import Audio, Image, Question
from model.pipeline import AudioChunk, Conversation, Listening, Mark, TextDelta, TurnFinished, TurnOptions
from model.pipeline.call import CallTurn
from model.placement import PlanChoice
from model.sampling import SamplingOptions
from model.talker import SpeechOptions

QUESTION = "What am I looking at on my screen right now?"
SCREEN = (1080, 1920)  # height, width
PIECE = 320  # samples a microphone gives at a time: 20 ms
SEED = 0
PATHS = ("app plan", "today's path")
STEPS = (
    "vision_while",
    "audio_while",
    "prefill_while",
    "ready",
    "prompt",
    "first_code",
    "first_window",
    "vocoder",
)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnidesk bench look", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "3b", "7b"), default="3b")
    parser.add_argument("--quant", default="Q4_K_M", help="the random Thinker's quantization")
    parser.add_argument("--tokens", type=int, default=8, help="reply length in text tokens (default: 8)")
    parser.add_argument("--codes-per-token", type=int, default=15)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "omnidesk-bench")
    parser.add_argument(
        "--quick-start", action="store_true", help="both paths with Settings' Start speaking sooner"
    )
    args = parser.parse_args(argv)
    if args.tokens < 1 or args.codes_per_token < 1:
        parser.error("reply lengths must be positive")
    if shutil.which("espeak-ng") is None:
        parser.error("espeak-ng speaks the question: install it (apt install espeak-ng)")

    started = time.perf_counter()
    root = look_bundle(args.size, args.quant, args.cache)
    samples = spoken(QUESTION)
    screen = screenshot_like(*SCREEN)
    print(
        f"a random {args.size.upper()} {args.quant} bundle at {root} "
        f"(ready in {time.perf_counter() - started:.0f} s)"
    )
    print(
        f"question: {QUESTION!r}, {len(samples) / INPUT_SAMPLE_RATE:.2f} s (espeak-ng); screen "
        f"{SCREEN[1]}x{SCREEN[0]}; reply {args.tokens} tokens x {args.codes_per_token} codes; {cpu_name()}, "
        f"{os.cpu_count()} logical CPUs",
        flush=True,
    )
    lengths = (args.tokens, args.tokens * args.codes_per_token)
    choice = PlanChoice(quick_start=args.quick_start)
    runs = {path: in_own_process(_run, str(root), path, screen, samples, lengths, choice) for path in PATHS}
    _report(runs)
    return 0


def spoken(text: str) -> np.ndarray:
    """`text` said by espeak-ng: (n,) float32 at INPUT_SAMPLE_RATE."""
    with tempfile.TemporaryDirectory(prefix="omnidesk-bench-look-") as folder:
        path = Path(folder) / "question.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), text], check=True, capture_output=True)
        return load_audio(path)


def screenshot_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A desktop (height, width, 3) uint8 RGB: a wallpaper, a task bar, windows with title bars, lines
    of text, buttons, a chart and icons, drawn with OpenCV (sharp edges and small text, as a screen)."""
    import cv2

    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = np.linspace((40, 70, 110), (90, 130, 170), height, dtype=np.uint8)[:, None, :]
    cv2.rectangle(image, (0, height - 48), (width, height), (30, 30, 36), -1)
    for i in range(8):
        cv2.rectangle(
            image, (12 + 56 * i, height - 42), (56 + 56 * i, height - 6), (90, 90 + 15 * i, 200), -1
        )
    cv2.putText(image, "12:34", (width - 90, height - 16), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (230, 230, 230), 1)
    for w in range(3):
        x0, y0 = int(rng.integers(20, width // 2)), int(rng.integers(20, height // 3))
        x1, y1 = (
            min(width - 20, x0 + int(rng.integers(600, 1100))),
            min(height - 70, y0 + int(rng.integers(400, 650))),
        )
        cv2.rectangle(image, (x0, y0), (x1, y1), (245, 245, 245), -1)
        cv2.rectangle(image, (x0, y0), (x1, y0 + 32), (60, 60, 70), -1)
        cv2.putText(
            image,
            f"Document {w + 1} - Editor",
            (x0 + 10, y0 + 22),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.6,
            (255,) * 3,
            1,
        )
        for line in range((y1 - y0 - 60) // 24):
            words = " ".join(
                rng.choice(["the", "screen", "shows", "a", "report", "of", "sales", "in", "2026"], 8)
            )
            cv2.putText(
                image, words, (x0 + 16, y0 + 60 + 24 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (20, 20, 20), 1
            )
        cv2.rectangle(image, (x1 - 110, y1 - 44), (x1 - 14, y1 - 12), (50, 120, 220), -1)
        cv2.putText(image, "OK", (x1 - 76, y1 - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255,) * 3, 2)
    bars = rng.integers(40, 260, 12)
    for i, bar in enumerate(bars):
        cv2.rectangle(
            image, (width - 560 + 40 * i, 380 - int(bar)), (width - 530 + 40 * i, 380), (40, 160, 90), -1
        )
    return image


# -- one path, in its own process ---------------------------------------------------------------


def _run(
    root: str,
    path: str,
    screen: np.ndarray,
    samples: np.ndarray,
    lengths: tuple[int, int],
    choice: PlanChoice,
) -> dict[str, Any]:
    load_at_start = os.getloadavg()[0]
    bundle = Bundle.open(root, verify=False)
    conversation = Conversation.planned(bundle, choice)
    voice = next(iter(bundle.voices))
    vision_s = _timed(conversation.perception, "encode_image")
    prefill_s = _timed(conversation.thinker, "extend")
    warm_up = Question(
        images=(Image(screen[:112, :112].copy()),), audios=(Audio(samples[: INPUT_SAMPLE_RATE // 2]),)
    )
    answer_timed(conversation, warm_up, forced_reply(voice, 2, 30), None, time.perf_counter())
    conversation.history = []
    conversation.prepare(voice)
    vision_s.clear()
    prefill_s.clear()
    question = Question(images=(Image(screen),), audios=(Audio(samples),))
    heard, audio_while = None, 0.0
    end = time.perf_counter()
    if path == "app plan":
        heard, audio_while, end = listen_as_spoken(conversation, screen, samples, prefill_s)
    vision_while = sum(vision_s) if heard is not None else 0.0
    times = answer_timed(conversation, question, forced_reply(voice, *lengths), heard, end)
    conversation.close()
    run: dict[str, Any] = {
        **times,
        "vision_while": vision_while,
        "audio_while": audio_while,
        "prefill_while": sum(prefill_s),
        "vision_at_release": sum(vision_s) - vision_while,
        "load": (load_at_start, os.getloadavg()[0]),
        "profile": conversation.plan.profile,
        "first_sound_codes": conversation.plan.first_sound_codes,
    }
    print(
        f"  {path}: first text {run['first_text']:.2f} s, first audio {run['first_audio']:.2f} s after the "
        f"question (load average {run['load'][0]:.1f} to {run['load'][1]:.1f})",
        flush=True,
    )
    return run


def _timed(owner: Any, method: str) -> list[float]:
    """Seconds spent in each call of `owner.method` from now on (the list fills as it is called)."""
    spent: list[float] = []
    call: Callable[..., Any] = getattr(owner, method)

    def timed(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args)
        finally:
            spent.append(time.perf_counter() - started)

    setattr(owner, method, timed)
    return spent


def listen_as_spoken(
    conversation: Conversation, screen: np.ndarray, samples: np.ndarray, prefill_s: list[float]
) -> tuple[Listening, float, float]:
    """The question as the window hears it: the picture at the press, then the samples as they are spoken
    (those that came while the worker was busy, at once). Returns the listening, the seconds its audio
    encoding took while the user spoke (its prefill, timed in `prefill_s`, left out), and the time the
    question ended."""
    start = time.perf_counter()
    listening = conversation.listen()
    listening.look(Image(screen))
    prefilled_before = sum(prefill_s)
    audio_s, fed = 0.0, 0
    while fed < len(samples):
        spoken_so_far = int((time.perf_counter() - start) * INPUT_SAMPLE_RATE) // PIECE * PIECE
        due = min(len(samples), spoken_so_far)
        if due <= fed:
            time.sleep(PIECE / INPUT_SAMPLE_RATE)
            continue
        began = time.perf_counter()
        listening.hear(samples[fed:due])
        audio_s += time.perf_counter() - began
        fed = due
    end = start + len(samples) / INPUT_SAMPLE_RATE
    time.sleep(max(0.0, end - time.perf_counter()))
    return listening, audio_s - (sum(prefill_s) - prefilled_before), end  # `hear` prefills too


def forced_reply(voice: str, tokens: int, codes: int) -> TurnOptions:
    return TurnOptions(
        max_tokens=tokens,
        min_tokens=tokens,
        sampling=SamplingOptions(seed=SEED),
        speech=SpeechOptions(voice=voice, max_codes=codes, min_codes=codes),
        seed=SEED,
    )


def answer_timed(
    conversation: Conversation,
    question: Question,
    options: TurnOptions,
    heard: Listening | CallTurn | None,
    end: float,
) -> dict[str, float]:
    """The turn, timed from `end` (the end of the question): its steps, first text and first audio;
    and the positions of its prompt ("context")."""
    ready = first_text = first_audio = None
    finished = None
    for event in conversation.turn(question, options, heard):
        now = time.perf_counter() - end
        if isinstance(event, Mark) and event.name == "input_ready":
            ready = now
        elif isinstance(event, TextDelta) and first_text is None:
            first_text = now
        elif isinstance(event, AudioChunk) and first_audio is None:
            first_audio = now
        elif isinstance(event, TurnFinished):
            finished = event
    if (
        finished is None
        or finished.reason not in ("end", "length")
        or None in (ready, first_text, first_audio)
    ):
        raise RuntimeError(f"the turn did not speak: {finished}")
    marks = finished.marks
    assert ready is not None and first_text is not None and first_audio is not None
    return {
        "first_text": first_text,
        "first_audio": first_audio,
        "ready": ready,
        "prompt": marks["first_text"],
        "first_code": marks["first_code"] - marks["first_text"],
        "first_window": marks["first_mel"] - marks["first_code"],
        "vocoder": marks["first_audio"] - marks["first_mel"],
        "context": len(finished.prompt_ids),
    }


# -- the report -----------------------------------------------------------------------------------


def _report(runs: dict[str, dict[str, Any]]) -> None:
    print("\nseconds. 'while': during the question (the app plan's encoding of the picture and the finished")
    print("audio blocks, and the Thinker's prefill of them); what runs past the question's end delays")
    print("'ready': from the end of the question to the turn's input ready (with what is encoded at the")
    print("release); then the prompt to the first text, the Talker's first code, the DiT's first window,")
    print("the vocoder. First text and first audio from the end of the question.")
    header = ["path", "vision while", "audio while", "prefill while", "ready", "prompt", "1st code"]
    header += ["1st window", "vocoder"]
    print(" ".join(f"{h:>13}" for h in header) + f" {'1st text':>9} {'1st audio':>9} {'load':>11}")
    for path, run in runs.items():
        cells = " ".join(f"{run[step]:13.2f}" for step in STEPS)
        load = f"{run['load'][0]:.1f}-{run['load'][1]:.1f}"
        print(f"{path:>13} {cells} {run['first_text']:9.2f} {run['first_audio']:9.2f} {load:>11}")
    for path, run in runs.items():
        print(
            f"{path}: vision encoding at the release {run['vision_at_release']:.2f} s "
            f"({run['profile']} speech, its first sound after {run['first_sound_codes']} codes)"
        )
    app, today = (runs[path]["first_audio"] for path in PATHS)
    print(f"look: first audio {app:.2f} s after the question (app plan), {today:.2f} s (today's path)")
