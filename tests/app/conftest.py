"""Qt runs offscreen in tests; settings go to a temporary file."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture
def settings(tmp_path):
    from PySide6.QtCore import QSettings

    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def history_store(tmp_path):
    from app.history import History

    store = History(tmp_path / "history.sqlite3")
    yield store
    store.close()


@pytest.fixture(scope="session")
def spoken_samples(tmp_path_factory):
    """A question spoken by espeak-ng, as float32 samples at 16 kHz."""
    import subprocess

    from model.audio_features import load_audio

    path = tmp_path_factory.mktemp("speech") / "question.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "What is on my screen right now?"], check=True)
    return load_audio(path)
