"""What Ctrl-C (SIGINT) does while `omnidesk chat` waits for a line, and while a turn runs.

Python runs its signal handlers on the main thread, but the kernel hands a process's SIGINT to any of
its threads that does not block it: torch's and llama.cpp's worker threads too. A main thread blocked
in read() on standard input is then not interrupted, and the handler would wait for the next line
(measured: two Ctrl-C in four at chat's prompt did nothing). While the prompt waits, a relay thread
therefore passes each SIGINT on to the main thread itself (`signal.pthread_kill` with a no-op
SIGUSR2), which interrupts its read so that the handler runs at once.

Threads: the context managers are entered on the main thread (Python requires it for handlers); the
relay thread blocks reading the wake-up pipe that Python's C-level handler writes each signal to.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

NUDGE = signal.SIGUSR2  # sent to the main thread alone, only to end its blocking read
STOP_RELAY = b"\0"  # no signal has number 0


@contextmanager
def interrupt_raises() -> Iterator[None]:
    """While the chat waits for a line, Ctrl-C raises KeyboardInterrupt at once, whichever thread the
    kernel gives it to (elsewhere it ends the program)."""
    if os.name == "nt":  # Windows: the console's Ctrl-C event reaches Python's handler as it is
        with _handling(signal.SIGINT, signal.default_int_handler):
            yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    main = threading.main_thread().ident
    assert main is not None
    relay = threading.Thread(target=_relay, args=(read_end, main), name="ctrl-c relay", daemon=True)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    with _handling(NUDGE, lambda *_: None):  # until the relay has ended: a late nudge must find it
        relay.start()
        try:
            with _handling(signal.SIGINT, signal.default_int_handler):
                yield
        finally:
            signal.set_wakeup_fd(previous_fd)
            os.write(write_end, STOP_RELAY)
            relay.join()
    os.close(read_end)
    os.close(write_end)


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


def _relay(wake_up: int, main_thread: int) -> None:
    """Pass each SIGINT written to the wake-up pipe on to the main thread, until STOP_RELAY."""
    while (numbers := os.read(wake_up, 64)) and STOP_RELAY not in numbers:
        if signal.SIGINT in numbers:
            signal.pthread_kill(main_thread, NUDGE)
