"""Run as `python -m tests.app.window.trial_under_load BUNDLE`: the window tried as a user tries it,
on a busy machine, for the speech's silent gaps and the wait for its first sound.

A private Xvfb (tests/fixtures/x_server.py) and PulseAudio (tests/app/sound_server.py: a null sink as
the speakers, a virtual microphone); the window as `omnidesk --models BUNDLE` starts it
(tests/app/window/spied_window.py); --busy processes (`python -c 'while 1: pass'`) beside it. Each turn
holds the talk button with xdotool while an espeak-ng question plays into the microphone, and lets
go as it ends. The speakers' monitor is recorded with parec all along (zeros are played into the
speakers too, or a null sink's monitor stalls between replies and the timeline with it). Per turn:
first audio, from the end of the question to the first sound recorded, beside what the status bar
said; and the silent runs of at least --gap seconds inside the reply. Needs Xvfb, PulseAudio
(pulseaudio, pactl, pacat, parec), espeak-ng and xdotool. Files go to --out (kept: the recording,
the questions, the window's log).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from app.bench.speakers import SILENT, silent_runs
from model.files.bundle import Bundle, write_manifest
from model.hardware import cpu_name
from tests.app.sound_server import FEED, SPEAKERS, SoundServer
from tests.fixtures.x_server import x_screen

STOP_CODES_SCALE = 50.0  # the other codes' rows of the codec head, scaled: one always outscores 0
RATE = 24_000  # Hz, the recording's (the Talker's speech)
AFTER_S = 1.0  # a reply's recording goes on this long after the window says its speech ended
QUESTIONS = (
    "What is the capital of France?",
    "Tell me a short story about a cat.",
    "How far away is the moon?",
    "Why is the sky blue?",
    "What should I cook for dinner tonight?",
    "Can you explain how a rainbow forms?",
    "What time zone is Tokyo in?",
    "Give me three tips for sleeping well.",
)


class Recording:
    """parec of the speakers' monitor, read on a thread. The monitor runs on without a break (zeros are
    played into the speakers), so sample i was played at start + i / RATE; `start` is the earliest
    that any read's arrival allows (a busy machine delays reads, never hastens them)."""

    def __init__(self, env: dict[str, str]) -> None:
        self._parec = subprocess.Popen(
            ["parec", f"--device={SPEAKERS}.monitor", "--format=float32le", f"--rate={RATE}", "--channels=1",
             "--latency-msec=20"],
            env=env, stdout=subprocess.PIPE,
        )  # fmt: skip
        self._data = bytearray()
        self._start = float("inf")  # time.monotonic() when the first sample was played
        threading.Thread(target=self._read, name="recording", daemon=True).start()

    def _read(self) -> None:
        assert self._parec.stdout is not None
        while data := os.read(self._parec.stdout.fileno(), 4800):
            self._data += data
            self._start = min(self._start, time.monotonic() - len(self._data) // 4 / RATE)

    def samples(self) -> np.ndarray:
        """(n,) float32, what was played so far."""
        return np.frombuffer(bytes(self._data[: len(self._data) // 4 * 4]), np.float32)

    def index_at(self, moment: float) -> int:
        """The sample played at time.monotonic() `moment`."""
        return max(0, round((moment - self._start) * RATE))

    def time_of(self, index: int) -> float:
        """When (time.monotonic()) sample `index` was played."""
        return self._start + index / RATE

    def wait_until(self, moment: float) -> None:
        """Until what was played at `moment` has been read."""
        while len(self._data) // 4 <= self.index_at(moment):
            time.sleep(0.1)

    def stop(self) -> np.ndarray:
        self._parec.terminate()
        self._parec.wait(10)
        return self.samples()


class Window:
    """The spied window's process and the lines it says (tests/app/window/spied_window.py)."""

    def __init__(self, bundle: str, device_buffer: str | None, env: dict[str, str], log: Path) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.app.window.spied_window", bundle, *filter(None, [device_buffer])],
            env=env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        threading.Thread(target=self._read, args=(log,), name="window lines", daemon=True).start()

    def _read(self, log: Path) -> None:
        assert self._process.stderr is not None
        with log.open("w") as kept:
            for line in self._process.stderr:
                kept.write(line)
                kept.flush()
                self.lines.append(line.rstrip("\n"))

    def wait_for(self, word: str, after: int = 0, ending: str = "", timeout_s: float = 900) -> list[str]:
        """The first line from `after` on that begins with `word` (and ends with `ending`), split into
        its words."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if line.startswith(word + " ") and line.endswith(ending):
                    return line.split(" ", 2)
            if self._process.poll() is not None:
                raise SystemExit(f"the window ended (status {self._process.returncode}): see its log")
            time.sleep(0.05)
        raise SystemExit(f"the window said no {word} in {timeout_s:.0f} s")

    def close(self) -> int:
        self._process.terminate()
        return self._process.wait(60)


@dataclass(frozen=True)
class Turn:
    question: str
    ended: float  # time.monotonic() when the question's last sound was played into the microphone
    replied: float  # ... AFTER_S after the window said the reply's speech had ended
    status: str  # the status bar's speeds at the turn's end
    load: float  # the 1-minute load average as the question was asked


def speaking_to_the_limit(bundle: Bundle, folder: Path) -> Path:
    """A copy of `bundle` whose Talker never picks its stop codes (codec pad and eos): their rows of the
    codec head are zeroed and the others scaled by STOP_CODES_SCALE, so that each reply speaks to the
    worker's code limit (4096 codes, 82 s), as a long reply does. The tiny bundle's own Talker mostly
    stops after 0.1 to 2.2 s, too short for gaps to show."""
    root = Path(shutil.copytree(bundle.root, folder / "speaking-to-the-limit", dirs_exist_ok=True))
    talker = root / bundle.files["talker"].path
    weights = load_file(str(talker))
    head = weights["talker.codec_head.weight"] * STOP_CODES_SCALE  # (codes, hidden)
    head[[bundle.codec["pad"], bundle.codec["eos"]]] = 0.0
    weights["talker.codec_head.weight"] = head
    save_file(weights, str(talker), metadata={"format": "pt"})
    files = {part: root / entry.path for part, entry in bundle.files.items()}
    write_manifest(
        root, files, bundle.config, bundle.tokens, bundle.codec, bundle.voices, bundle.thinker_dtype,
        bundle.preprocessor,
    )  # fmt: skip
    return root


@contextmanager
def busy_processes(count: int) -> Iterator[None]:
    processes = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


@contextmanager
def zeros_into(server: SoundServer) -> Iterator[None]:
    """Silence played into the speakers, so that their monitor never stalls."""
    with open("/dev/zero", "rb") as zeros:
        player = subprocess.Popen(
            ["pacat", "--playback", f"--device={SPEAKERS}", "--raw", "--format=float32le", f"--rate={RATE}",
             "--channels=1", "--latency-msec=20"],
            env=server.env, stdin=zeros,
        )  # fmt: skip
    try:
        yield
    finally:
        player.terminate()
        player.wait(10)


def ask(window: Window, recording: Recording, env: dict[str, str], button: list[str], question: str,
        folder: Path) -> Turn:  # fmt: skip
    """Hold the talk button while `question` is spoken into the microphone, let go as it ends, and wait
    until the reply has been heard to its end. `env`: the display's and the sound server's."""
    spoken = folder / f"question-{len(list(folder.glob('question-*.wav')))}.wav"
    subprocess.run(["espeak-ng", "-w", str(spoken), question], check=True)
    said = len(window.lines)
    subprocess.run(["xdotool", "mousemove", *button, "mousedown", "1"], env=env, check=True)
    time.sleep(0.4)  # the microphone opens
    load = os.getloadavg()[0]
    play = ["pacat", "--playback", f"--device={FEED}", "--latency-msec=20", str(spoken)]
    subprocess.run(play, env=env, check=True)  # returns once it was played
    ended = time.monotonic()
    subprocess.run(["xdotool", "mouseup", "1"], env=env, check=True)
    window.wait_for("STATUS", after=said)  # the turn has ended; its speech plays on
    silent = float(window.wait_for("SPEAKING", after=said, ending=" 0")[1])
    recording.wait_until(silent + AFTER_S)
    statuses = [line for line in window.lines[said:] if line.startswith("STATUS ")]
    return Turn(question, ended, silent + AFTER_S, statuses[-1].split(" ", 2)[2], load)


def report(turn: Turn, number: int, heard: np.ndarray, recording: Recording, gap_s: float) -> str:
    reply = heard[recording.index_at(turn.ended) : recording.index_at(turn.replied)]
    sound = np.flatnonzero(np.abs(reply) >= SILENT)
    if not sound.size:
        return f"turn {number} (load {turn.load:.1f}): no sound; status bar: {turn.status}"
    first_audio = recording.time_of(recording.index_at(turn.ended) + int(sound[0])) - turn.ended
    gaps = silent_runs(reply, RATE, gap_s)
    return (
        f"turn {number} (load {turn.load:.1f}): first audio {first_audio:.2f} s after the question's end; "
        f"{(sound[-1] - sound[0]) / RATE:.1f} s of speech, {len(gaps)} gaps of {gap_s * 1000:.0f} ms or more "
        f"({sum(gaps):.2f} s in all, the longest {max(gaps, default=0.0):.2f} s); status bar: {turn.status}"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="the model bundle's folder")
    parser.add_argument("--turns", type=int, default=5, help="spoken questions (default: 5)")
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside it (default: 2)")
    parser.add_argument("--gap", type=float, default=0.05, help="the shortest gap, in s (default: 0.05)")
    parser.add_argument("--out", type=Path, help="where its files go (default: a new temporary folder)")
    parser.add_argument(
        "--device-buffer",
        help="the speakers' device buffer in s, or high: PortAudio's default, as before DEVICE_BUFFER_S "
        "(default: the app's)",
    )
    parser.add_argument(
        "--to-the-limit",
        action="store_true",
        help="a copy of the bundle whose replies speak to the code limit (82 s): see speaking_to_the_limit",
    )
    args = parser.parse_args(argv)
    folder = args.out or Path(tempfile.mkdtemp(prefix="omnidesk-trial-"))
    (folder / "pulse").mkdir(parents=True, exist_ok=True)
    bundle = Bundle.open(Path(args.bundle))
    root = speaking_to_the_limit(bundle, folder) if args.to_the_limit else bundle.root
    with ExitStack() as stack:
        server = SoundServer(folder / "pulse")
        stack.callback(server.stop)
        display = stack.enter_context(x_screen("1600x1000x24"))
        stack.enter_context(zeros_into(server))
        env = dict(server.env, DISPLAY=display, QT_QPA_PLATFORM="xcb", PYTHONPATH=os.getcwd())
        for name in ("CONFIG", "DATA", "STATE", "CACHE"):  # the window's own settings, history and log
            env[f"XDG_{name}_HOME"] = str(folder / name.lower())
        recording = Recording(server.env)
        window = Window(str(root), args.device_buffer, env, folder / "window.log")
        stack.callback(window.close)
        button = window.wait_for("TALK")[1:]
        with busy_processes(args.busy):
            time.sleep(3.0)  # the load settles
            turns = [
                ask(window, recording, env, button, QUESTIONS[n % len(QUESTIONS)], folder)
                for n in range(args.turns)
            ]
        heard = recording.stop()
    np.save(folder / "speakers.npy", heard)
    print(f"CPU: {cpu_name()}; {args.busy} busy processes; files in {folder}")
    for number, turn in enumerate(turns, 1):
        print(report(turn, number, heard, recording, args.gap))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
