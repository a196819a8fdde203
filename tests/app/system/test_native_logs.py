"""What ALSA, PortAudio and OpenCV print from C goes to the log file, never the terminal, and
Omnidesk's own lines still reach it; with a real PulseAudio daemon: underruns, `ask --play` and
`chat --play`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest

from app.system.native_logs import ALSA_LIBRARY, stderr_to_log
from model.files.bundle import Bundle
from tests.app.cli.test_main import omnidesk

needs_alsa = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ALSA is Linux's")

# ALSA errors on demand: opening a PCM that does not exist, and a card that does not exist.
UNKNOWN_PCM = f"""
import ctypes
asound = ctypes.CDLL("{ALSA_LIBRARY}")
pcm = ctypes.c_void_p()
assert asound.snd_pcm_open(ctypes.byref(pcm), b"omnidesk_no_such_pcm", 0, 0) < 0
assert asound.snd_pcm_open(ctypes.byref(pcm), b"hw:47,3", 0, 0) < 0
"""
LOG_TO_STDOUT = (
    "import logging, sys; logging.basicConfig(stream=sys.stdout, format='%(name)s: %(message)s')\n"
)


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


@needs_alsa
class TestAlsa:
    def test_its_error_lines_go_to_the_log_not_stderr(self):
        plain = python(UNKNOWN_PCM)
        assert "ALSA lib pcm.c:" in plain.stderr and "Unknown PCM" in plain.stderr, "else this proves nothing"
        routed = python(
            LOG_TO_STDOUT
            + "from app.system.native_logs import route_alsa_errors\nroute_alsa_errors()\n"
            + UNKNOWN_PCM
        )
        assert routed.returncode == 0 and routed.stderr == ""
        unknown, card = routed.stdout.splitlines()
        assert unknown.startswith("alsa: ALSA lib pcm.c:")
        assert unknown.endswith(":(snd_pcm_open_noupdate) Unknown PCM omnidesk_no_such_pcm"), "%s filled in"
        assert card.endswith(":(snd_config_get_card) Cannot get card index for 47"), "%d filled in"

    def test_importing_sounddevice_routes_them(self):
        code = (
            LOG_TO_STDOUT
            + "from app.sound.devices import sounddevice_module\nsounddevice_module()\n"
            + UNKNOWN_PCM
        )
        routed = python(code)
        assert routed.stderr == "" and "Unknown PCM" in routed.stdout

    def test_the_command_line_shows_them_only_with_verbose(self, tmp_path):
        code = textwrap.dedent(
            """
            import logging, sys
            from app.system.logs import setup_terminal_logging
            setup_terminal_logging(sys.argv[1] == "-v")
            logging.getLogger("alsa").warning("ALSA lib pcm.c:8570:(snd_pcm_recover) underrun occurred")
            logging.getLogger("portaudio").warning("Expression 'r' failed")
            logging.getLogger("omnidesk").warning("ours")
            """
        )
        for verbose in ("", "-v"):
            result = subprocess.run(
                [sys.executable, "-c", code, verbose],
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
            )
            shown = [line.split(": ", 1)[1] for line in result.stderr.splitlines()]
            if verbose:
                assert shown == [
                    "ALSA lib pcm.c:8570:(snd_pcm_recover) underrun occurred",
                    "Expression 'r' failed",
                    "ours",
                ]
            else:
                assert shown == ["ours"], "Omnidesk's own lines still reach the terminal"
        logged = next(tmp_path.rglob("omnidesk.log")).read_text()
        assert logged.count("underrun occurred") == 2 and logged.count("Expression 'r' failed") == 2


class TestStderrToLog:
    @needs_alsa
    def test_what_c_writes_meanwhile_is_logged_and_the_terminal_comes_back(self, capfd, caplog):
        caplog.set_level(logging.WARNING, "portaudio")
        with stderr_to_log():
            os.write(2, b"Expression 'r' failed in 'src/hostapi/alsa/pa_linux_alsa.c', line: 2097\n\n")
        os.write(2, b"after\n")
        assert capfd.readouterr().err == "after\n"
        assert [r.getMessage() for r in caplog.records if r.name == "portaudio"] == [
            "Expression 'r' failed in 'src/hostapi/alsa/pa_linux_alsa.c', line: 2097"
        ]

    @needs_alsa
    def test_the_terminal_comes_back_after_an_error_too(self, capfd):
        with pytest.raises(RuntimeError), stderr_to_log():
            raise RuntimeError("no device")
        os.write(2, b"after\n")
        assert capfd.readouterr().err == "after\n"


STARVED = LOG_TO_STDOUT + textwrap.dedent(
    """
    import logging, time
    from app.sound.devices import sounddevice_module
    sounddevice = sounddevice_module()
    underruns = []
    class Count(logging.Handler):
        def emit(self, record):
            underruns.append(record.getMessage())
    logging.getLogger("alsa").addHandler(Count())
    calls = [0]
    def late(out, frames, time_info, status):  # the callback falls behind: ALSA underruns
        calls[0] += 1
        if calls[0] % 2 == 0:
            time.sleep(0.3)
        out.fill(0)
    with sounddevice.OutputStream(samplerate=24000, channels=1, callback=late, blocksize=480, latency="low"):
        deadline = time.monotonic() + 20
        while not underruns and time.monotonic() < deadline:
            time.sleep(0.1)
    print("underruns:", len(underruns))
    """
)


@needs_alsa
class TestWithPulseAudio:
    def test_underruns_go_to_the_log(self, sound_server):
        result = python(STARVED)
        assert ":(snd_pcm_recover) underrun occurred" in result.stdout, result.stdout + result.stderr
        assert result.stderr == ""

    def test_ask_and_chat_play_without_a_line_from_alsa(self, sound_server, tiny_bundle: Bundle):
        common = ("--models", tiny_bundle.root, "--play", "--max-tokens", "12", "--max-codes", "40")
        asked = omnidesk("ask", *common, "Tell me a story")
        # Only our own lines (on a busy machine: that speech is made slower than it plays).
        assert asked.returncode == 0, asked.stderr
        assert all(line.startswith("omnidesk: ") for line in asked.stderr.splitlines()), asked.stderr
        chatted = omnidesk("chat", *common, stdin="Hello\nAnd again\n/quit\n")
        assert chatted.returncode == 0
        banner = "Omnidesk: ask anything. Ctrl-C stops a reply; Ctrl-D (or /quit) leaves."
        others = [line for line in chatted.stderr.splitlines() if line != banner]
        assert banner in chatted.stderr.splitlines()
        assert all(line.startswith("omnidesk: ") for line in others), chatted.stderr
