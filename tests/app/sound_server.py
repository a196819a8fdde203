"""A real sound server for tests: a private PulseAudio daemon whose speakers are a null sink (what
is played there is recorded from its monitor) and whose microphone is the monitor of another null
sink, remapped as a source, into which tests play what the microphone hears. A silence feed keeps
that monitor flowing (a null sink's monitor stalls when nothing plays into it). Clients find it
through PULSE_SERVER; the user's own sound server is never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

SPEAKERS, FEED, MICROPHONE = "speakers", "micfeed", "virtmic"
MODULES = [
    "module-native-protocol-unix auth-anonymous=1 socket={socket}",
    f"module-null-sink sink_name={SPEAKERS} sink_properties=device.description=Desk_speakers",
    f"module-null-sink sink_name={FEED} sink_properties=device.description=Microphone_feed",
    f"module-remap-source source_name={MICROPHONE} master={FEED}.monitor "
    "source_properties=device.description=Virtual_microphone",
]
PROGRAMS = ("pulseaudio", "pactl", "pacat")


def available() -> bool:
    return all(shutil.which(program) for program in PROGRAMS)


class SoundServer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.socket = folder / "native"
        self.env = {**os.environ, "PULSE_SERVER": f"unix:{self.socket}", "HOME": str(folder)}
        self.env.pop("PULSE_SINK", None)
        self.env.pop("PULSE_SOURCE", None)
        arguments = ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit"]
        for module in MODULES:
            arguments += ["-L", module.format(socket=self.socket)]
        arguments.append(f"--log-target=file:{folder / 'pulseaudio.log'}")
        server_env = {**self.env, "XDG_RUNTIME_DIR": str(folder), "PULSE_RUNTIME_PATH": str(folder)}
        self._daemon = subprocess.Popen(arguments, env=server_env, stdin=subprocess.DEVNULL)
        self._feeds: list[subprocess.Popen] = []
        deadline = time.monotonic() + 20
        while self.pactl("info").returncode != 0:
            if self._daemon.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"PulseAudio did not start: see {folder / 'pulseaudio.log'}")
            time.sleep(0.1)
        self.pactl("set-default-sink", SPEAKERS)
        self.pactl("set-default-source", MICROPHONE)
        self._feeds.append(self._pacat("--playback", FEED, 16_000, stdin=subprocess.PIPE))
        threading.Thread(target=self._feed_silence, name="silence feed", daemon=True).start()

    def _feed_silence(self) -> None:
        """Zeros into the microphone's sink, as fast as pacat plays them (its pipe blocks the writes)."""
        feed = self._feeds[0]
        assert feed.stdin is not None
        block = np.zeros(1600, np.float32).tobytes()  # 0.1 s
        try:
            while feed.poll() is None:
                feed.stdin.write(block)
        except (BrokenPipeError, ValueError, OSError):  # the feed was stopped
            return

    def pactl(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["pactl", *arguments], env=self.env, capture_output=True, text=True, timeout=10)

    def _pacat(self, mode: str, device: str, rate: int, **kwargs) -> subprocess.Popen:
        return pacat(mode, device, rate, self.env, **kwargs)

    def say(self, samples: np.ndarray, rate: int = 16_000) -> None:
        """Play `samples` into the microphone (returns once pacat has played them)."""
        say(samples, self.env, rate)

    def record_speakers(self, rate: int = 24_000) -> subprocess.Popen:
        """A recorder of what the speakers play; `stop_recording` gives the samples."""
        return self._pacat("--record", f"{SPEAKERS}.monitor", rate, stdout=subprocess.PIPE)

    @staticmethod
    def stop_recording(recorder: subprocess.Popen) -> np.ndarray:
        recorder.terminate()
        data, _ = recorder.communicate(timeout=10)
        return np.frombuffer(data[: len(data) // 4 * 4], np.float32)

    def stop(self) -> None:
        for process in [*self._feeds, self._daemon]:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def pacat(mode: str, device: str, rate: int, env: dict[str, str], **kwargs) -> subprocess.Popen:
    """pacat playing into or recording from `device` of the server that `env`'s PULSE_SERVER names."""
    return subprocess.Popen(
        ["pacat", mode, f"--device={device}", "--format=float32le", f"--rate={rate}", "--channels=1"],
        env=env,
        **kwargs,
    )


def say(samples: np.ndarray, env: dict[str, str], rate: int = 16_000) -> None:
    """Play `samples` into the microphone of the server that `env` names (from another process, say);
    returns once pacat has played them."""
    player = pacat("--playback", FEED, rate, env, stdin=subprocess.PIPE)
    player.communicate(np.asarray(samples, np.float32).tobytes(), timeout=60)
