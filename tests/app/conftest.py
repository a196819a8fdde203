"""Qt runs offscreen in tests; settings go to a temporary file; threads switch as in the app."""

from __future__ import annotations

import os
import sys

import pytest

from tests.app.serve.live import engine, url  # noqa: F401  (a served tiny model, for the serve and remote tests)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def switch_threads_as_the_app_does():
    """The app's start-up sets the GIL's switch interval (process-wide); here it is set for each test
    and put back after, so that the window is tested as it runs without leaking into other tests."""
    from app.window.launch import switch_threads_often

    previous = sys.getswitchinterval()
    switch_threads_often()
    yield
    sys.setswitchinterval(previous)


@pytest.fixture
def settings(tmp_path):
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def history_store(tmp_path):
    from app.history.store import History

    store = History(tmp_path / "history.sqlite3")
    yield store
    store.close()


@pytest.fixture
def questions(monkeypatch) -> list:
    """The questions (model.media.Question) that reach the pipeline, and are answered by it."""
    from model.pipeline import Conversation

    asked: list = []
    turn = Conversation.turn

    def spy(self, question, options, heard=None):
        asked.append(question)
        return turn(self, question, options, heard)

    monkeypatch.setattr(Conversation, "turn", spy)
    return asked


@pytest.fixture(scope="session")
def spoken_samples(tmp_path_factory):
    """A question spoken by espeak-ng, as float32 samples at 16 kHz."""
    import subprocess

    from model.audio_features import load_audio

    path = tmp_path_factory.mktemp("speech") / "question.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "What is on my screen right now?"], check=True)
    return load_audio(path)


@pytest.fixture(scope="session")
def sound_server(tmp_path_factory):
    """A private PulseAudio daemon (tests/app/sound_server.py), its address in PULSE_SERVER while the
    session runs; the test is skipped where PulseAudio is not installed (.ci/run installs it)."""
    from tests.app import sound_server as module

    if not module.available():
        pytest.skip("PulseAudio (pulseaudio, pulseaudio-utils) is not installed")
    server = module.SoundServer(tmp_path_factory.mktemp("pulse"))
    before = os.environ.get("PULSE_SERVER")
    os.environ["PULSE_SERVER"] = server.env["PULSE_SERVER"]
    yield server
    server.stop()
    if before is None:
        del os.environ["PULSE_SERVER"]
    else:
        os.environ["PULSE_SERVER"] = before
