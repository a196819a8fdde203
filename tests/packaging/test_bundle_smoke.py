"""The built app (PyInstaller, one folder) starts on a virtual X screen and answers one text turn.

Builds dist/omnidesk with packaging/build.py unless a build newer than every source
file is already there (a build takes about 6 minutes on 2 cores). Slow: pytest -m slow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model.files.bundle import Bundle
from tests.fixtures.x_server import x_screen
from tests.packaging.test_selftest import OK_LINE

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dist" / "omnidesk" / "omnidesk"
SOURCES = [ROOT / "app", ROOT / "model", ROOT / "packaging", ROOT / "assets" / "icons"]

pytestmark = pytest.mark.slow


def newest_source() -> float:
    files = [f for s in SOURCES for f in s.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
    return max(f.stat().st_mtime for f in files)


@pytest.fixture(scope="module")
def app() -> Path:
    if not APP.exists() or APP.stat().st_mtime < newest_source():
        build = subprocess.run(
            ["nice", "-n", "19", sys.executable, str(ROOT / "packaging" / "build.py")], timeout=3600
        )
        assert build.returncode == 0, "packaging/build.py failed: its output is above"
    return APP


def run_app(app: Path, bundle: Bundle, tmp_path: Path, wrapper: tuple[str, ...], **env: str):
    """The app's selftest as a user's desktop starts it: no Python environment, settings of its own."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "QT_"))}
    clean.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"), **env)
    started = time.perf_counter()
    result = subprocess.run(
        [*wrapper, str(app), "--selftest", "--models", str(bundle.root)],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean,
        cwd=tmp_path,
    )
    seconds = time.perf_counter() - started  # perf_counter: start of the process to its exit
    print(result.stdout, result.stderr, f"{seconds:.1f} s from start to exit", sep="\n")
    assert result.returncode == 0
    match = OK_LINE.fullmatch(result.stdout.strip())
    assert match is not None, result.stdout
    return match


def test_the_built_app_answers_on_a_virtual_x_screen(app: Path, tiny_bundle: Bundle, tmp_path: Path):
    with x_screen() as display:
        assert run_app(app, tiny_bundle, tmp_path, (), DISPLAY=display)["platform"] == "xcb"


def test_the_built_app_answers_offscreen(app: Path, tiny_bundle: Bundle, tmp_path: Path):
    assert run_app(app, tiny_bundle, tmp_path, (), QT_QPA_PLATFORM="offscreen")["platform"] == "offscreen"


def test_the_built_app_carries_llama_cpp_and_qt_plugins(app: Path):
    internal = app.parent / "_internal"
    libraries = {p.name for p in (internal / "llama_cpp" / "lib").iterdir()}
    assert {"libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu.so", "libmtmd.so"} <= libraries
    plugins = internal / "PySide6" / "Qt" / "plugins"
    assert {"libqxcb.so", "libqoffscreen.so"} <= {p.name for p in (plugins / "platforms").iterdir()}
    assert (plugins / "imageformats" / "libqjpeg.so").exists()
    assert not list(internal.glob("cv2/qt")), "opencv's own Qt would clash with PySide6"


def test_the_built_app_adds_itself_to_the_menu(app: Path, tmp_path: Path):
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "share"))
    result = subprocess.run(
        ["sh", str(app.parent / "install-desktop-entry.sh")], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    entry = (tmp_path / "share" / "applications" / "omnidesk.desktop").read_text()
    assert f'Exec="{app}"' in entry.splitlines()
    assert (tmp_path / "share" / "icons" / "hicolor" / "512x512" / "apps" / "omnidesk.png").exists()
