"""Qt's own lines (font warnings) reach the log file, not the terminal that started the window."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
from PySide6.QtCore import qWarning
from app.system.logs import setup_terminal_logging
from app.system.qt_messages import route_qt_messages
setup_terminal_logging(verbose={verbose})
route_qt_messages()
qWarning("QFont::fromString: Invalid description 'Sans,10'")
"""


def run(verbose: bool, state: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_STATE_HOME=str(state))
    command = [sys.executable, "-c", SCRIPT.format(verbose=verbose)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def test_qt_warnings_go_to_the_log_not_the_terminal(tmp_path):
    result = run(False, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "QFont" not in result.stderr, "the terminal stays quiet"
    log = (tmp_path / "Omnidesk" / "log" / "omnidesk.log").read_text()
    assert "WARNING" in log and "qt: default: QFont::fromString" in log


def test_verbose_shows_them_on_the_terminal(tmp_path):
    assert "QFont::fromString" in run(True, tmp_path).stderr
