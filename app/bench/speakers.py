"""`omnidesk bench speakers`: silent gaps in speech played on a busy machine.

A long synthetic reply (a tone whose loudness moves like speech but never falls silent) is made
faster than it plays, in chunks, and played through the app's `Playback` on the real speakers (the
default output device, or --device). Beside it run busy threads in this process, doing numpy work
in Python loops as the stage threads do (they hold the GIL between numpy calls), and busy
processes (pure Python loops). Where `parec` is on PATH, the default sink's monitor is recorded: a
run of silence of at least GAP_S inside the reply is a gap the user hears. It prints the device's
underruns (PortAudio's output-underflow flags: the callback came too late) and the gaps; its last
line reads `speakers: N gaps (T s in all) and U underruns in S s of speech, load L`.

Threads: the bench's main thread writes the audio; --threads workers run numpy loops until the
reply is played; PortAudio's thread runs the callback.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from model.hardware import cpu_name

OUTPUT_RATE = 24_000  # Hz, the Talker's speech
CHUNK_S = 0.5  # seconds of audio per chunk, as Token2Wav hands them over
GAP_S = 0.02  # a silent run this long inside the reply is a gap
SILENT = 1e-4  # below this magnitude (full scale 1.0) a sample is silence


def speech_like(seconds: float, rate: int = OUTPUT_RATE) -> np.ndarray:
    """(n,) float32: a 220 Hz tone whose loudness rises and falls 4 times a second between 0.2 and
    0.6 of full scale (no sample run is ever silent for long, so any gap is the speakers')."""
    t = np.arange(round(seconds * rate)) / rate
    loudness = 0.4 + 0.2 * np.sin(2 * np.pi * 4 * t)
    return (loudness * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silent_runs(samples: np.ndarray, rate: int, shortest_s: float = GAP_S) -> list[float]:
    """The lengths (seconds) of the silent runs of at least `shortest_s` between the first and the
    last sound of `samples` ((n,) float32)."""
    sound = np.flatnonzero(np.abs(samples) >= SILENT)
    if not sound.size:
        return []
    steps = np.diff(sound)  # a step of k > 1 is a silent run of k - 1 samples
    runs = (steps[steps > 1] - 1) / rate
    return [float(run) for run in runs if run >= shortest_s]


def _busy_numpy(until: threading.Event) -> None:
    """Small numpy steps in a Python loop: the GIL is taken and dropped all the time."""
    block = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    while not until.is_set():
        block = np.tanh(block @ block.T * 1e-3)


def _busy_python(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(10_000))


def _record_monitor(into: Path) -> subprocess.Popen | None:
    """parec recording the default sink's monitor into the file `into` (a pipe would fill and stall
    it), or None without parec."""
    if not shutil.which("parec"):
        return None
    command = [
        "parec",
        "--device=@DEFAULT_MONITOR@",
        "--format=float32le",
        f"--rate={OUTPUT_RATE}",
        "--channels=1",
    ]
    with into.open("wb") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.DEVNULL)


def _stop_recording(recorder: subprocess.Popen, into: Path) -> np.ndarray:
    recorder.terminate()
    recorder.wait(10)
    data = into.read_bytes()
    return np.frombuffer(data[: len(data) // 4 * 4], np.float32)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnidesk bench speakers", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the reply (default: 30)")
    parser.add_argument(
        "--speed", type=float, default=2.4, help="audio made per second of time (default: 2.4)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="busy numpy threads in this process (default: 2)"
    )
    parser.add_argument("--processes", type=int, default=2, help="busy processes beside it (default: 2)")
    parser.add_argument("--device", default=None, help="the output device (default: the system's)")
    args = parser.parse_args(argv)

    from app.sound.playback import Playback

    reply = speech_like(args.seconds)
    chunk = round(CHUNK_S * OUTPUT_RATE)
    done = threading.Event()
    workers = [threading.Thread(target=_busy_numpy, args=(done,), daemon=True) for _ in range(args.threads)]
    context = multiprocessing.get_context("spawn")
    busy = [context.Process(target=_busy_python, args=(args.seconds + 30,)) for _ in range(args.processes)]
    for process in busy:
        process.start()
    folder = tempfile.TemporaryDirectory(prefix="omnidesk-bench-")
    recording = Path(folder.name) / "speakers.f32"
    recorder = _record_monitor(recording)
    playback = Playback(OUTPUT_RATE, device=args.device)
    try:
        for worker in workers:
            worker.start()
        time.sleep(1.0)  # the recorder and the load settle
        playback.begin()
        for start in range(0, len(reply), chunk):
            playback.write(reply[start : start + chunk])
            time.sleep(CHUNK_S / args.speed)
        playback.finish()
        playback.wait(args.seconds + 30)
        time.sleep(0.5)
        load = os.getloadavg()[0]
    finally:
        done.set()
        playback.close()
        for process in busy:
            process.terminate()
            process.join()
        heard = _stop_recording(recorder, recording) if recorder else None
        folder.cleanup()
    gaps = silent_runs(heard, OUTPUT_RATE) if heard is not None else []
    print(f"CPU: {cpu_name()}; {args.threads} busy threads, {args.processes} busy processes")
    print(f"device buffer: {playback.latency * 1000:.0f} ms; our own shortfalls: {playback.underflows}")
    if heard is None:
        print("no parec: gaps not measured")
    else:
        print("gaps (s): " + ", ".join(f"{gap:.3f}" for gap in gaps))
    print(
        f"speakers: {len(gaps)} gaps ({sum(gaps):.2f} s in all) and {playback.device_underruns} underruns "
        f"in {args.seconds:.0f} s of speech, load {load:.1f}"
    )
    return 0
