"""The crash dialog: an unexpected error is shown with where its log is, never a silent exit."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtWidgets import QMessageBox, QWidget


class CrashReporter(QObject):
    """Signals:
    crashed(str, str): the traceback and the log file's path ("" if none); emitted from any
        thread, shown on the GUI thread.
    """

    crashed = Signal(str, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__()
        self._parent = parent
        self.crashed.connect(self._on_crashed)

    def report(self, text: str, log_file: Path | None) -> None:
        """Callable from any thread."""
        self.crashed.emit(text, str(log_file or ""))

    @Slot(str, str)
    def _on_crashed(self, text: str, log_file: str) -> None:
        box = QMessageBox(self._parent)
        box.setIcon(QMessageBox.Icon.Critical)
        box.setWindowTitle("Omnidesk: unexpected error")
        where = f"The details are in {log_file}." if log_file else "The details are below."
        box.setText(f"Something went wrong that Omnidesk did not expect. {where} Your conversation is kept.")
        box.setDetailedText(text)
        box.exec()
