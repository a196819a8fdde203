"""The conversation store: saved as it happens, searchable, renamable, exportable, crash-safe."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.history.store import History
from tests.helpers import on_small_filesystem


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


def test_a_spoken_question_is_titled_by_its_reply(history: History):
    """Voice-only conversations had all been titled "New chat"."""
    chat = history.new_conversation()
    history.add_message(chat, "user", "")  # a recording, no text
    reply = history.add_message(chat, "assistant", "")
    history.update_message(reply, "It is")
    history.update_message(reply, "It is sunny in Lisbon today.")
    assert history.conversations()[0].title == "It is sunny in Lisbon today."
    history.add_message(chat, "user", "")
    later = history.add_message(chat, "assistant", "")
    history.update_message(later, "Something else")
    assert history.conversations()[0].title == "It is sunny in Lisbon today.", "only the first reply"


def test_a_typed_question_keeps_its_title_whatever_the_reply(history: History):
    chat = history.new_conversation()
    history.add_message(chat, "user", "Weather?")
    reply = history.add_message(chat, "assistant", "")
    history.update_message(reply, "Sunny.")
    assert history.conversations()[0].title == "Weather?"


def test_search_rename_delete(history: History):
    first, second = history.new_conversation(), history.new_conversation()
    history.add_message(first, "user", "Tell me about volcanoes")
    history.add_message(second, "user", "Recipe for bread")
    history.add_message(second, "assistant", "Flour, water, salt and YEAST.")
    assert [c.id for c in history.conversations("yeast")] == [second]
    assert [c.id for c in history.conversations("VOLCANO")] == [first]
    history.rename(first, "Geology")
    assert [c.title for c in history.conversations("geology")] == ["Geology"]
    history.rename(second, "  Bread\n\tand " + "butter " * 20)  # pasted: one line, kept short
    title = history.conversations("bread")[0].title
    assert title.startswith("Bread and butter butter") and title.endswith("…") and len(title) == 60
    history.rename(second, " \n ")
    assert history.conversations("bread")[0].title == "Untitled"
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
        "import os, sys; from pathlib import Path; from app.history.store import History\n"
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


# -- a history that cannot be used never locks the user out ----------------------------------------

DAMAGE = ["garbage", "truncated", "foreign columns", "another program's database"]


def saved_history(folder: Path, conversations: int = 3) -> Path:
    """A history with conversations, the first with an image in its media folder."""
    history = History(folder / "history.sqlite3")
    for n in range(conversations):
        chat = history.new_conversation()
        question = history.add_message(chat, "user", f"question {n} " + "x" * 3000)
        history.add_message(chat, "assistant", f"answer {n}")
        if n == 0:
            history.media_dir(chat).mkdir(parents=True)
            (history.media_dir(chat) / "photo.png").write_bytes(b"png")
            history.attach(question, "image", history.media_dir(chat) / "photo.png")
    history.close()
    return history.path


def damage(path: Path, kind: str) -> None:
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 8192, np.uint8).tobytes())
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif kind == "foreign columns":
        with sqlite3.connect(path) as db:
            db.executescript(
                "DROP TABLE attachments; DROP TABLE messages; DROP TABLE conversations;"
                "CREATE TABLE conversations (name TEXT);"
            )
        db.close()
    elif kind == "another program's database":
        path.unlink()
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE bookmarks (url TEXT)")
        db.close()
    else:  # the -wal of another database, beside ours: SQLite would replay it into ours
        other = sqlite3.connect(path.parent / "other.db", isolation_level=None)
        other.execute("PRAGMA journal_mode=WAL")
        other.execute("CREATE TABLE bookmarks (url TEXT)")
        other.executemany("INSERT INTO bookmarks VALUES (?)", [("x" * 500,)] * 20)
        shutil.copy(f"{path.parent / 'other.db'}-wal", f"{path}-wal")
        other.close()


def opened(path: Path) -> tuple[History, list[str]]:
    history = History(path)
    notices: list[str] = []
    history.listen(notices.append)
    return history, notices


class TestDamagedHistory:
    @pytest.mark.parametrize("kind", DAMAGE)
    def test_is_kept_aside_whole_and_a_new_history_starts(self, tmp_path, kind):
        path = saved_history(tmp_path)
        damage(path, kind)
        damaged = path.read_bytes()
        history, notices = opened(path)
        (kept,) = tmp_path.glob("history-damaged-*")
        assert (kept / "history.sqlite3").read_bytes() == damaged, "kept as it was"
        assert (kept / "media" / "1" / "photo.png").read_bytes() == b"png"
        assert len(notices) == 1 and str(kept) in notices[0] and "could not be read" in notices[0]
        assert history.saving and history.conversations() == []
        chat = history.new_conversation()
        history.add_message(chat, "user", "after the damage")
        assert not history.media_dir(chat).exists(), "the old media stay with the old history"
        history.close()
        again, later = opened(path)
        assert [c.title for c in again.conversations()] == ["after the damage"] and later == []
        again.close()

    def test_a_foreign_wal_alone_is_kept_aside_and_the_history_opens(self, tmp_path):
        """The whole history had been set aside: the user's conversations vanished from the window
        although the database itself was intact."""
        path = saved_history(tmp_path)
        damage(path, "another database's wal")
        foreign = Path(f"{path}-wal").read_bytes()
        history, notices = opened(path)
        (kept,) = tmp_path.glob("history-damaged-*")
        assert (kept / "history.sqlite3-wal").read_bytes() == foreign, "the -wal kept as it was"
        assert not (kept / "history.sqlite3").exists() and not (kept / "media").exists()
        assert len(notices) == 1 and str(kept) in notices[0] and "-wal" in notices[0]
        assert history.saving and len(history.conversations()) == 3
        (first,) = [
            c for c in history.conversations() if history.messages(c.id)[0].text.startswith("question 0")
        ]
        assert history.messages(first.id)[0].attachments, "its media stay"
        history.close()
        again, later = opened(path)
        assert len(again.conversations()) == 3 and later == []
        again.close()

    def test_a_foreign_wal_beside_a_damaged_database_goes_aside_with_it(self, tmp_path):
        path = saved_history(tmp_path)
        damage(path, "garbage")
        damage(path, "another database's wal")
        history, notices = opened(path)
        (kept,) = tmp_path.glob("history-damaged-*")
        assert (kept / "history.sqlite3").exists() and (kept / "history.sqlite3-wal").exists()
        assert history.conversations() == [] and "could not be read" in notices[0]
        history.close()

    def test_an_older_history_without_attachments_is_ours_and_completed(self, tmp_path):
        path = saved_history(tmp_path)
        with sqlite3.connect(path) as db:
            db.execute("DROP TABLE attachments")
        db.close()
        history, notices = opened(path)
        assert notices == [] and len(history.conversations()) == 3
        history.close()


class TestUnwritableHistory:
    def test_a_full_disk_at_start_keeps_the_history_in_memory(self, tmp_path, monkeypatch):
        path = saved_history(tmp_path)
        real = sqlite3.connect

        def full(target, *args, **kwargs):  # SQLite itself says that the database or disk is full
            db = real(target, *args, **kwargs)
            if target != ":memory:":
                db.execute("PRAGMA max_page_count = 1")
            return db

        monkeypatch.setattr(sqlite3, "connect", full)
        path.unlink()
        for leftover in tmp_path.glob("history.sqlite3-*"):
            leftover.unlink()
        history, notices = opened(path)
        assert not history.saving and len(notices) == 1 and "the disk is full" in notices[0]
        chat = history.new_conversation()
        history.add_message(chat, "user", "still answered")
        assert [m.text for m in history.messages(chat)] == ["still answered"]
        history.close()

    def test_a_full_disk_mid_session_loses_nothing_of_the_session(self, tmp_path):
        path = saved_history(tmp_path)
        history, notices = opened(path)
        pages = history._db.execute("PRAGMA page_count").fetchone()[0]
        history._db.execute(f"PRAGMA max_page_count = {pages}")
        chat = history.new_conversation()
        question = history.add_message(chat, "user", "a long question " + "y" * 20_000)
        reply = history.add_message(chat, "assistant", "")
        history.update_message(reply, "the answer")
        assert not history.saving and len(notices) == 1 and "the disk is full" in notices[0]
        assert [m.id for m in history.messages(chat)] == [question, reply]
        assert len(history.conversations()) == 4, "what was saved before is still listed"
        (photo,) = history.messages(1)[0].attachments
        assert photo.path.read_bytes() == b"png", "and its media are where they were"
        history.delete(1)
        assert (tmp_path / "media" / "1" / "photo.png").exists(), "nothing on disk is touched any more"
        history.close()
        on_disk = History(path)
        assert 1 in [c.id for c in on_disk.conversations()], "deleted from the session only"
        on_disk.close()

    def test_a_folder_that_cannot_be_made(self, tmp_path):
        (tmp_path / "a file").write_text("not a folder")
        history, notices = opened(tmp_path / "a file" / "history.sqlite3")
        assert not history.saving and len(notices) == 1 and "cannot be saved" in notices[0]
        history.add_message(history.new_conversation(), "user", "hello")
        assert len(history.conversations()) == 1
        history.close()

    def test_on_a_full_filesystem(self, tmp_path):
        script = (
            "import json, sys; from pathlib import Path; from app.history.store import History\n"
            "h = History(Path(sys.argv[1]) / 'history.sqlite3'); notices = []; h.listen(notices.append)\n"
            "chat = h.new_conversation(); texts = [f'{n} ' + 'z' * 4000 for n in range(200)]\n"
            "ids = [h.add_message(chat, 'user', t) for t in texts]\n"
            "kept = [m.text for m in h.messages(chat)] == texts\n"
            "print(json.dumps({'saving': h.saving, 'notices': notices, 'kept': kept}))\n"
        )
        result = on_small_filesystem(tmp_path / "data", script, str(tmp_path / "data"), size_kib=256)
        assert result.returncode == 0, result.stderr
        outcome = json.loads(result.stdout)
        assert not outcome["saving"] and outcome["kept"]
        assert len(outcome["notices"]) == 1 and "the disk is full" in outcome["notices"][0]

    def test_in_a_read_only_folder_the_saved_history_is_shown(self, tmp_path):
        folder = tmp_path / "data"
        prepare = f"import sys; sys.path.insert(0, {str(Path.cwd())!r}); " + (
            "from pathlib import Path; from tests.app.history.test_store import saved_history; "
            f"saved_history(Path({str(folder)!r}))"
        )
        script = (
            "import json, sys; from pathlib import Path; from app.history.store import History\n"
            "h = History(Path(sys.argv[1]) / 'history.sqlite3'); notices = []; h.listen(notices.append)\n"
            "titles = [c.title[:10] for c in h.conversations()]\n"
            "h.add_message(h.new_conversation(), 'user', 'asked anyway')\n"
            "photo = h.messages(1)[0].attachments[0].path.read_bytes().decode()\n"
            "print(json.dumps({'saving': h.saving, 'notices': notices, 'titles': titles, 'photo': photo,\n"
            "                  'now': len(h.conversations())}))\n"
        )
        result = on_small_filesystem(folder, script, str(folder), prepare=prepare, read_only=True)
        assert result.returncode == 0, result.stderr
        outcome = json.loads(result.stdout)
        assert not outcome["saving"] and outcome["now"] == 4 and outcome["photo"] == "png"
        assert sorted(outcome["titles"]) == [f"question {n}" for n in range(3)]
        assert len(outcome["notices"]) == 1 and "read-only" in outcome["notices"][0]


class TestWindowWithABadHistory:
    @pytest.fixture
    def open_window(self, qtbot, settings, tiny_bundle):
        """A window on `history`, with a model to answer (Send waits for one)."""
        from app.window.main_window import MainWindow
        from tests.app.windows import load, worker

        windows = []

        def open_window(history: History) -> MainWindow:
            window = MainWindow(settings, worker(), history)
            qtbot.addWidget(window)
            window.show()
            windows.append(window)
            load(qtbot, window, tiny_bundle)
            return window

        yield open_window
        for window in windows:
            window.close()

    @pytest.mark.parametrize("kind", DAMAGE)
    def test_opens_and_says_where_the_damaged_history_is(self, open_window, tmp_path, kind):
        path = saved_history(tmp_path)
        damage(path, kind)
        window = open_window(History(path))
        (kept,) = tmp_path.glob("history-damaged-*")
        assert (kept / "history.sqlite3").is_file()
        assert window.isVisible() and window.conversations.notice.isVisible()
        assert str(kept) in window.conversations.notice.text()
        assert window.conversations.items.count() == 0 and window.composer.send_button.isEnabled()

    def test_a_full_disk_is_said_when_it_happens(self, open_window, tmp_path):
        history = History(saved_history(tmp_path))
        window = open_window(history)
        assert not window.conversations.notice.isVisible()
        history._db.execute(
            f"PRAGMA max_page_count = {history._db.execute('PRAGMA page_count').fetchone()[0]}"
        )
        window.composer.question_box.setPlainText("a long question " + "y" * 20_000)
        window.composer.send_button.click()  # the question is kept before it is answered
        assert "the disk is full" in window.conversations.notice.text()
        assert "a long question" in window.chat_view.transcript()

    def test_a_window_that_fails_to_build_leaves_no_thread_running(self, tmp_path):
        script = (
            "import sys; from pathlib import Path; from PySide6.QtCore import QSettings\n"
            "from PySide6.QtWidgets import QApplication\n"
            "from app.history.store import History; from app.window.main_window import MainWindow\n"
            "class Broken(History):\n"
            "    def conversations(self, search=''):\n"
            "        raise RuntimeError('a bug while listing')\n"
            "app = QApplication(['omnidesk', '-platform', 'offscreen'])\n"
            "settings = QSettings(sys.argv[1], QSettings.Format.IniFormat)\n"
            "try:\n"
            "    MainWindow(settings, history=Broken(Path(sys.argv[2])))\n"
            "except RuntimeError as exc:\n"
            "    print('raised:', exc)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "settings.ini"), str(tmp_path / "history.sqlite3")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr  # was SIGABRT: "QThread: Destroyed while ... running"
        assert "raised: a bug while listing" in result.stdout and "QThread" not in result.stderr
