"""`omnidesk chat`'s prompt: a line of standard input at a time, where Ctrl-C drops what was typed and
prompts again, as a shell does (the end of input, Ctrl-D on a terminal, leaves).

Not input(): from writing its prompt to the read() of standard input, input() runs in C without
looking at signals, so a press in between is handled only when a line comes. A thread that re-sent
each SIGINT to the main thread to interrupt the read lost presses the same way (one in five in a CI
run, one in a hundred here under load): a re-sent signal that came before the read began was spent.
Here the main thread waits in select() on standard input and on the pipe each SIGINT writes a byte to
(app.cli.interrupts.interrupt_wakes): a press before the wait leaves its byte, and the wait ends at once.

Standard input is read here unbuffered, straight from its file descriptor: nothing else may read it
meanwhile. Threads: the main thread only (signal handlers are set there).
"""

from __future__ import annotations

import os
import select
import signal
import sys

from app.cli.interrupts import interrupt_raises, interrupt_wakes

LINE_END = b"\n"


class Pressed(Exception):
    """Ctrl-C came while the prompt waited."""


class Prompt:
    """Shows `text` on standard output and reads the lines typed on standard input (decoded with its
    encoding and error handler), as sys has them when `line` is called."""

    def __init__(self, text: str):
        self.text = text
        self.typed = bytearray()  # read but not yet handed over: a line in part, or lines typed ahead

    def line(self) -> str:
        """The next line, without its line end (the last one may have none); Ctrl-C meanwhile drops
        what was typed and prompts again. EOFError at the end of input."""
        if os.name == "nt":  # no select() on a console: Python handles its Ctrl-C event as it comes
            return self._line_from_console()
        with interrupt_wakes() as wake:
            while True:
                self._show()
                try:
                    return self._decoded(self._next_line(wake))
                except Pressed:
                    self.typed.clear()  # as a terminal drops the line and what was typed ahead
                    print(file=sys.stderr)

    def _show(self) -> None:
        sys.stdout.write(self.text)
        sys.stdout.flush()

    def _next_line(self, wake: int) -> bytes:
        """The next line's bytes, waiting for them on the file descriptor; Pressed as soon as `wake` has
        SIGINT's byte, whether it came before the wait or during it."""
        stdin = sys.stdin.fileno()
        while (end := self.typed.find(LINE_END)) < 0:
            ready, _, _ = select.select([stdin, wake], [], [])
            if wake in ready and signal.SIGINT in os.read(wake, 256):
                raise Pressed
            if stdin in ready:
                if not (chunk := os.read(stdin, 4096)):
                    return self._last_line()
                self.typed += chunk
        line = bytes(self.typed[:end])
        del self.typed[: end + len(LINE_END)]
        return line

    def _last_line(self) -> bytes:
        """What was typed after the last line end, at the end of input; EOFError if nothing was."""
        if not self.typed:
            raise EOFError
        line = bytes(self.typed)
        self.typed.clear()
        return line

    def _decoded(self, line: bytes) -> str:
        return line.removesuffix(b"\r").decode(sys.stdin.encoding, sys.stdin.errors or "strict")

    def _line_from_console(self) -> str:
        with interrupt_raises():
            while True:
                try:
                    return input(self.text)
                except KeyboardInterrupt:
                    print(file=sys.stderr)
