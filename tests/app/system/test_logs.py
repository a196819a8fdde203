"""Logs rotate; unexpected exceptions of any thread reach the log and the crash report."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

from app.system.logs import BACKUPS, LOG_FILE, MAX_BYTES, install_exception_hooks, setup_file_logging


@pytest.fixture
def file_logging(tmp_path):
    root = logging.getLogger()
    before = list(root.handlers)
    hooks = (sys.excepthook, threading.excepthook)
    path = setup_file_logging(tmp_path)
    yield path
    for handler in root.handlers[len(before) :]:
        handler.close()
        root.removeHandler(handler)
    sys.excepthook, threading.excepthook = hooks


def test_logs_rotate(file_logging):
    log = logging.getLogger("omnidesk.test")
    line = "x" * 1000
    for _ in range(MAX_BYTES * (BACKUPS + 2) // 1000):
        log.warning(line)
    files = sorted(p.name for p in file_logging.parent.iterdir())
    assert files == [LOG_FILE] + [f"{LOG_FILE}.{i}" for i in range(1, BACKUPS + 1)]
    assert all(p.stat().st_size <= MAX_BYTES + 2000 for p in file_logging.parent.iterdir())


def test_an_exception_in_a_thread_is_logged_and_reported(file_logging):
    reports = []
    install_exception_hooks(lambda text, path: reports.append((text, path)), file_logging)

    def fail():
        raise RuntimeError("boom in a worker")

    thread = threading.Thread(target=fail)
    thread.start()
    thread.join()
    assert reports and "boom in a worker" in reports[0][0] and reports[0][1] == file_logging
    assert "boom in a worker" in file_logging.read_text()
