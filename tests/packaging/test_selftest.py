"""`omnidesk --selftest` run as an installer runs it: a separate process, on the tiny bundle."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli.selftest import _stage
from model.errors import OmnideskError
from model.files.bundle import Bundle
from model.files.store import MODELS_DIR_VARIABLE
from tests.fixtures.x_server import foreign_x_servers, x_screen
from tests.helpers import on_small_filesystem

OK_LINE = re.compile(
    r"omnidesk selftest ok: Qt (?P<platform>\w+), history (?P<history>\S+), llama\.cpp \w+, "
    r"bundle (?P<bundle>\S+), "
    r"(?P<tokens>\d+) reply tokens \((end|length)\), \d+\.\d s"
)


def selftest(
    *args: str | Path,
    home: Path,
    platform: str | None = "offscreen",
    wrapper: tuple[str, ...] = (),
    environ: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`omnidesk --selftest` with settings, data and models folders of its own under `home`."""
    env = dict(os.environ if environ is None else environ)
    env.pop("QT_QPA_PLATFORM", None)
    if platform is not None:
        env["QT_QPA_PLATFORM"] = platform
    env["XDG_CONFIG_HOME"] = str(home / "config")
    env["XDG_DATA_HOME"] = str(home / "data")
    env.setdefault(MODELS_DIR_VARIABLE, str(home / "models"))
    return subprocess.run(
        [*wrapper, sys.executable, "-m", "app.cli.main", "--selftest", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def assert_ok(result: subprocess.CompletedProcess[str], platform: str, bundle: Path) -> None:
    print(result.stdout, result.stderr)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    match = OK_LINE.fullmatch(lines[0])
    assert match is not None, lines[0]
    assert match["platform"] == platform and Path(match["bundle"]) == bundle
    assert Path(match["history"]).name == "history.sqlite3"
    assert 1 <= int(match["tokens"]) <= 8


def assert_fails(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    print(result.stdout, result.stderr)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    for text in expected:
        assert text in lines[0]


class TestSelftest:
    def test_answers_one_turn_offscreen(self, tiny_bundle: Bundle, tmp_path: Path):
        assert_ok(selftest("--models", tiny_bundle.root, home=tmp_path), "offscreen", tiny_bundle.root)

    def test_starts_qt_on_a_real_x_screen(self, tiny_bundle: Bundle, tmp_path: Path):
        with x_screen() as display:
            environ = dict(os.environ, DISPLAY=display)
            result = selftest("--models", tiny_bundle.root, home=tmp_path, platform=None, environ=environ)
        assert_ok(result, "xcb", tiny_bundle.root)

    def test_starts_on_a_real_x_screen_beside_other_x_servers(self, tiny_bundle: Bundle, tmp_path: Path):
        """X servers on :99 to :108 whose lock files are out of sight: `xvfb-run -a` tries exactly
        those numbers and then runs its command on a display with no server."""
        with foreign_x_servers(range(99, 109)), x_screen() as display:
            environ = dict(os.environ, DISPLAY=display)
            result = selftest("--models", tiny_bundle.root, home=tmp_path, platform=None, environ=environ)
        assert_ok(result, "xcb", tiny_bundle.root)

    def test_uses_the_bundle_the_window_remembers(self, tiny_bundle: Bundle, tmp_path: Path):
        settings = tmp_path / "config" / "Omnidesk" / "Omnidesk.conf"
        settings.parent.mkdir(parents=True)
        settings.write_text(f"[models]\nfolder={tiny_bundle.root}\n", encoding="utf-8")
        assert_ok(selftest(home=tmp_path), "offscreen", tiny_bundle.root)

    def test_else_uses_a_bundle_of_the_models_folder(self, tiny_bundle: Bundle, tmp_path: Path):
        stored = Path(shutil.copytree(tiny_bundle.root, tmp_path / "models" / "tiny"))
        assert_ok(selftest(home=tmp_path), "offscreen", stored)

    def test_without_any_bundle_says_how_to_get_one(self, tmp_path: Path):
        result = selftest(home=tmp_path)
        assert_fails(result, "selftest failed at model bundle", "no model bundle", "--models")

    def test_a_damaged_bundle_fails_at_the_bundle(self, tiny_bundle: Bundle, tmp_path: Path):
        damaged = Path(shutil.copytree(tiny_bundle.root, tmp_path / "damaged"))
        thinker = damaged / tiny_bundle.files["thinker"].path
        thinker.write_bytes(thinker.read_bytes()[:1000])
        result = selftest("--models", damaged, home=tmp_path)
        assert_fails(result, "selftest failed at model bundle", str(thinker), "incomplete or damaged")

    def test_a_missing_qt_platform_fails_at_qt(self, tiny_bundle: Bundle, tmp_path: Path):
        result = selftest("--models", tiny_bundle.root, home=tmp_path, platform="nosuchscreen")
        assert_fails(result, "selftest failed at Qt", "no Qt platform plugin for 'nosuchscreen'")


class TestHistoryCheck:
    """The window's history must open and take writes; the selftest says when it would not."""

    def test_a_damaged_history_fails_at_the_history_and_is_left_as_it_is(
        self, tiny_bundle: Bundle, tmp_path: Path
    ):
        history = tmp_path / "data" / "Omnidesk" / "history.sqlite3"
        history.parent.mkdir(parents=True)
        history.write_bytes(b"not a database at all" * 100)
        result = selftest("--models", tiny_bundle.root, home=tmp_path)
        assert_fails(result, "selftest failed at history", str(history), "damaged", "file is not a database")
        assert history.read_bytes() == b"not a database at all" * 100
        assert list(history.parent.iterdir()) == [history]

    def test_a_data_folder_that_cannot_be_made(self, tiny_bundle: Bundle, tmp_path: Path):
        (tmp_path / "data").write_text("a file where the data folder should be")
        result = selftest("--models", tiny_bundle.root, home=tmp_path)
        assert_fails(result, "selftest failed at history", "cannot be written", "Not a directory")

    def test_a_full_disk(self, tiny_bundle: Bundle, tmp_path: Path):
        env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config"))
        env["QT_QPA_PLATFORM"] = "offscreen"
        script = "import sys; from app.cli.main import main; sys.exit(main(sys.argv[1:]))"
        result = on_small_filesystem(
            tmp_path / "data", script, "--selftest", "--models", str(tiny_bundle.root), size_kib=512, env=env
        )
        assert_fails(result, "selftest failed at history", "cannot be written", "the disk is full")


class TestNoDisplay:
    """Qt aborts the process when its platform has no display: the selftest says so instead."""

    def test_xcb_without_display(self, tiny_bundle: Bundle, tmp_path: Path):
        env_home = dict(os.environ)
        env_home.pop("DISPLAY", None)
        result = selftest("--models", tiny_bundle.root, home=tmp_path, platform="xcb", environ=env_home)
        assert_fails(result, "selftest failed at Qt", "xcb", "DISPLAY is not set", "xvfb-run")

    def test_an_x_display_that_does_not_answer(self, tiny_bundle: Bundle, tmp_path: Path):
        with x_screen() as display:
            pass  # its number is free again: no server answers there
        environ = dict(os.environ, DISPLAY=display)
        result = selftest("--models", tiny_bundle.root, home=tmp_path, platform="xcb", environ=environ)
        assert_fails(result, "selftest failed at Qt", f"the X display {display} does not answer")


def test_an_unexpected_exception_names_the_stage_and_the_error():
    def broken() -> None:
        raise OSError("libllama.so: cannot open shared object file")

    with pytest.raises(OmnideskError, match=r"^selftest failed at text turn: OSError: libllama\.so: cannot"):
        _stage("text turn", broken)
