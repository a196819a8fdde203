"""What the scripts that try the window on a real X screen share (look_at_the_press.py,
call_on_the_screen.py): waiting with a deadline, a coloured strip below the window whose colour the
screen shots are judged by, and the window opened with the test sound server's microphone and a model
loaded. Each runs in a process of its own (DISPLAY, QT_QPA_PLATFORM=xcb, PULSE_SERVER set), started by
`run_on_an_x_screen`, and writes a JSON report the test judges."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.fixtures.x_server import x_screen

SCREEN = "1280x900x24"
STRIP = (0, 760, 1280, 140)  # x, y, width, height on the 1280x900 screen, below the window


def run_on_an_x_screen(module: str, *arguments: str) -> dict[str, Any]:
    """`python -m module arguments... REPORT.json` on a private Xvfb screen; its report."""
    report = Path(arguments[-1])
    with x_screen(SCREEN) as display:
        environ = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
        run = subprocess.run(
            [sys.executable, "-m", module, *arguments],
            env=environ,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(report.read_text())


def strip_colour(pixels: np.ndarray) -> list[int]:
    """The colour in the middle of the strip, in a picture of the whole screen at any size."""
    x, y, width, height = STRIP
    row = int((y + height / 2) / 900 * pixels.shape[0])
    column = int((x + width / 2) / 1280 * pixels.shape[1])
    return [int(c) for c in pixels[row, column]]


class OnTheScreen:
    """A QApplication, a deadline for every wait, and the strip (shown in `colour`)."""

    def __init__(self, timeout_s: float, colour: tuple[int, int, int]) -> None:
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QApplication, QWidget

        self.app = QApplication(sys.argv[:1])
        self._deadline = time.monotonic() + timeout_s  # monotonic: a wait, not a measurement
        self._strip = QWidget(None, Qt.WindowType.FramelessWindowHint)
        self._strip.setGeometry(*STRIP)
        self._strip.setAutoFillBackground(True)
        self._strip.show()
        self.paint(colour)

    def wait_until(self, condition: Callable[[], object], what: str) -> None:
        from PySide6.QtTest import QTest

        while not condition():
            if time.monotonic() > self._deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            QTest.qWait(20)

    def paint(self, colour: tuple[int, int, int]) -> None:
        """Show `colour` in the strip, and wait until a shot of the screen shows it."""
        from PySide6.QtGui import QColor, QPalette

        from app.capture.screen import grab_screen

        palette = self._strip.palette()
        palette.setColor(QPalette.ColorRole.Window, QColor(*colour))
        self._strip.setPalette(palette)
        self._strip.repaint()
        self.wait_until(lambda: strip_colour(grab_screen().pixels) == list(colour), f"the strip in {colour}")

    def window(self, folder: Path, bundle: str, settings_values: dict[str, str]) -> Any:
        """The window (at the screen's corner, speech into a RecordingSink) with the sound server's
        microphone and `settings_values`, its history in `folder`, once `bundle` is loaded."""
        from PySide6.QtCore import QSettings

        from app.history.store import History
        from app.window.main_window import Devices
        from app.window.preferences import INPUT_DEVICE_KEY
        from tests.app.windows import RecordingSink, open_window

        settings = QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat)
        for key, value in {INPUT_DEVICE_KEY: "pulse:virtmic", **settings_values}.items():
            settings.setValue(key, value)

        class Qtbot:  # what open_window asks of pytest-qt's qtbot
            def addWidget(self, widget) -> None:  # noqa: N802 (pytest-qt's name)
                pass

        window = open_window(
            Qtbot(), settings, History(folder / "history.sqlite3"), Devices(), RecordingSink()
        )
        window.move(0, 0)
        window.show()
        loaded: list = []
        window.model_ready.connect(loaded.append)
        window.models.load(bundle)
        self.wait_until(lambda: loaded, "the model")
        return window

    @staticmethod
    def report(window: Any, report: str, result: dict[str, Any]) -> int:
        """Close the window and its history, and write `result` to the report: the script's exit code."""
        window.close()
        window.history.close()
        Path(report).write_text(json.dumps(result))
        return 0
