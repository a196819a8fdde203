"""`omnidesk chat`'s prompt: Ctrl-C drops the line and prompts again wherever the press lands (before
the wait begins, during it, on the main thread or another), lines come whole and decoded, and the end
of input ends it. Standard input here is a real pipe, read by its file descriptor as the chat reads it."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from app.cli.prompt import Prompt


class Screen(io.StringIO):
    """Standard output that can press Ctrl-C once the prompt shows (`on_flush`)."""

    def __init__(self) -> None:
        super().__init__()
        self.on_flush: Callable[[], None] = lambda: None

    def flush(self) -> None:
        super().flush()
        self.on_flush()


def on_screen(monkeypatch: pytest.MonkeyPatch) -> Screen:
    """Standard output, from now on (in a test's body: pytest sets its capture again as the body starts)."""
    screen = Screen()
    monkeypatch.setattr(sys, "stdout", screen)
    return screen


@pytest.fixture
def keyboard(monkeypatch) -> Iterator[int]:
    """The write end of the pipe that is standard input (UTF-8, undecodable bytes kept)."""
    read_end, write_end = os.pipe()
    stdin = open(read_end, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115 (closed below)
    monkeypatch.setattr(sys, "stdin", stdin)
    yield write_end
    stdin.close()
    with contextlib.suppress(OSError):  # unless the test closed it (the end of input)
        os.close(write_end)


def type_in(keyboard: int, text: bytes, *, then_close: bool = False) -> None:
    os.write(keyboard, text)
    if then_close:
        os.close(keyboard)


def press_on_another_thread(then: Callable[[], None]) -> threading.Thread:
    """Ctrl-C landing on a thread other than the main one (as the kernel may hand it to torch's), then
    `then`; the signal is handled on that thread before pthread_kill returns."""

    def press() -> None:
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        then()

    return threading.Thread(target=press)


class TestCtrlC:
    def test_before_the_wait_begins_gives_a_new_prompt(self, monkeypatch, keyboard: int):
        screen = on_screen(monkeypatch)
        """The press that input() and a re-sent signal lost: after the prompt shows, before the read."""
        presses = iter([lambda: signal.raise_signal(signal.SIGINT)])
        screen.on_flush = lambda: next(presses, lambda: None)()
        type_in(keyboard, b"hello\n")
        assert Prompt("you> ").line() == "hello"
        assert screen.getvalue() == "you> you> "

    def test_on_another_thread_gives_a_new_prompt(self, monkeypatch, keyboard: int):
        screen = on_screen(monkeypatch)
        pressing: list[threading.Thread] = []

        def press_once() -> None:
            if not pressing:
                pressing.append(press_on_another_thread(lambda: type_in(keyboard, b"hello\n")))
                pressing[0].start()

        screen.on_flush = press_once
        assert Prompt("you> ").line() == "hello"
        pressing[0].join()
        assert screen.getvalue() == "you> you> "

    def test_drops_what_was_typed(self, monkeypatch, keyboard: int):
        screen = on_screen(monkeypatch)
        prompt = Prompt("you> ")

        def press_once_the_draft_is_read() -> None:
            while not prompt.typed:  # the prompt has read the unfinished line
                time.sleep(0.001)
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
            type_in(keyboard, b"next\n")

        type_in(keyboard, b"a draft")
        typing = threading.Thread(target=press_once_the_draft_is_read)
        typing.start()
        assert prompt.line() == "next"
        typing.join()
        assert screen.getvalue() == "you> you> "

    def test_leaves_the_handlers_as_they_were(self, monkeypatch, keyboard: int):
        on_screen(monkeypatch)
        before = signal.getsignal(signal.SIGINT)
        type_in(keyboard, b"hello\n")
        Prompt("you> ").line()
        assert signal.getsignal(signal.SIGINT) is before
        assert signal.set_wakeup_fd(-1) == -1


class TestLines:
    def test_typed_ahead_come_one_at_a_time(self, monkeypatch, keyboard: int):
        screen = on_screen(monkeypatch)
        type_in(keyboard, b"first\r\nsecond\nlast", then_close=True)
        prompt = Prompt("you> ")
        assert [prompt.line(), prompt.line(), prompt.line()] == ["first", "second", "last"]
        with pytest.raises(EOFError):
            prompt.line()
        assert screen.getvalue() == "you> " * 4

    def test_undecodable_bytes_are_kept_for_the_check(self, monkeypatch, keyboard: int):
        on_screen(monkeypatch)
        type_in(keyboard, b"caf\xc3\xa9 \xff\n")
        assert Prompt("you> ").line() == "caf\u00e9 \udcff"

    def test_the_end_of_input_is_eoferror(self, monkeypatch, keyboard: int):
        on_screen(monkeypatch)
        type_in(keyboard, b"", then_close=True)
        with pytest.raises(EOFError):
            Prompt("you> ").line()
