"""What Ctrl-C (SIGINT) does while `omnidesk chat` waits for a line, and while a turn runs.

The kernel hands a process's SIGINT to any of its threads that does not block it (torch's and
llama.cpp's worker threads too), and Python runs its handler on the main thread only, at its next
bytecode. A main thread blocked in read() is therefore interrupted only when the signal lands on it.
While the prompt waits, `interrupt_wakes` makes each SIGINT a byte on a pipe instead (Python's C-level
handler writes it, on whichever thread the signal lands, before any Python runs): the prompt waits in
select() on that pipe and on standard input (app.cli.prompt), so that a press before or during the
wait is seen at once, and none can be lost.

Threads: the context managers are entered on the main thread (Python requires it for handlers).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def interrupt_wakes() -> Iterator[int]:
    """While inside, Ctrl-C does nothing by itself but puts a byte (SIGINT's number) on the pipe whose
    non-blocking read end is yielded; other signals with Python handlers put theirs too."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    try:
        with _handling(signal.SIGINT, lambda *_: None):
            yield read_end
    finally:
        signal.set_wakeup_fd(previous_fd)
        os.close(read_end)
        os.close(write_end)


@contextmanager
def interrupt_raises() -> Iterator[None]:
    """While inside, Ctrl-C raises KeyboardInterrupt (for Windows' console, whose Ctrl-C event Python
    handles on the main thread as it comes)."""
    with _handling(signal.SIGINT, signal.default_int_handler):
        yield


@contextmanager
def interrupt_cancels(cancel: Callable[[], None]) -> Iterator[None]:
    """While a turn runs, Ctrl-C calls `cancel` (the turn stops) instead of raising KeyboardInterrupt."""
    with _handling(signal.SIGINT, lambda *_: cancel()):
        yield


@contextmanager
def _handling(signum: int, handler: Callable[..., object]) -> Iterator[None]:
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)
