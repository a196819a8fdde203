"""The chat session without a model: the worker's signals are played by the test, so each turn's
path (asked, streamed, finished, failed, a recording waiting) is checked on its own."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from PySide6.QtWidgets import QWidget

from app.history.store import History
from app.window.chat.composer import Composer
from app.window.chat.conversation_list import ConversationList
from app.window.chat.current_conversation import CurrentConversation
from app.window.chat.session import RENDER_INTERVAL_MS, ChatSession
from app.window.chat.view import ChatView
from app.worker import ReplyFinished
from model.media import Audio

WAIT_MS = 5_000


@dataclass
class Room:
    session: ChatSession
    view: ChatView
    composer: Composer
    conversations: ConversationList
    current: CurrentConversation
    history: History
    window: QWidget  # the parent of the others: kept alive with them


@pytest.fixture
def room(qtbot, settings, history_store):
    window = QWidget()
    qtbot.addWidget(window)
    view, conversations = ChatView(settings, parent=window), ConversationList(history_store, window)
    composer = Composer(settings, window)
    current = CurrentConversation(history_store, window)
    session = ChatSession(settings, view, composer, conversations, current, window)
    yield Room(session, view, composer, conversations, current, history_store, window)
    qtbot.wait(2 * RENDER_INTERVAL_MS)  # a render still due saves to the history, which closes next


def ask(qtbot, room: Room, text: str):
    """Send `text`; returns the Ask that goes to the worker."""
    room.composer.question_box.setPlainText(text)
    with qtbot.waitSignal(room.session.question_asked, timeout=WAIT_MS) as asked:
        room.session.send()
    return asked.args[0]


def reply(room: Room, text: str, reason: str = "end") -> None:
    """The worker's signals for a whole reply."""
    room.session.on_text_received(text)
    room.session.on_reply_finished(ReplyFinished(reason, 0.1, None, 10.0))


def stored(room: Room) -> list[tuple[str, str, str]]:
    """(role, text, note) of every message of the only conversation in the history."""
    (chat,) = room.history.conversations()
    return [(m.role, m.text, m.note) for m in room.history.messages(chat.id)]


class TestTurn:
    def test_a_question_goes_out_and_its_reply_streams_in_and_is_kept(self, qtbot, room):
        request = ask(qtbot, room, "Hello?")
        assert request.question.text == "Hello?" and request.speak
        assert room.session.busy and not room.composer.send_button.isEnabled()
        assert not room.conversations.isEnabled() and room.conversations.items.count() == 1
        room.session.on_text_received("Hi ")
        room.session.on_text_received("there")
        qtbot.waitUntil(lambda: "Hi there" in room.view.toPlainText(), timeout=WAIT_MS)
        assert stored(room) == [("user", "Hello?", ""), ("assistant", "Hi there", "")], "kept as it streams"
        with qtbot.waitSignal(room.session.reply_completed, timeout=WAIT_MS) as completed:
            room.session.on_reply_finished(ReplyFinished("end", 0.1, None, 10.0))
        assert completed.args == ["end"] and not room.session.busy and room.conversations.isEnabled()

    @pytest.mark.parametrize(
        "reason, note", [("cancelled", "interrupted"), ("context_full", "the conversation is too long")]
    )
    def test_a_cut_reply_is_marked(self, qtbot, room, reason, note):
        ask(qtbot, room, "Tell me a story")
        reply(room, "Once upon", reason)
        assert f"Omnidesk ({note})" in room.view.toPlainText()
        assert stored(room)[-1] == ("assistant", "Once upon", note)

    def test_nothing_is_asked_while_a_reply_runs(self, qtbot, room):
        ask(qtbot, room, "First")
        room.composer.question_box.setPlainText("Second")
        with qtbot.assertNotEmitted(room.session.question_asked):
            room.session.send()
        assert room.composer.question_box.toPlainText() == "Second", "the question waits in its box"

    def test_a_failed_turn_stays_in_the_chat_marked_with_why(self, qtbot, room):
        ask(qtbot, room, "Hello?")
        with qtbot.waitSignal(room.session.turn_failed, timeout=WAIT_MS) as failed:
            room.session.on_turn_failed("the model went away")
        assert failed.args == ["the model went away"]
        room.session.on_reply_finished(ReplyFinished("error", None, None, None))
        assert "Omnidesk (not answered: the model went away)" in room.view.toPlainText()
        assert "…" not in room.view.toPlainText() and not room.session.busy
        assert stored(room)[-1] == ("assistant", "", "not answered: the model went away")

    def test_a_reply_cut_by_an_error_keeps_what_came(self, qtbot, room):
        ask(qtbot, room, "Hello?")
        room.session.on_text_received("Hi th")
        room.session.on_turn_failed("the model went away")
        room.session.on_reply_finished(ReplyFinished("error", 0.1, None, None))
        plain = room.view.toPlainText()
        assert "Omnidesk (cut short: the model went away)" in plain and "Hi th" in plain
        assert stored(room)[-1] == ("assistant", "Hi th", "cut short: the model went away")

    def test_with_nothing_to_answer_the_question_waits_where_it_is(self, qtbot, room):
        room.composer.set_missing("No model yet: set one up.")
        room.composer.question_box.setPlainText("Hello?")
        recording = Audio(np.zeros(8000, np.float32))
        with qtbot.assertNotEmitted(room.session.question_asked):
            with qtbot.waitSignal(room.session.notice, timeout=WAIT_MS) as notice:
                room.session.send()
            room.session.on_recording_finished(recording)
        assert notice.args == ["No model yet: set one up."]
        assert room.composer.question_box.toPlainText() == "Hello?"
        assert room.composer.attachments.media == [recording]
        assert room.history.conversations() == [], "nothing is stored unanswered"
        room.composer.set_missing("")
        with qtbot.waitSignal(room.session.question_asked, timeout=WAIT_MS) as asked:
            room.session.send()
        assert asked.args[0].question.text == "Hello?" and asked.args[0].question.audios == (recording,)

    def test_questions_are_numbered_for_stopping(self, qtbot, room):
        assert ask(qtbot, room, "First").number == 1 == room.session.asked
        reply(room, "One")
        assert ask(qtbot, room, "Second").number == 2 == room.session.asked

    def test_stop_stays_while_the_speech_plays_on(self, qtbot, room):
        ask(qtbot, room, "Hello?")
        room.session.on_speaking_changed(True)
        reply(room, "Hi")
        assert room.composer.stop_button.isEnabled() and room.composer.send_button.isEnabled()
        room.session.on_speaking_changed(False)
        assert not room.composer.stop_button.isEnabled()


class TestRecording:
    def test_a_recording_made_during_a_reply_is_asked_after_it(self, qtbot, room):
        ask(qtbot, room, "Tell me a story")
        recording = Audio(np.zeros(8000, np.float32))
        with qtbot.assertNotEmitted(room.session.question_asked):
            room.session.on_recording_finished(recording)
        assert room.composer.attachments.labels() == ["Recording, 0.5 s"]
        with qtbot.waitSignal(room.session.question_asked, timeout=WAIT_MS) as asked:
            reply(room, "Once", "cancelled")
        assert asked.args[0].question.audios == (recording,) and asked.args[0].question.text == ""

    def test_a_recording_between_replies_is_asked_at_once(self, qtbot, room):
        with qtbot.waitSignal(room.session.question_asked, timeout=WAIT_MS) as asked:
            room.session.on_recording_finished(Audio(np.zeros(8000, np.float32)))
        assert len(asked.args[0].question.audios) == 1 and room.composer.attachments.media == []


class TestConversations:
    def test_switching_only_between_replies(self, qtbot, room):
        ask(qtbot, room, "First")
        reply(room, "One")
        first = room.current.id
        with qtbot.waitSignal(room.session.conversation_restored, timeout=WAIT_MS) as restored:
            room.session.on_new_requested()
        assert restored.args == [[]] and room.view.transcript() == ""
        ask(qtbot, room, "Second")
        with qtbot.assertNotEmitted(room.session.conversation_restored):
            room.session.on_conversation_chosen(first)
            room.session.on_new_requested()
        assert "Second" in room.view.transcript()
        reply(room, "Two")
        with qtbot.waitSignal(room.session.conversation_restored, timeout=WAIT_MS) as restored:
            room.session.on_conversation_chosen(first)
        assert (
            restored.args == [[("First", "One")]]
            and room.view.transcript() == "user: First\n\nassistant: One"
        )

    def test_deleting_the_shown_conversation_starts_a_new_one(self, qtbot, room):
        ask(qtbot, room, "First")
        reply(room, "One")
        shown = room.current.id
        with qtbot.assertNotEmitted(room.session.conversation_restored):
            room.session.on_conversation_deleted(shown + 1)
        with qtbot.waitSignal(room.session.conversation_restored, timeout=WAIT_MS):
            room.session.on_conversation_deleted(shown)
        assert room.view.transcript() == ""
