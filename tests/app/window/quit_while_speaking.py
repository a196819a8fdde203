"""Run as `python -m tests.app.window.quit_while_speaking BUNDLE`: the window (offscreen, real
speakers through PortAudio) asks a spoken question and is closed as soon as its speech plays; the
process then ends as `omnidesk` does, through Python's finalization. Exit status 0, or 3 when the
speech never started."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

TIMEOUT_MS = 240_000


def main(bundle: str) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from app.history.store import History
    from app.window.main_window import MainWindow
    from app.worker import ConversationWorker
    from tests.app.windows import SPEECH

    app = QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory(prefix="omnidesk-quit-") as folder:
        settings = QSettings(str(Path(folder) / "settings.ini"), QSettings.Format.IniFormat)
        history = History(Path(folder) / "history.sqlite3")
        window = MainWindow(settings, ConversationWorker(max_tokens=400, speech=SPEECH), history)
        window.show()
        spoke: list[bool] = []

        def on_speaking(speaking: bool) -> None:
            if speaking and not spoke:
                spoke.append(True)
                window.close()  # as the user's Quit: the window closes while the reply speaks

        def ask() -> None:
            window.composer.question_box.setPlainText("Tell me a long story, out loud")
            window.composer.send_button.click()

        window.speech.speaking_changed.connect(on_speaking)
        window.model_ready.connect(ask)
        window.models.load(bundle)
        QTimer.singleShot(TIMEOUT_MS, app.quit)
        app.exec()
        history.close()
    return 0 if spoke else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
