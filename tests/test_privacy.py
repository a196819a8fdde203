"""Omnidesk makes no network connection on its own: only downloads the user starts reach out."""

from __future__ import annotations

import subprocess
import sys

from model.files.bundle import Bundle

# Runs before the program: every way to open a network connection raises instead.
NO_NETWORK = """
import socket, sys

class NetworkBlocked(RuntimeError):
    pass

def refuse(*args, **kwargs):
    raise NetworkBlocked(f"network access attempted: {args!r}")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
"""

ASK = (
    NO_NETWORK
    + """
from app.cli.main import main
sys.exit(main(["ask", "--models", sys.argv[1], "--max-tokens", "8", "--json", "Is anyone listening?"]))
"""
)

WINDOW_TURN = (
    NO_NETWORK
    + """
import os, tempfile
from pathlib import Path
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication
from app.history.store import History
from app.window.main_window import MainWindow
from app.sound.playback import PlaybackState
from app.worker import ConversationWorker
from model.talker import SpeechOptions

class Sink:
    def begin(self): pass
    def write(self, samples): pass
    def finish(self): pass
    def stop(self): pass
    def state(self): return PlaybackState(0, False, 0, False, None, False)

app = QApplication([])
folder = Path(tempfile.mkdtemp())
settings = QSettings(str(folder / "s.ini"), QSettings.Format.IniFormat)
speech = SpeechOptions(max_codes=30)
worker = ConversationWorker(max_tokens=8, speech=speech, sink_factory=lambda rate: Sink())
window = MainWindow(settings, worker, History(folder / "h.sqlite3"))
def ask():
    window.composer.question_box.setPlainText("Is anyone listening?")
    window.composer.send_button.click()
window.model_ready.connect(lambda _: ask())
window.model_unavailable.connect(lambda message: (print(message), app.exit(3)))
window.session.reply_completed.connect(lambda reason: app.exit(0 if reason in ("end", "length") else 4))
QTimer.singleShot(120_000, lambda: app.exit(5))
window.models.load(sys.argv[1])
code = app.exec()
window.close()
sys.exit(code)
"""
)


def run_blocked(script: str, bundle: Bundle) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, str(bundle.root)], capture_output=True, text=True, timeout=300
    )


def test_the_guard_really_blocks():
    result = subprocess.run(
        [sys.executable, "-c", NO_NETWORK + "socket.create_connection(('127.0.0.1', 9))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "network access attempted" in result.stderr


def test_a_question_on_the_command_line_needs_no_network(tiny_bundle: Bundle):
    result = run_blocked(ASK, tiny_bundle)
    assert result.returncode == 0, result.stderr
    assert "network access attempted" not in result.stderr


def test_a_turn_in_the_window_needs_no_network(tiny_bundle: Bundle):
    result = run_blocked(WINDOW_TURN, tiny_bundle)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "network access attempted" not in result.stderr
