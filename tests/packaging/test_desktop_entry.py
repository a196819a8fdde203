"""The Linux desktop entry and icons: valid by freedesktop's validator, installed where menus look."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY = ROOT / "packaging" / "linux" / "omnidesk.desktop"
INSTALL = ROOT / "packaging" / "linux" / "install-desktop-entry.sh"
ICONS = ROOT / "assets" / "icons"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def install(executable: Path, data: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_DATA_HOME=str(data))
    return subprocess.run(["sh", str(INSTALL), str(executable)], capture_output=True, text=True, env=env)


@pytest.fixture
def executable(tmp_path: Path) -> Path:
    program = tmp_path / "My Apps" / "omnidesk" / "omnidesk"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return program


def test_the_entry_is_valid():
    result = subprocess.run(["desktop-file-validate", str(ENTRY)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout


@pytest.mark.parametrize("size", SIZES)
def test_each_png_icon_has_its_size(size):
    header = (ICONS / f"omnidesk-{size}.png").read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (size, size)


def test_install_puts_the_entry_and_icons_where_menus_look(executable: Path, tmp_path: Path):
    data = tmp_path / "share"
    result = install(executable, data)
    assert result.returncode == 0, result.stderr
    installed = data / "applications" / "omnidesk.desktop"
    assert f'Exec="{executable}"' in installed.read_text().splitlines()
    assert subprocess.run(["desktop-file-validate", str(installed)], capture_output=True).returncode == 0
    for size in SIZES:
        icon = data / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "omnidesk.png"
        assert icon.read_bytes() == (ICONS / f"omnidesk-{size}.png").read_bytes()
    assert (data / "icons" / "hicolor" / "scalable" / "apps" / "omnidesk.svg").exists()


def test_install_refuses_what_is_not_a_program(tmp_path: Path):
    result = install(tmp_path / "nothing-here", tmp_path / "share")
    assert result.returncode == 1 and "is not an executable program" in result.stderr
    assert not (tmp_path / "share").exists()


def test_install_refuses_a_path_the_entry_cannot_quote(tmp_path: Path):
    program = tmp_path / "100% done" / "omnidesk"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    result = install(program, tmp_path / "share")
    assert result.returncode == 1 and "move the app to a folder" in result.stderr
