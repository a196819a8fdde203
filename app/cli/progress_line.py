"""Download progress on a terminal: one line that updates itself."""

from __future__ import annotations

import sys
import time

from model.files.download import Listener


class ProgressLine(Listener):
    """One self-updating line on stderr: what is being fetched and how far along."""

    INTERVAL_S = 0.2  # time.monotonic() seconds between redraws

    def __init__(self) -> None:
        self._shown = ""
        self._drawn_at = 0.0

    def message(self, text: str) -> None:
        self.end_line()
        print(text, file=sys.stderr)

    def progress(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._drawn_at < self.INTERVAL_S and done < total:
            return
        self._drawn_at = now
        self._shown = (
            f"  {what}: {done / 1e6:,.1f} of {total / 1e6:,.1f} MB ({100 * done / max(total, 1):.0f}%)"
        )
        sys.stderr.write("\r" + self._shown)
        sys.stderr.flush()

    def end_line(self) -> None:
        """Finish the progress line, so that what is printed next starts a line of its own."""
        if self._shown:
            sys.stderr.write("\n")
            self._shown = ""
