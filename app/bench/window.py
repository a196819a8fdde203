"""`omnidesk bench window`: how long the window's event loop stalls while the model loads and speaks.

The window, offscreen (or on $DISPLAY), loads a bundle and asks it spoken questions; speech goes
nowhere (a sink that keeps nothing). A precise 10 ms timer on the GUI thread records how late each
tick comes (time.perf_counter, monotonic): a late tick is a stall the user would see as a frozen
window. The model runs on the worker's thread and the stage threads, so the stalls measure what
they take of the GIL and the cores. It prints the worst and the 99th-percentile lateness, during
loading and during the turns, with the load average; its last line reads
`window: the event loop stalled at most X ms (p99 Y ms) over N spoken turns`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from model.hardware import cpu_name

TICK_S = 0.010


class SilentSink:
    """Speakers that play each chunk at once and keep nothing (the worker's AudioSink)."""

    def __init__(self) -> None:
        self._reply = 0
        self._first_sound: float | None = None
        self._written = 0

    def begin(self) -> None:
        self._reply += 1
        self._first_sound = None

    def write(self, samples: np.ndarray) -> None:
        self._written += len(samples)
        if self._first_sound is None:
            self._first_sound = time.perf_counter()

    def finish(self) -> None:
        pass

    def stop(self) -> None:
        self._reply += 1

    def state(self):  # -> PlaybackState
        from app.sound.playback import PlaybackState

        return PlaybackState(self._reply, False, self._written, False, self._first_sound, slow=False)


class Lateness:
    """Ticks of a precise timer on the GUI thread, each recorded as how late it came (seconds)."""

    def __init__(self) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.late: list[float] = []
        self._last = time.perf_counter()
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(round(TICK_S * 1000))
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.late.append(now - self._last - TICK_S)
        self._last = now

    def __enter__(self) -> Lateness:
        self.late.clear()
        self._last = time.perf_counter()
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.stop()

    def summary(self) -> tuple[float, float]:
        """The worst and the 99th-percentile lateness, in milliseconds."""
        late = np.asarray(self.late or [0.0]) * 1000
        return float(late.max()), float(np.percentile(late, 99))


def wait_for(signal, timeout_s: float) -> list:
    """Run the event loop until `signal` is emitted; its arguments."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop, got = QEventLoop(), list[object]()

    def emitted(*args: object) -> None:
        got.extend(args)
        loop.quit()

    signal.connect(emitted)
    QTimer.singleShot(round(timeout_s * 1000), loop.quit)
    loop.exec()
    signal.disconnect(emitted)
    if not got:
        raise SystemExit(f"omnidesk bench window: nothing after {timeout_s:.0f} s")
    return got


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omnidesk bench window", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="the model bundle folder")
    parser.add_argument("--turns", type=int, default=3, help="spoken questions (default: 3)")
    parser.add_argument("--max-tokens", type=int, default=48, help="reply length in tokens (default: 48)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for each step")
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.history.store import History
    from app.window.main_window import MainWindow
    from app.worker import ConversationWorker

    application = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory(prefix="omnidesk-bench-") as folder:
        settings = QSettings(str(Path(folder) / "settings.ini"), QSettings.Format.IniFormat)
        sink = SilentSink()
        worker = ConversationWorker(max_tokens=args.max_tokens, sink_factory=lambda rate: sink)
        history = History(Path(folder) / "history.sqlite3")
        window = MainWindow(settings, worker, history)
        window.show()
        lateness = Lateness()
        with lateness:
            window.models.load(str(args.models))
            wait_for(window.model_ready, args.timeout)
        loading = lateness.summary()
        print(f"loading: worst {loading[0]:.0f} ms late, p99 {loading[1]:.0f} ms")
        turns: list[float] = []  # every tick's lateness during the turns
        for turn in range(args.turns):
            with lateness:
                window.composer.question_box.setPlainText("Tell me a story, out loud")
                window.composer.send_button.click()
                (reason,) = wait_for(window.session.reply_completed, args.timeout)
            turns.extend(lateness.late)
            late = lateness.summary()
            print(f"turn {turn + 1} ({reason}): worst {late[0]:.0f} ms late, p99 {late[1]:.0f} ms")
        window.close()
        history.close()
        application.processEvents()
    every = np.asarray(turns or [0.0]) * 1000
    print(f"CPU: {cpu_name()}; load average {os.getloadavg()[0]:.1f}; {len(turns)} ticks during the turns")
    print(
        f"window: the event loop stalled at most {every.max():.0f} ms "
        f"(p99 {np.percentile(every, 99):.0f} ms) over {args.turns} spoken turns"
    )
    return 0
