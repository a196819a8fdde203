"""The conversation store: saved as it happens, searchable, renamable, exportable, crash-safe."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.history import History


@pytest.fixture
def history(tmp_path):
    store = History(tmp_path / "history.sqlite3")
    yield store
    store.close()


def test_messages_are_kept_in_order_and_the_first_question_titles_the_chat(history: History):
    chat = history.new_conversation()
    history.add_message(chat, "user", "What is on my screen right now?")
    reply = history.add_message(chat, "assistant", "")
    history.update_message(reply, "A code editor.", note="stopped")
    messages = history.messages(chat)
    assert [(m.role, m.text, m.note) for m in messages] == [
        ("user", "What is on my screen right now?", ""),
        ("assistant", "A code editor.", "stopped"),
    ]
    assert history.conversations()[0].title == "What is on my screen right now?"


def test_search_rename_delete(history: History):
    first, second = history.new_conversation(), history.new_conversation()
    history.add_message(first, "user", "Tell me about volcanoes")
    history.add_message(second, "user", "Recipe for bread")
    history.add_message(second, "assistant", "Flour, water, salt and YEAST.")
    assert [c.id for c in history.conversations("yeast")] == [second]
    assert [c.id for c in history.conversations("VOLCANO")] == [first]
    history.rename(first, "Geology")
    assert [c.title for c in history.conversations("geology")] == ["Geology"]
    history.media_dir(second).mkdir(parents=True)
    history.delete(second)
    assert [c.id for c in history.conversations()] == [first]
    assert history.messages(second) == []
    assert not history.media_dir(second).exists()


def test_export_writes_markdown_and_media(history: History, tmp_path):
    chat = history.new_conversation()
    question = history.add_message(chat, "user", "Describe this photo")
    history.add_message(
        chat, "assistant", "A **red** bicycle.\n\n```python\nprint('hi')\n```", note="interrupted"
    )
    history.media_dir(chat).mkdir(parents=True)
    (history.media_dir(chat) / "photo.png").write_bytes(b"png")
    history.attach(question, "image", history.media_dir(chat) / "photo.png")
    exported = history.export_markdown(chat, tmp_path / "export")
    text = exported.read_text()
    assert text.startswith("# Describe this photo")
    assert "![image](media/photo.png)" in text
    assert "**Omnidesk** *(interrupted)*" in text and "print('hi')" in text
    assert (tmp_path / "export" / "media" / "photo.png").read_bytes() == b"png"


def test_attachments_belong_to_their_message_and_go_with_it(history: History):
    chat = history.new_conversation()
    question = history.add_message(chat, "user", "")
    history.add_message(chat, "assistant", "Hello")
    folder = history.media_dir(chat)
    history.attach(question, "audio", folder / "recording-1.wav")
    history.attach(question, "image", folder / "screen-1.png")
    asked, answered = history.messages(chat)
    assert [(a.kind, a.path) for a in asked.attachments] == [
        ("audio", folder / "recording-1.wav"),
        ("image", folder / "screen-1.png"),
    ]
    assert answered.attachments == ()
    history.delete(chat)
    assert history._db.execute("SELECT COUNT(*) FROM attachments").fetchone()[0] == 0


def test_what_was_written_survives_a_killed_process(tmp_path):
    path = tmp_path / "history.sqlite3"
    script = (
        "import os, sys; from pathlib import Path; from app.history import History\n"
        "h = History(Path(sys.argv[1])); c = h.new_conversation()\n"
        "h.add_message(c, 'user', 'saved before the crash')\n"
        "m = h.add_message(c, 'assistant', 'partial')\n"
        "h.update_message(m, 'partial reply, longer')\n"
        "os._exit(9)  # no close, no cleanup\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=False, timeout=60)
    history = History(path)
    (chat,) = history.conversations()
    assert [m.text for m in history.messages(chat.id)] == ["saved before the crash", "partial reply, longer"]
    history.close()
