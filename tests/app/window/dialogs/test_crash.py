"""The crash dialog appears on the GUI thread, whichever thread failed."""

from __future__ import annotations

import threading

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from app.window.dialogs.crash import CrashReporter


def test_a_crash_in_another_thread_opens_the_dialog_with_the_log_path(qtbot, tmp_path):
    reporter = CrashReporter()
    shown: list[tuple[str, str]] = []

    def close_dialog() -> None:
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, QMessageBox) and widget.isVisible():
                shown.append((widget.text(), widget.detailedText()))
                widget.accept()

    timer = QTimer()
    timer.timeout.connect(close_dialog)
    timer.start(20)
    log_file = tmp_path / "omnidesk.log"
    worker = threading.Thread(target=reporter.report, args=("Traceback: boom", log_file))
    worker.start()
    worker.join()
    qtbot.waitUntil(lambda: bool(shown), timeout=5000)
    timer.stop()
    text, details = shown[0]
    assert str(log_file) in text and "conversation is kept" in text
    assert details == "Traceback: boom"
