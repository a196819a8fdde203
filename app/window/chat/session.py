"""The conversation in the window, turn by turn.

A question (from the composer, or a recording from push-to-talk) goes to the worker; its
reply streams into the chat view and, as it grows, into the history; a recording made while
a reply runs waits for it to end, and one made with no model to answer it waits among the
attachments (nothing is stored unanswered). A reply that fails stays, marked with the reason.
The conversation list switches between saved conversations while no reply runs.

Threads: the GUI thread only; the worker's signals reach the `on_` slots queued.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, QSettings, QTimer, Signal, Slot

from app.window.chat.composer import Composer
from app.window.chat.conversation_list import ConversationList
from app.window.chat.current_conversation import CurrentConversation
from app.window.chat.view import ChatView, Message
from app.worker import Ask, ReplyFinished
from model.media import Audio, Image, Question

RENDER_INTERVAL_MS = 50  # a streaming reply is re-rendered (and saved) at most this often
NOTES = {"cancelled": "interrupted", "context_full": "the conversation is too long"}  # reason -> note


class ChatSession(QObject):
    """Signals:
    question_asked(object): an Ask: the question with its media, voice, speech and number (to the worker).
    conversation_restored(object): the (question, reply) texts of the conversation now shown (to the worker).
    reply_progressed(str): a piece of the reply was received.
    reply_completed(str): the reply ended, with the reason.
    turn_failed(str): a turn could not run (no model, an error); the message to show.
    notice(str): a question cannot be sent yet; what it waits for.
    typed_question_sending(): a question typed (not spoken) is about to be taken from the composer: what
        goes with it may be attached now (emitted on the GUI thread; a direct connection runs first).
    """

    question_asked = Signal(object)
    conversation_restored = Signal(object)
    reply_progressed = Signal(str)
    reply_completed = Signal(str)
    turn_failed = Signal(str)
    notice = Signal(str)
    typed_question_sending = Signal()

    def __init__(
        self,
        settings: QSettings,
        chat_view: ChatView,
        composer: Composer,
        conversations: ConversationList,
        current: CurrentConversation,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._settings = settings
        self._chat_view = chat_view
        self._composer = composer
        self._conversations = conversations
        self._current = current
        self._busy = False
        self._send_when_free = False  # a recording waits for the reply to end
        self._render_pending = False
        self._asked = 0
        self._listened = 0  # the press that heard the recording waiting to be sent (the worker's Look)
        self._call = False  # the recording waiting to be sent is a live call's turn

    @property
    def busy(self) -> bool:
        """A reply is running."""
        return self._busy

    @property
    def asked(self) -> int:
        """The number of the last question asked (the worker's `cancel(through=...)`)."""
        return self._asked

    @Slot()
    def send(self) -> None:
        """Ask what the composer holds, unless a reply is running, nothing can answer it yet (the
        question waits where it is) or there is nothing to ask."""
        if self._composer.missing and not self._busy:
            self.notice.emit(self._composer.missing)
            return
        if self._busy or self._composer.empty:
            return
        if not self._listened:
            self.typed_question_sending.emit()
        taken = self._composer.take()
        if taken is None:
            return
        text, media = taken
        attached = self._current.ask(text, media)
        self._conversations.refresh()
        self._conversations.select(self._current.id)
        self._chat_view.add_exchange(text, attached)
        self._set_busy(True)
        self.render()
        images = tuple(m for m in media if isinstance(m, Image))
        audios = tuple(m for m in media if isinstance(m, Audio))
        question = Question(text, images=images, audios=audios)
        self._asked += 1
        listened, self._listened = self._listened, 0
        call, self._call = self._call, False
        composer = self._composer
        sent = time.perf_counter()  # the end of the question, for the status bar's figures
        self.question_asked.emit(
            Ask(question, composer.voice, composer.speak, self._asked, listened, call, sent)
        )

    def on_recording_finished(self, audio: Audio, listened: int = 0, call: bool = False) -> None:
        """Attach a recording and send it, at once or when the running reply ends. `listened`: the
        press whose listening heard it (the worker encoded it while it was spoken); `call`: a live
        call's turn (the worker answers what the call heard and saw)."""
        self._listened, self._call = listened, call
        self._composer.attachments.add(audio, f"Recording, {audio.seconds:.1f} s")
        if self._busy:
            self._send_when_free = True
        else:
            self.send()

    @Slot()
    def render(self) -> None:
        """Show the messages; a reply still streaming is saved as far as it came."""
        self._render_pending = False
        if self._busy:
            self.save_reply()
        self._chat_view.redraw()

    def save_reply(self) -> None:
        reply = self._chat_view.reply()
        if reply is not None:
            self._current.save_reply(reply.text, reply.note)

    @Slot(str)
    def on_text_received(self, text: str) -> None:
        self._chat_view.extend_reply(text)
        if not self._render_pending:
            self._render_pending = True
            QTimer.singleShot(RENDER_INTERVAL_MS, self.render)
        self.reply_progressed.emit(text)

    @Slot(object)
    def on_reply_finished(self, finished: ReplyFinished) -> None:
        """The turn is over (its speech may play on)."""
        self._set_busy(False)
        reply = self._chat_view.reply()
        if reply is not None and finished.reason in NOTES:
            reply.note = NOTES[finished.reason]
        self.render()
        self.save_reply()
        self.reply_completed.emit(finished.reason)
        self._send_waiting()

    @Slot(str)
    def on_turn_failed(self, message: str) -> None:
        """The turn failed (its reply_finished follows): the reply stays, marked with the reason."""
        reply = self._chat_view.reply()
        if reply is not None:
            if reply.text:
                reply.note = f"cut short: {message}"
                self._current.save_reply(reply.text, reply.note)
            else:
                reply.note = f"not answered: {message}"
                self._current.not_answered(message)
        self.render()
        self.turn_failed.emit(message)

    @Slot(bool)
    def on_speaking_changed(self, speaking: bool) -> None:
        self._composer.set_speaking(speaking)

    @Slot(int)
    def on_conversation_chosen(self, conversation: int) -> None:
        if self._busy or conversation == self._current.id:
            return
        stored = self._current.open(conversation)
        self._chat_view.show_messages(Message(m.role, m.text, m.note, m.attachments) for m in stored)
        questions = [m.text for m in stored if m.role == "user"]
        replies = [m.text for m in stored if m.role == "assistant"]
        self.conversation_restored.emit(list(zip(questions, replies, strict=False)))

    @Slot()
    def on_new_requested(self) -> None:
        if self._busy:
            return
        self._current.start_new()
        self._chat_view.show_messages([])
        self.conversation_restored.emit([])
        self._conversations.select(None)

    @Slot(int)
    def on_conversation_deleted(self, conversation: int) -> None:
        if conversation == self._current.id:
            self.on_new_requested()

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self._composer.set_busy(busy)
        self._conversations.setEnabled(not busy)

    def _send_waiting(self) -> None:
        """A recording made while the reply was still running goes now."""
        if self._send_when_free:
            self._send_when_free = False
            QTimer.singleShot(0, self.send)
