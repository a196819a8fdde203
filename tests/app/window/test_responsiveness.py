"""The GUI thread's event loop keeps running while a spoken turn runs on the tiny bundle.

The first spoken turn, when the Talker and Token2Wav start, is the hardest. A precise
10 ms timer on the GUI thread records how late each of its ticks comes (by
time.perf_counter(), a monotonic clock); a late tick is an event loop that stalled.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer

from app.window.main_window import MainWindow
from model.files.bundle import Bundle
from tests.app.windows import RecordingSink, ask, load, worker

TICK_S = 0.010
MAX_STALL_S = 0.050


def test_the_event_loop_never_stalls_while_a_turn_runs(qtbot, settings, history_store, tiny_bundle: Bundle):
    sink = RecordingSink()
    window = MainWindow(settings, worker(sink), history_store)
    qtbot.addWidget(window)
    window.show()
    load(qtbot, window, tiny_bundle)
    lateness: list[float] = []
    last = time.perf_counter()

    def tick() -> None:
        nonlocal last
        now = time.perf_counter()
        lateness.append(now - last - TICK_S)
        last = now

    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(round(TICK_S * 1000))
    timer.timeout.connect(tick)
    timer.start()
    last = time.perf_counter()
    assert ask(qtbot, window, "Tell me a story, out loud") in ("end", "length")
    timer.stop()
    assert sum(len(c) for c in sink.chunks) > 0, "the turn was spoken: all three stages ran"
    assert len(lateness) > 20
    assert max(lateness) < MAX_STALL_S, f"the event loop stalled {max(lateness) * 1000:.0f} ms"
    window.close()
