"""No model work runs on the GUI thread while the window loads the tiny bundle and speaks a turn.

The first spoken turn, when the Talker and Token2Wav start, is the hardest. How late the GUI
thread's timers come depends on the machine's load, so it is a bench figure (`omnidesk bench
window`), not an assertion here; what does not depend on load is where the work runs: every
llama.cpp decode, every torch module's forward and every step of the conversation (planning,
preparing, the turn) is recorded with its thread, and none may be the GUI thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import llama_cpp
import pytest
import torch

from app.window.main_window import MainWindow
from model.files.bundle import Bundle
from model.pipeline.conversation import Conversation
from tests.app.windows import RecordingSink, ask, load, worker


class WorkThreads:
    """The names of the threads that ran model work, by what they ran."""

    def __init__(self) -> None:
        self.seen: dict[str, set[str]] = {}

    def recorded(self, what: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            self.seen.setdefault(what, set()).add(threading.current_thread().name)
            return function(*args, **kwargs)

        return run

    def on_gui_thread(self) -> list[str]:
        gui = threading.main_thread().name
        return sorted(what for what, threads in self.seen.items() if gui in threads)


@pytest.fixture
def work_threads(monkeypatch: pytest.MonkeyPatch) -> WorkThreads:
    threads = WorkThreads()
    monkeypatch.setattr(
        llama_cpp, "llama_decode", threads.recorded("llama.cpp decode", llama_cpp.llama_decode)
    )
    monkeypatch.setattr(
        torch.nn.Module, "__call__", threads.recorded("torch forward", torch.nn.Module.__call__)
    )
    planned = Conversation.planned.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(Conversation, "planned", classmethod(threads.recorded("planning", planned)))
    for step in ("prepare", "turn"):
        monkeypatch.setattr(Conversation, step, threads.recorded(step, getattr(Conversation, step)))
    return threads


def test_no_model_work_runs_on_the_gui_thread(
    qtbot, settings, history_store, tiny_bundle: Bundle, work_threads: WorkThreads
):
    sink = RecordingSink()
    window = MainWindow(settings, worker(sink), history_store)
    qtbot.addWidget(window)
    window.show()
    load(qtbot, window, tiny_bundle)
    assert ask(qtbot, window, "Tell me a story, out loud") in ("end", "length")
    assert sum(len(c) for c in sink.chunks) > 0, "the turn was spoken: all three stages ran"
    assert {"llama.cpp decode", "torch forward", "planning", "prepare", "turn"} <= work_threads.seen.keys()
    assert work_threads.on_gui_thread() == [], work_threads.seen
    window.close()


def test_the_recorder_sees_work_on_the_gui_thread(work_threads: WorkThreads):
    torch.nn.Linear(2, 2)(torch.zeros(1, 2))
    assert work_threads.on_gui_thread() == ["torch forward"]
