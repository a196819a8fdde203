"""The model side of the window: loads a bundle and runs turns on its own thread.

Threads: a `ThinkerWorker` lives on a QThread of its own; its slots run there
and may block (loading, decoding). `cancel()` may be called from any thread and
takes effect before the next token. The GUI thread only sends it signals and
receives its signals, which carry plain str/float values.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, Signal, Slot

from model.chat import SPEECH_SYSTEM_PROMPT, ChatFormat
from model.errors import OmnideskError
from model.files.bundle import Bundle
from model.sampling import SamplingOptions
from model.thinker import Finished, Sampled, Thinker, ThinkerOptions, TokenRun, llama_backend


@dataclass
class _Turn:
    user: list[int]
    reply: list[int] = field(default_factory=list)


class ThinkerWorker(QObject):
    """Signals:
    model_loaded(str): a description of the loaded bundle and its device.
    model_failed(str): why the bundle could not be loaded (what to do included).
    text_received(str): the next piece of the reply.
    reply_finished(str, float, float): reason ("stop", "length", "cancelled",
        "context_full", "error"), seconds to the first token and tokens per second (nan if unknown).
    turn_failed(str): a turn ended in an error; the conversation stays usable.
    """

    model_loaded = Signal(str)
    model_failed = Signal(str)
    text_received = Signal(str)
    reply_finished = Signal(str, float, float)
    turn_failed = Signal(str)

    def __init__(self, options: ThinkerOptions = ThinkerOptions(), max_tokens: int = 1024) -> None:
        super().__init__()
        self._options = options
        self._max_tokens = max_tokens
        self._cancel = threading.Event()
        self._thinker: Thinker | None = None
        self._chat: ChatFormat | None = None
        self._system: list[int] = []
        self._turns: list[_Turn] = []

    def cancel(self) -> None:
        """Stop the reply being written (callable from any thread)."""
        self._cancel.set()

    @Slot(str)
    def load(self, folder: str) -> None:
        self.close()
        try:
            bundle = Bundle.open(folder)
            self._thinker = Thinker(bundle.file("thinker"), bundle.tokens, self._options)
        except OmnideskError as exc:
            self.model_failed.emit(str(exc))
            return
        self._chat = ChatFormat(self._thinker.tokenize, bundle.tokens)
        self._system = self._chat.message("system", SPEECH_SYSTEM_PROMPT)
        self.model_loaded.emit(f"{bundle.root.name} ({bundle.thinker_dtype}) on {llama_backend()}")

    @Slot(object)
    def restore(self, exchanges: list[tuple[str, str]]) -> None:
        """Continue a saved conversation: (question, reply) texts, oldest first."""
        self._turns = []
        if self._chat is None or self._thinker is None:
            return
        for question, reply in exchanges:
            self._turns.append(_Turn(self._chat.message("user", question), self._thinker.tokenize(reply)))

    @Slot(str)
    def ask(self, text: str) -> None:
        if self._thinker is None or self._chat is None:
            self.turn_failed.emit("No model is loaded yet: choose a model bundle first.")
            return
        self._cancel.clear()
        turn = _Turn(user=self._chat.message("user", text))
        self._turns.append(turn)
        try:
            finished = self._run(turn)
        except OmnideskError as exc:
            self._turns.pop()
            self.turn_failed.emit(str(exc))
            self.reply_finished.emit("error", math.nan, math.nan)
            return
        if finished.reason == "context_full":
            self._turns.pop()
        self.reply_finished.emit(
            finished.reason,
            math.nan if finished.first_token_s is None else finished.first_token_s,
            math.nan if finished.tokens_per_s is None else finished.tokens_per_s,
        )

    def _run(self, turn: _Turn) -> Finished:
        assert self._thinker is not None and self._chat is not None
        prompt = list(self._system)
        for past in self._turns[:-1]:
            prompt += past.user + self._chat.reply_header() + self._chat.closed_reply(past.reply)
        prompt += turn.user + self._chat.reply_header()
        events = self._thinker.generate(
            [TokenRun(tuple(prompt))], SamplingOptions(), self._max_tokens, self._cancel
        )
        for event in events:
            if isinstance(event, Sampled):
                if event.text:
                    self.text_received.emit(event.text)
            elif isinstance(event, Finished):
                turn.reply = list(event.reply_ids)
                return event
        raise RuntimeError("the Thinker ended without finishing")

    def close(self) -> None:
        if self._thinker is not None:
            self._thinker.close()
            self._thinker = None
