"""The status bar's right end: which devices are on and whether the screen is shared (in red), and
the last reply's speeds.

A reply's first sound may be heard after its turn ended (a turn ends when its audio is made, not
heard): the speeds then gain it when it comes.

Threads: the GUI thread only.
"""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtWidgets import QLabel, QStatusBar

from app.window.elided_label import ElidedLabel
from app.worker import ReplyFinished


class StatusLine:
    """`in_use` ("● Microphone on  ● Camera on  ● Screen shared", or "● Microphone paused"; hidden when
    none is) and
    `speed_status`, added to `bar` as permanent widgets."""

    def __init__(self, bar: QStatusBar) -> None:
        self.in_use = QLabel()
        self.in_use.setStyleSheet("color: #d93025; font-weight: bold")
        self.in_use.setVisible(False)
        self.speed_status = ElidedLabel("")
        bar.addPermanentWidget(self.in_use)
        bar.addPermanentWidget(self.speed_status)
        self._speeds = ReplyFinished("", None, None, None)  # the last reply's

    def show_in_use(
        self, names: list[str], paused: tuple[str, ...] = (), shared: tuple[str, ...] = ()
    ) -> None:
        """The devices on now, by name ("Microphone", "Camera"); those in `paused` are open but not
        listened to (hands-free without headphones while the assistant speaks); those in `shared` go
        with every question asked ("Screen", while Share screen is on)."""
        words = [f"● {name} {'paused' if name in paused else 'on'}" for name in names]
        words += [f"● {name} shared" for name in shared]
        self.in_use.setText("  ".join(words))
        self.in_use.setVisible(bool(words))

    def show_speeds(self, finished: ReplyFinished) -> None:
        self._speeds = finished
        self.speed_status.setText(finished.speeds)

    def show_first_sound(self, seconds: float) -> None:
        """The last reply, already finished, was heard `seconds` after its question was ready."""
        if self._speeds.reason:
            self.show_speeds(replace(self._speeds, first_audio_s=seconds))
