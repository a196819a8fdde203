"""What a user can type that the runtime cannot take: option values, undecodable text, an --out that
cannot be written, Ctrl-C anywhere, a full disk. Each ends in one line and a status, never a traceback,
an abort or a segfault; llama.cpp's own lines stay in the log file."""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Callable
from pathlib import Path

import pytest

from app.cli.exit_status import EXIT_INTERRUPTED
from app.system.logs import setup_terminal_logging
from model.errors import OmnideskError
from model.files.bundle import Bundle
from model.thinker_types import ThinkerOptions
from tests.app.cli.test_main import assert_one_line_error, copy_bundle, omnidesk, rewrite_manifest
from tests.fixtures.gguf_surgery import rewrite_gguf
from tests.helpers import on_small_filesystem


def run_cli(*args: str | bytes | Path, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    """`omnidesk ARGS` with bytes passed as they are (arguments and standard input)."""
    result = subprocess.run(
        [sys.executable, "-m", "app.cli.main", *(a if isinstance(a, bytes) else str(a) for a in args)],
        capture_output=True,
        timeout=300,
        input=stdin,
        check=False,
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )


class TestOptionValues:
    @pytest.mark.parametrize(
        ("option", "expected"),
        [
            (["--context", "-1"], "a context of -1 tokens"),
            (["--context", "0"], "give 1 or more"),
            (["--context", "2147483647"], "holds at most 32768"),
            (["--threads", "100000"], "llama.cpp takes 1 to 512"),
            (["--threads", "0"], "0 threads"),
            (["--gpu-layers", "-2"], "-2 GPU layers"),
            (["--seed", str(2**70)], "seed 1180591620717411303424 is out of range"),
            (["--seed", "-1"], "seed -1 is out of range"),
        ],
    )
    def test_an_extreme_value_is_one_line(self, tiny_bundle: Bundle, option: list[str], expected: str):
        result = omnidesk("ask", "--models", tiny_bundle.root, "--text-only", *option, "hi")
        assert result.returncode == 1, "a clean exit, not a signal"
        assert_one_line_error(result, expected)

    def test_each_is_refused_before_anything_loads(self):
        for bad in ({"n_ctx": -1}, {"n_threads": 10**5}, {"n_gpu_layers": -7}):
            with pytest.raises(OmnideskError):
                ThinkerOptions(**bad)
        assert ThinkerOptions(n_threads=512, n_gpu_layers=-1).n_threads == 512


class TestDefaultContext:
    """With no --context, a model trained on fewer tokens than the default answers in its own context."""

    @pytest.fixture
    def short_bundle(self, tiny_bundle: Bundle, tmp_path: Path) -> Path:
        root = copy_bundle(tiny_bundle, tmp_path)
        short = root / "thinker-short.gguf"
        rewrite_gguf(tiny_bundle.file("thinker"), short, {"qwen2vl.context_length": 4096})
        rewrite_manifest(root, tiny_bundle, short)
        return root

    def test_answers_with_no_context_given(self, short_bundle: Path):
        result = omnidesk("ask", "--models", short_bundle, "--text-only", "--max-tokens", "4", "hi")
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr

    def test_a_context_asked_for_above_the_models_is_refused(self, short_bundle: Path):
        result = omnidesk("ask", "--models", short_bundle, "--text-only", "--context", "8192", "hi")
        assert_one_line_error(result, "a context of 8192 tokens: this model holds at most 4096")


class TestText:
    def test_undecodable_bytes_in_the_question(self, tiny_bundle: Bundle):
        result = run_cli("ask", "--models", tiny_bundle.root, "--text-only", b"what is \xff\xfe this?")
        assert_one_line_error(result, "the question is not valid UTF-8", "byte 0xff at character 9")

    def test_undecodable_bytes_in_the_system_prompt(self, tiny_bundle: Bundle):
        result = run_cli("ask", "--models", tiny_bundle.root, "--text-only", "--system", b"\xc3(", "hi")
        assert_one_line_error(result, "--system is not valid UTF-8", "byte 0xc3")

    @pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
    def test_an_undecodable_chat_line_is_refused_and_the_chat_goes_on(self, tiny_bundle: Bundle, locale):
        env = dict(os.environ, LC_ALL=locale)
        result = subprocess.run(
            [sys.executable, "-m", "app.cli.main", "chat", "--models", str(tiny_bundle.root), "--text-only"]
            + ["--max-tokens", "4"],
            input=b"bad \x80 line\nFine line\n",
            capture_output=True,
            timeout=300,
            env=env,
            check=False,
        )
        stderr = result.stderr.decode("utf-8", "replace")
        print(stderr)
        assert result.returncode == 0 and "Traceback" not in stderr
        assert "that line is not valid UTF-8 text (byte 0x80 at character 5)" in stderr
        assert result.stdout.count(b"omnidesk> ") == 1, "the good line is answered"


class TestOut:
    def test_a_missing_folder_is_refused_before_the_model_loads(self, tmp_path: Path):
        result = omnidesk(
            "ask", "--models", tmp_path / "no bundle here", "--out", tmp_path / "nowhere" / "x.wav", "hi"
        )
        assert_one_line_error(result, "nowhere does not exist")  # not the missing bundle: checked first

    def test_a_folder_in_place_of_the_file(self, tmp_path: Path):
        (tmp_path / "taken.wav").mkdir()
        result = omnidesk("ask", "--models", tmp_path / "no bundle", "--out", tmp_path / "taken.wav", "hi")
        assert_one_line_error(result, "taken.wav is a folder")

    def test_a_disk_that_fills_up_keeps_the_reply_and_the_speech_so_far(self, tiny_bundle: Bundle, tmp_path):
        folder = tmp_path / "small"
        out = folder / "reply.wav"
        script = (
            "import sys, wave; from pathlib import Path; from app.cli.main import main\n"
            "status = main(sys.argv[2:])\n"
            "with wave.open(sys.argv[1]) as w:\n"
            "    print(status, w.getnframes(), Path(sys.argv[1]).stat().st_size, file=sys.stderr)\n"
        )
        args = ["ask", "--models", str(tiny_bundle.root), "--greedy", "--max-tokens", "20"]
        args += ["--max-codes", "120", "--out", str(out), "Say hello"]
        result = on_small_filesystem(folder, script, str(out), *args, size_kib=48)  # 24 kHz speech: 0.5 s
        print(result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert "Traceback" not in result.stderr and len(lines) == 2
        assert lines[0].startswith(f"omnidesk: error: {out}: the disk is full after ")
        status, frames, size = map(int, lines[1].split())
        assert status == 1 and frames > 0
        assert size == 44 + 2 * frames, "the file holds exactly what its header says"
        assert result.stdout.strip(), "the text reply was printed whole"


class TestInterrupt:
    def _start(self, *args: str | Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli.main", *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def _interrupt(self, process: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
        print(err.decode("utf-8", "replace"))
        assert process.returncode == EXIT_INTERRUPTED
        assert b"Traceback" not in err and b"Exception ignored" not in err
        return out, err

    @pytest.mark.parametrize("after_s", [0.3, 1.0, 2.0])
    def test_while_loading(self, tiny_bundle: Bundle, after_s: float):
        """Wherever the interrupt lands before the prompt (imports, the bundle, llama.cpp's loading and
        its log callbacks) `chat` ends at once with 130; once the prompt shows, it gives a new prompt
        as a shell does (and ends when its input does). Which one depends on the machine's speed."""
        process = self._start("chat", "--models", tiny_bundle.root)
        time.sleep(after_s)
        process.send_signal(signal.SIGINT)
        # The end of input only once the press has had its effect (the chat ended, or prompted again):
        # closing standard input at once would race the press (the end of input seen first ends the
        # chat with 0 before the press is read, as a shell would).
        shown = _output_until(process, lambda out: out.count(b"you> ") >= 2, timeout_s=60)
        rest, err = process.communicate(timeout=120)
        out = shown + rest
        print(err.decode("utf-8", "replace"))
        assert b"Traceback" not in err and b"Exception ignored" not in err
        if b"you> " in out:
            assert out == b"you> you> " and process.returncode == 0, "a new prompt, then the end of input"
        else:
            assert process.returncode == EXIT_INTERRUPTED

    def test_during_the_reply_the_speech_file_stays_valid(self, tiny_bundle: Bundle, tmp_path: Path):
        out = tmp_path / "reply.wav"
        process = self._start(
            "ask",
            "--models",
            tiny_bundle.root,
            "--max-tokens",
            "400",
            "--max-codes",
            "800",
            "--out",
            out,
            "hi",
        )
        assert process.stdout is not None
        process.stdout.read(1)  # the reply has begun
        self._interrupt(process)
        with wave.open(str(out)) as wav:
            assert out.stat().st_size == 44 + 2 * wav.getnframes()

    def test_at_the_chat_prompt_gives_a_new_prompt_as_a_shell_does(self, tiny_bundle: Bundle):
        """It had ended the whole chat (exit 130). Twenty times in a row: the kernel hands SIGINT to any
        of the process's threads, and input() lost a press that came before its read began (one in a
        hundred under load, tests/app/cli/test_prompt.py has each case)."""
        process = self._start("chat", "--models", tiny_bundle.root, "--text-only")
        assert process.stdout is not None
        assert process.stdout.read(5) == b"you> "
        for _ in range(20):
            process.send_signal(signal.SIGINT)
            assert select.select([process.stdout], [], [], 30)[0], "a new prompt, at once"
            assert process.stdout.read(5) == b"you> "
        out, err = process.communicate(b"/quit\n", timeout=120)
        print(err.decode("utf-8", "replace"))
        assert process.returncode == 0 and b"Traceback" not in err

    def test_during_a_chat_reply_stops_the_reply_not_the_chat(self, tiny_bundle: Bundle):
        process = self._start("chat", "--models", tiny_bundle.root, "--max-tokens", "400")
        assert process.stdout is not None and process.stdin is not None
        process.stdin.write(b"First\n")
        process.stdin.flush()
        assert process.stdout.read(16).startswith(b"you> omnidesk> ")  # and the reply's first byte
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(b"Second\n", timeout=300)
        print(err.decode("utf-8", "replace"))
        assert process.returncode == 0 and b"Traceback" not in err
        assert out.count(b"omnidesk> ") == 1, "the second question was answered too"


class TestLlamaCppLines:
    def test_stay_in_the_log_file_unless_verbose(self, tiny_bundle: Bundle, tmp_path: Path):
        root = copy_bundle(tiny_bundle, tmp_path)
        # Its layout passes our checks; llama.cpp refuses its tokenizer, with lines of its own.
        broken = rewrite_gguf(
            tiny_bundle.file("thinker"), root / "broken.gguf", fields={"tokenizer.ggml.model": "bogus"}
        )
        rewrite_manifest(root, tiny_bundle, broken)
        state = tmp_path / "state"
        env = dict(os.environ, XDG_STATE_HOME=str(state))
        quiet = subprocess.run(
            [sys.executable, "-m", "app.cli.main", "ask", "--models", str(root), "hi"],
            capture_output=True, text=True, timeout=300, env=env, check=False,
        )  # fmt: skip
        assert_one_line_error(quiet, "broken.gguf")
        log = (state / "Omnidesk" / "log" / "omnidesk.log").read_text()
        assert "ERROR" in log and "llama.cpp:" in log, "llama.cpp's own lines are kept in the log"
        verbose = subprocess.run(
            [sys.executable, "-m", "app.cli.main", "-v", "ask", "--models", str(root), "hi"],
            capture_output=True, text=True, timeout=300, env=env, check=False,
        )  # fmt: skip
        assert "llama.cpp:" in verbose.stderr and verbose.stderr.splitlines()[-1].startswith(
            "omnidesk: error"
        )

    def test_the_routing_in_process(self, tmp_path: Path, monkeypatch, capsys):
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
        root, llama = logging.getLogger(), logging.getLogger("llama.cpp")
        before, level, llama_level = list(root.handlers), root.level, llama.level
        try:
            setup_terminal_logging(verbose=False)
            logging.getLogger("llama.cpp").error("llama_model_load: error loading model")
            logging.getLogger("omnidesk.test").warning("ours")
            for handler in root.handlers:
                handler.flush()
            stderr = capsys.readouterr().err
            assert "ours" in stderr and "llama_model_load" not in stderr
            assert "llama_model_load" in (tmp_path / "Omnidesk" / "log" / "omnidesk.log").read_text()
        finally:
            for handler in root.handlers[len(before) :]:
                handler.close()
                root.removeHandler(handler)
            root.setLevel(level)
            llama.setLevel(llama_level)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Qt picks X11 or Wayland on Linux only")
def test_the_window_without_a_display_is_one_line(tmp_path: Path):
    """Qt aborts (SIGABRT) when its platform finds no display; the window says so first."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"))
    result = subprocess.run(
        [sys.executable, "-m", "app.cli.main"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert_one_line_error(result, "no display (DISPLAY is not set)", "xvfb-run")


def _output_until(process: subprocess.Popen[bytes], done: Callable[[bytes], bool], timeout_s: float) -> bytes:
    """What `process` writes to its standard output until it ends, `done` holds for it, or `timeout_s`."""
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    out = b""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and not done(out) and time.monotonic() < deadline:
        out += process.stdout.read() or b""
        time.sleep(0.02)
    os.set_blocking(process.stdout.fileno(), True)
    return out
