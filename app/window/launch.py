"""Starting the desktop window: logging, crash reports, settings, the window."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtGui import QGuiApplication, QIcon
from PySide6.QtWidgets import QApplication

from app.system.logs import install_exception_hooks, setup_file_logging
from app.system.qt_messages import route_qt_messages
from app.system.qt_platform import require_display, window_platform
from app.window.dialogs.crash import CrashReporter
from app.window.main_window import MainWindow

# In a source checkout and in the built app alike (packaging/omnidesk.spec puts it there).
ICON = Path(__file__).resolve().parents[2] / "assets" / "icons" / "omnidesk-256.png"
# The model's threads (worker, Thinker, Talker, Token2Wav) share the GIL with the GUI thread. Python
# hands it over every 5 ms by default, so with four busy threads the GUI thread waited up to 60 ms
# for it (measured here); every 1 ms it waits less (`omnidesk bench window` measures the stalls).
GIL_SWITCH_S = 0.001


def switch_threads_often() -> None:
    """Let the GUI thread have the GIL soon enough (a process-wide setting: the app's, at start-up)."""
    sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_S))


def run(models: Path | None) -> int:
    switch_threads_often()
    route_qt_messages()  # before Qt starts: its font lines go to the log, not the terminal
    if QApplication.instance() is None:
        require_display(window_platform())  # Qt would abort without a display
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Omnidesk")
    app.setOrganizationName("Omnidesk")
    # The Linux desktop entry is omnidesk.desktop: docks match the window to it by this name.
    QGuiApplication.setDesktopFileName("omnidesk")
    if ICON.is_file():
        QApplication.setWindowIcon(QIcon(str(ICON)))
    log_file = setup_file_logging()
    window = MainWindow(QSettings())
    reporter = CrashReporter(window)
    install_exception_hooks(reporter.report, log_file)
    if models is not None:
        window.models.load(str(models))
    window.show()
    return app.exec()
