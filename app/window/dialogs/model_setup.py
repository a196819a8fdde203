"""First-run model setup: download the recommended bundle, or use files already here.

Threads: `DownloadWorker` runs downloads and imports on a QThread of its own; its
`stop()` may be called from any thread and ends the transfer between pieces,
keeping every byte fetched for the next run (Resume). The dialog only sends it
signals and receives its signals.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from PySide6.QtCore import QFileSystemWatcher, QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from model.errors import OmnideskError
from model.files.bundle import MANIFEST
from model.files.download import Listener, download_bundle
from model.files.hub import DownloadStopped, Hub
from model.files.store import list_bundles, models_dir, remove
from model.hardware import GIB, Hardware
from model.sizing import PREFERRED_QUANT, options, recommend

QUANTS = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")

HubFactory = Callable[[threading.Event], Hub]


class DownloadWorker(QObject):
    """Signals:
    planned(object): [(transfer name, bytes)] of everything still to fetch.
    message(str): a step begins.
    progressed(str, object, object): a transfer's bytes done and total (Python ints: files pass 2 GiB).
    finished(str): the bundle folder, verified and ready.
    stopped(): paused by the user; a new start resumes.
    failed(str): what went wrong and what to do.
    """

    planned = Signal(object)
    message = Signal(str)
    progressed = Signal(str, object, object)
    finished = Signal(str)
    stopped = Signal()
    failed = Signal(str)

    def __init__(self, hub_factory: HubFactory = lambda stop: Hub(stop=stop)) -> None:
        super().__init__()
        self._hub_factory = hub_factory
        self._stop = threading.Event()

    def stop(self) -> None:
        """Callable from any thread."""
        self._stop.set()

    @Slot(str, str, str)
    def download(self, size: str, quant: str, out: str) -> None:
        self._stop.clear()
        worker = self

        class Forward(Listener):
            def planned(self, transfers: list[tuple[str, int]]) -> None:
                worker.planned.emit(transfers)

            def message(self, text: str) -> None:
                worker.message.emit(text)

            def progress(self, what: str, done: int, total: int) -> None:
                worker.progressed.emit(what, done, total)

        try:
            bundle = download_bundle(size, quant, Path(out), self._hub_factory(self._stop), Forward())
        except DownloadStopped:
            self.stopped.emit()
        except OmnideskError as exc:
            self.failed.emit(str(exc))
        else:
            self.finished.emit(str(bundle.root))


class SetupDialog(QDialog):
    """Signals:
    bundle_ready(str): a verified bundle folder to load.
    download_requested(str, str, str): size, quantization and target folder (to the worker).
    """

    bundle_ready = Signal(str)
    download_requested = Signal(str, str, str)

    def __init__(
        self, hardware: Hardware, worker: DownloadWorker | None = None, parent: QWidget | None = None
    ):
        super().__init__(parent)
        self.setWindowTitle("Set up a model")
        self.setMinimumWidth(560)
        self._hardware = hardware
        self._transfers: dict[str, int] = {}  # name -> size
        self._done: dict[str, int] = {}
        self._thread = QThread(self)
        self.worker = worker or DownloadWorker()
        self.worker.moveToThread(self._thread)
        self.download_requested.connect(self.worker.download)
        self.worker.planned.connect(self._on_planned)
        self.worker.message.connect(self._on_message)
        self.worker.progressed.connect(self._on_progressed)
        self.worker.finished.connect(self._on_finished)
        self.worker.stopped.connect(self._on_stopped)
        self.worker.failed.connect(self._on_failed)
        self._thread.start()
        self._build()
        self._refresh_installed()
        # The list follows the models folder: a bundle imported from a terminal meanwhile shows at once.
        self._watcher = QFileSystemWatcher(self)
        folder = models_dir()
        with suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            self._watcher.addPath(str(folder))
        self._watcher.directoryChanged.connect(self._on_models_changed)

    def _build(self) -> None:
        advice = recommend(self._hardware)
        reason = advice.reason[:1].upper() + advice.reason[1:]
        choice_text = (
            f"Recommended: {advice.option.size.upper()} {advice.option.quant}. " if advice.option else ""
        )
        self.advice = QLabel(choice_text + reason)
        self.advice.setWordWrap(True)
        self.size_box = QComboBox()
        self.size_box.addItems(["3b", "7b"])
        self.quant_box = QComboBox()
        self.quant_box.setEditable(True)
        self.quant_box.addItems(list(QUANTS))
        if advice.option:
            self.size_box.setCurrentText(advice.option.size)
            self.quant_box.setCurrentText(advice.option.quant)
        self.size_box.currentTextChanged.connect(self._show_size)
        self.quant_box.currentTextChanged.connect(self._show_size)
        self.size_label = QLabel()
        choice = QHBoxLayout()
        choice.addWidget(QLabel("Size"))
        choice.addWidget(self.size_box)
        choice.addWidget(QLabel("Quantization"))
        choice.addWidget(self.quant_box)
        choice.addWidget(self.size_label, 1)

        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.file_bar = QProgressBar()
        self.overall_bar = QProgressBar()
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self._download)
        self.pause_button = QPushButton("Pause")
        # A lambda, not the bound method: a slot of the worker would be queued to its busy thread.
        self.pause_button.clicked.connect(lambda: self.worker.stop())
        self.pause_button.setEnabled(False)
        self.existing_button = QPushButton("Use files I already have…")
        self.existing_button.clicked.connect(self._use_existing)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop and close; what was fetched is kept for a later download")
        self.cancel_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        for button in (self.download_button, self.pause_button, self.existing_button, self.cancel_button):
            buttons.addWidget(button)

        self.installed = QListWidget()
        self.use_button = QPushButton("Use")
        self.use_button.clicked.connect(self._use_installed)
        self.remove_button = QPushButton("Remove…")
        self.remove_button.clicked.connect(self._remove_installed)
        installed_buttons = QHBoxLayout()
        installed_buttons.addWidget(self.use_button)
        installed_buttons.addWidget(self.remove_button)

        layout = QVBoxLayout(self)
        layout.addWidget(self.advice)
        layout.addLayout(choice)
        layout.addWidget(QLabel("This file"))
        layout.addWidget(self.file_bar)
        layout.addWidget(QLabel("Overall"))
        layout.addWidget(self.overall_bar)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        layout.addWidget(QLabel(f"Models in {models_dir()}"))
        layout.addWidget(self.installed)
        layout.addLayout(installed_buttons)
        self._show_size()

    def target(self) -> Path:
        return (
            models_dir()
            / f"qwen2.5-omni-{self.size_box.currentText()}-{self.quant_box.currentText()}".lower()
        )

    @Slot()
    def _show_size(self, *_: object) -> None:
        chosen = (self.size_box.currentText(), self.quant_box.currentText())
        estimate = next((o for o in options(self._hardware) if (o.size, o.quant) == chosen), None)
        self.size_label.setText(
            f"about {estimate.gguf_bytes / GIB:.1f} GiB for the Thinker" if estimate else ""
        )

    @Slot()
    def _download(self) -> None:
        self.download_button.setEnabled(False)
        self.download_button.setText("Resume")
        self.pause_button.setEnabled(True)
        self.status.setText("Starting…")
        quant = self.quant_box.currentText().strip() or PREFERRED_QUANT
        self.download_requested.emit(self.size_box.currentText(), quant, str(self.target()))

    @Slot(object)
    def _on_planned(self, transfers: list[tuple[str, int]]) -> None:
        self._transfers = dict(transfers)
        self._done = {name: 0 for name in self._transfers}
        self._update_overall()

    @Slot(str)
    def _on_message(self, text: str) -> None:
        self.status.setText(text)

    @Slot(str, object, object)
    def _on_progressed(self, what: str, done: int, total: int) -> None:
        self.file_bar.setValue(int(100 * done / max(total, 1)))
        if what in self._done:
            self._done[what] = done
        self._update_overall()

    def _update_overall(self) -> None:
        total = sum(self._transfers.values())
        self.overall_bar.setValue(int(100 * sum(self._done.values()) / total) if total else 0)

    def overall_percent(self) -> int:
        return self.overall_bar.value()

    @Slot(str)
    def _on_finished(self, folder: str) -> None:
        self.status.setText(f"Ready: {folder}")
        self.overall_bar.setValue(100)
        self.pause_button.setEnabled(False)
        self._refresh_installed()
        self.bundle_ready.emit(folder)

    @Slot()
    def _on_stopped(self) -> None:
        self.status.setText("Paused. What was fetched is kept: Resume continues from there.")
        self.pause_button.setEnabled(False)
        self.download_button.setEnabled(True)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.status.setText(message)
        self.pause_button.setEnabled(False)
        self.download_button.setEnabled(True)

    @Slot()
    def _use_existing(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model bundle folder")
        if not folder:
            return
        if not (Path(folder) / MANIFEST).is_file():
            self.status.setText(
                f"{folder} holds no Omnidesk bundle. To use an original checkpoint and a GGUF you have, "
                "run: omnidesk models import CHECKPOINT_FOLDER [THINKER.gguf]"
            )
            return
        self.bundle_ready.emit(folder)

    @Slot(str)
    def _on_models_changed(self, folder: str) -> None:
        self._refresh_installed()

    def _refresh_installed(self) -> None:
        self.installed.clear()
        for bundle in list_bundles():
            state = f" ({bundle.state})" if bundle.problem else ""
            item = QListWidgetItem(f"{bundle.name}{state}")
            item.setData(Qt.ItemDataRole.UserRole, str(bundle.path))
            self.installed.addItem(item)

    def _selected_folder(self) -> Path | None:
        item = self.installed.currentItem()
        return Path(item.data(Qt.ItemDataRole.UserRole)) if item else None

    @Slot()
    def _use_installed(self) -> None:
        folder = self._selected_folder()
        if folder is not None:
            self.bundle_ready.emit(str(folder))

    @Slot()
    def _remove_installed(self) -> None:
        folder = self._selected_folder()
        if folder is None:
            return
        answer = QMessageBox.question(self, "Remove model", f"Delete {folder} and all its files?")
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            remove(folder)
        except OmnideskError as exc:
            self.status.setText(str(exc))
        self._refresh_installed()

    def done(self, result: int) -> None:
        self.worker.stop()
        self._thread.quit()
        self._thread.wait(10_000)
        super().done(result)
