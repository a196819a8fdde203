"""The first-run setup dialog against the loopback Hub: download, pause and resume, existing files, remove."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox

from app.window.dialogs.model_setup import DownloadWorker, SetupDialog
from model.files.bundle import MANIFEST, Bundle
from model.files.hub import Hub
from model.files.store import MODELS_DIR_VARIABLE
from model.hardware import GIB, Hardware
from tests.fixtures.fake_hub import FakeHub

PICK_FOLDER = "app.window.dialogs.model_setup.QFileDialog.getExistingDirectory"

TIMEOUT_MS = 120_000
GGUF_REPO, CHECKPOINT_REPO, THINKER = (
    "ggml-org/Qwen2.5-Omni-3B-GGUF",
    "Qwen/Qwen2.5-Omni-3B",
    "Qwen2.5-Omni-3B-F32.gguf",
)
LAPTOP = Hardware("Test", 8, 16 * GIB, 8 * GIB, (), "CPU", "cpu", "2.13.0")


@pytest.fixture
def hub(tiny_checkpoint, tiny_bundle: Bundle):
    checkpoint = {p.name: p.read_bytes() for p in tiny_checkpoint.path.iterdir() if p.is_file()}
    ggufs = {
        THINKER: tiny_bundle.file("thinker").read_bytes(),
        "mmproj-Qwen2.5-Omni-3B-F32.gguf": tiny_bundle.file("mmproj").read_bytes(),
    }
    with FakeHub({GGUF_REPO: ggufs, CHECKPOINT_REPO: checkpoint}) as server:
        yield server


@pytest.fixture
def dialog(qtbot, hub: FakeHub, tmp_path, monkeypatch):
    monkeypatch.setenv(MODELS_DIR_VARIABLE, str(tmp_path / "models"))
    worker = DownloadWorker(lambda stop: Hub(endpoint=hub.endpoint, stop=stop))
    setup = SetupDialog(LAPTOP, worker)
    qtbot.addWidget(setup)
    setup.size_box.setCurrentText("3b")
    setup.quant_box.setCurrentText("F32")
    yield setup
    setup.done(0)


def test_it_recommends_a_size_and_says_why(qtbot, hub, tmp_path, monkeypatch):
    monkeypatch.setenv(MODELS_DIR_VARIABLE, str(tmp_path / "models"))
    setup = SetupDialog(LAPTOP)
    qtbot.addWidget(setup)
    assert setup.advice.text().startswith("Recommended: 3B Q4_K_M.")
    assert (setup.size_box.currentText(), setup.quant_box.currentText()) == ("3b", "Q4_K_M")
    assert "GiB" in setup.size_label.text()
    setup.done(0)


def test_a_download_ends_with_a_verified_bundle(qtbot, dialog: SetupDialog, tiny_bundle: Bundle):
    with qtbot.waitSignal(dialog.bundle_ready, timeout=TIMEOUT_MS) as ready:
        dialog.download_button.click()
    folder = Path(ready.args[0])
    assert folder == dialog.target()
    assert (folder / MANIFEST).read_bytes() == (tiny_bundle.root / MANIFEST).read_bytes()
    assert dialog.overall_percent() == 100
    assert dialog.installed.count() == 1


def test_pause_keeps_what_was_fetched_and_resume_continues(qtbot, dialog: SetupDialog, hub: FakeHub):
    key = f"{GGUF_REPO}/{THINKER}"
    size = len(hub.repos[GGUF_REPO][THINKER])
    hub.faults.delay_per_chunk_s[key] = 0.1
    dialog.download_button.click()
    qtbot.waitUntil(lambda: hub.bytes_served[key] > size // 3, timeout=TIMEOUT_MS)
    dialog.pause_button.click()
    qtbot.waitUntil(lambda: "Paused" in dialog.status.text(), timeout=TIMEOUT_MS)
    assert dialog.download_button.text() == "Resume" and dialog.download_button.isEnabled()
    assert not (dialog.target() / MANIFEST).exists()
    part = dialog.target().with_name(dialog.target().name + ".download") / "gguf" / f"{THINKER}.part"
    kept = part.stat().st_size
    del hub.faults.delay_per_chunk_s[key]
    with qtbot.waitSignal(dialog.bundle_ready, timeout=TIMEOUT_MS):
        dialog.download_button.click()
    print(f"GGUF: {kept} of {size} bytes kept at the pause; then asked for {hub.ranges_requested(key)[-1]}")
    assert 0 < kept < size
    assert hub.ranges_requested(key)[-1] == f"bytes={kept}-{size - 1}", "only the missing bytes are asked for"


def test_files_already_here_are_used(qtbot, dialog: SetupDialog, tiny_bundle: Bundle, monkeypatch):
    monkeypatch.setattr(
        PICK_FOLDER,
        lambda *a, **k: str(tiny_bundle.root),
    )
    with qtbot.waitSignal(dialog.bundle_ready, timeout=5000) as ready:
        dialog.existing_button.click()
    assert ready.args == [str(tiny_bundle.root)]


def test_a_folder_without_a_bundle_is_explained(qtbot, dialog: SetupDialog, tmp_path, monkeypatch):
    monkeypatch.setattr(PICK_FOLDER, lambda *a, **k: str(tmp_path))
    dialog.existing_button.click()
    assert "holds no Omnidesk bundle" in dialog.status.text() and "models import" in dialog.status.text()


def test_a_bundle_imported_meanwhile_shows_in_the_list_at_once(
    qtbot, dialog: SetupDialog, tiny_bundle: Bundle, tmp_path
):
    """`omnidesk models import` in a terminal while the dialog is open: the list had shown the new
    bundle only once the dialog was opened again."""
    assert dialog.installed.count() == 0
    staging = shutil.copytree(tiny_bundle.root, tmp_path / "models" / "imported.partial")
    os.replace(staging, tmp_path / "models" / "imported")  # as the import puts it in place
    qtbot.waitUntil(lambda: dialog.installed.count() == 1, timeout=TIMEOUT_MS)
    assert dialog.installed.item(0).text() == "imported"


def test_removing_a_model_asks_first(qtbot, dialog: SetupDialog, monkeypatch):
    with qtbot.waitSignal(dialog.bundle_ready, timeout=TIMEOUT_MS):
        dialog.download_button.click()
    dialog.installed.setCurrentRow(0)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    dialog.remove_button.click()
    assert dialog.target().exists() and dialog.installed.count() == 1
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    dialog.remove_button.click()
    assert not dialog.target().exists() and dialog.installed.count() == 0


def test_a_failure_is_shown_and_download_can_be_tried_again(qtbot, dialog: SetupDialog):
    dialog.quant_box.setCurrentText("Q6_K")
    dialog.download_button.click()
    qtbot.waitUntil(lambda: "available: F32" in dialog.status.text(), timeout=TIMEOUT_MS)
    assert dialog.download_button.isEnabled()


def test_cancel_stops_the_download_and_closes(qtbot, dialog: SetupDialog, hub: FakeHub):
    key = f"{GGUF_REPO}/{THINKER}"
    hub.faults.delay_per_chunk_s[key] = 0.1
    dialog.show()
    dialog.download_button.click()
    qtbot.waitUntil(lambda: hub.bytes_served[key] > 0, timeout=TIMEOUT_MS)
    dialog.cancel_button.click()
    assert not dialog.isVisible()
    assert not (dialog.target() / MANIFEST).exists()
    part = dialog.target().with_name(dialog.target().name + ".download") / "gguf" / f"{THINKER}.part"
    assert part.stat().st_size > 0, "what was fetched is kept"
