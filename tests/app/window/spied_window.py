"""Run as `python -m tests.app.window.spied_window BUNDLE [DEVICE_BUFFER]`: the window as `omnidesk
--models BUNDLE` starts it (app.cli.main), its speakers' device buffer DEVICE_BUFFER seconds if given
(or `high`, PortAudio's default, what the speakers had before app.sound.playback.DEVICE_BUFFER_S).
It tells a driver on stderr what a user sees: `TALK x y` (the talk button's centre on the screen)
and `READY t` once the model is loaded, `STATUS t text` each time the status bar's speeds are set,
`FIRST t s` when a reply's first sound is heard (s: the window's own figure), `SPEAKING t 1` and
`SPEAKING t 0` as a reply's speech begins and ends (t: time.monotonic())."""

from __future__ import annotations

import sys
import time

from app.cli.main import main
from app.sound import playback
from app.window import main_window, status_line


def say(*words: object) -> None:
    print(*words, file=sys.stderr, flush=True)


def spy_on_the_window() -> None:
    show_speeds, init = status_line.StatusLine.show_speeds, main_window.MainWindow.__init__

    def spied_show_speeds(self, finished) -> None:
        show_speeds(self, finished)
        say("STATUS", f"{time.monotonic():.3f}", self.speed_status.text())

    def spied_init(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)

        def ready(_description: str) -> None:
            button = self.push_to_talk.button
            centre = button.mapToGlobal(button.rect().center())
            say("TALK", centre.x(), centre.y())
            say("READY", f"{time.monotonic():.3f}")

        self.model_ready.connect(ready)
        self.speech.first_sound.connect(lambda seconds: say("FIRST", f"{time.monotonic():.3f}", seconds))
        self.speech.speaking_changed.connect(lambda on: say("SPEAKING", f"{time.monotonic():.3f}", int(on)))

    status_line.StatusLine.show_speeds = spied_show_speeds
    main_window.MainWindow.__init__ = spied_init


if __name__ == "__main__":
    if len(sys.argv) > 2:
        buffer = sys.argv[2]
        playback.DEVICE_BUFFER_S = buffer if buffer == "high" else float(buffer)  # type: ignore[assignment]
    spy_on_the_window()
    sys.exit(main(["--models", sys.argv[1]]))
