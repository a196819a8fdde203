"""Starting the desktop window."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from app.main_window import MainWindow


def run(models: Path | None) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Omnidesk")
    app.setOrganizationName("Omnidesk")
    window = MainWindow(QSettings())
    if models is not None:
        window.load_bundle(str(models))
    window.show()
    return app.exec()
