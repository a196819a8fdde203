"""The current conversation in the history: a question with its media, its reply as it grows,
a reply that never came, media that cannot be kept."""

from __future__ import annotations

import numpy as np

from app.window.chat import current_conversation
from app.window.chat.current_conversation import CurrentConversation
from model.media import Audio, Image

WAIT_MS = 5_000


def messages(current: CurrentConversation) -> list[tuple[str, str, str, tuple[str, ...]]]:
    assert current.id is not None
    return [
        (m.role, m.text, m.note, tuple(a.kind for a in m.attachments))
        for m in current.history.messages(current.id)
    ]


def test_a_question_is_kept_with_its_media_before_its_reply(history_store):
    current = CurrentConversation(history_store)
    assert current.id is None, "a new chat is not saved before its first question"
    image, audio = Image(np.full((8, 8, 3), 200, np.uint8)), Audio(np.full(1600, 0.25, np.float32))
    attached = current.ask("What is this?", [image, audio])
    assert [a.kind for a in attached] == ["image", "audio"]
    assert all(a.path.parent == history_store.media_dir(current.id) and a.path.is_file() for a in attached)
    assert messages(current) == [("user", "What is this?", "", ("image", "audio")), ("assistant", "", "", ())]
    current.save_reply("An apple", "interrupted")
    assert messages(current)[-1] == ("assistant", "An apple", "interrupted", ())


def test_media_that_cannot_be_kept_is_a_notice_and_the_question_stays(qtbot, history_store, monkeypatch):
    def disk_full(media, folder, stem):
        raise OSError("No space left on device")

    monkeypatch.setattr(current_conversation, "save_media", disk_full)
    current = CurrentConversation(history_store)
    with qtbot.waitSignal(current.notice, timeout=WAIT_MS) as notice:
        attached = current.ask("And this?", [Image(np.zeros((8, 8, 3), np.uint8))])
    assert notice.args == ["Could not keep an attachment in the history: No space left on device"]
    assert attached == () and messages(current)[0] == ("user", "And this?", "", ())


def test_a_reply_that_never_came_keeps_why_and_nothing_after(history_store):
    current = CurrentConversation(history_store)
    current.ask("Hello?", [])
    current.not_answered("the model went away")
    current.save_reply("late words", "")
    assert messages(current)[-1] == ("assistant", "", "not answered: the model went away", ())


def test_a_reopened_conversation_continues_and_a_new_one_starts_apart(history_store):
    current = CurrentConversation(history_store)
    current.ask("First", [])
    first = current.id
    current.start_new()
    current.ask("Other", [])
    assert current.id != first
    assert [m.text for m in current.open(first)] == ["First", ""]
    current.ask("Follow-up", [])
    assert [m for m in messages(current) if m[0] == "user"] == [
        ("user", "First", "", ()),
        ("user", "Follow-up", "", ()),
    ]
