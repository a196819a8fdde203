"""Conversations saved as they happen, in SQLite (WAL) in the user data folder.

Every message is written when it starts and a streaming reply is updated as it
grows, each change in its own transaction, so a crash loses at most the last
unsaved piece. Media and audio files of a conversation go in a folder beside
the database (`media/<conversation id>/`), referenced by relative path.

A history that cannot be used never keeps the window from opening:
- damaged (not a database, malformed, truncated, another program's tables, another database's
  `-wal` file): the database, its `-wal` and `-shm` files and its media folder are moved into a
  dated folder beside it (`history-damaged-YYYYMMDD-HHMMSS/`, itself a complete history), and a new
  history starts;
- not writable (a read-only folder, a full disk) when opened or at any later write: the history
  goes on in memory (with what was saved so far, when that can be read), the session keeps
  working, and nothing more is written to disk.
Each time, a notice says what happened and where the old history is; `listen` hands notices to the
window (those from before it listened first), each once. The file's schema, its checks, setting it
aside and reading it into memory are app.history.file's; this module decides when.

Threads: none of its own; not thread-safe: use it from one thread (the GUI thread).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import platformdirs

from app.history.file import (
    MEDIA,
    DamagedHistory,
    in_memory,
    intact_without_journal,
    open_database,
    read_only,
    set_aside,
    storage_failure,
    why,
)

TITLE_CHARS = 60

log = logging.getLogger(__name__)
T = TypeVar("T")
Notice = Callable[[str], None]


def default_path() -> Path:
    return Path(platformdirs.user_data_dir("Omnidesk", appauthor=False)) / "history.sqlite3"


@dataclass(frozen=True)
class ConversationSummary:
    id: int
    title: str
    updated: float  # time.time() seconds


@dataclass(frozen=True)
class Attachment:
    kind: str  # "image" or "audio"
    path: Path  # a file in the conversation's media folder


@dataclass(frozen=True)
class StoredMessage:
    id: int
    role: str
    text: str
    note: str
    attachments: tuple[Attachment, ...] = ()


class History:
    """Not thread-safe: use it from one thread (the GUI thread).

    `saving` is False once the history lives in memory only (see the module's docstring).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self.saving = True
        self._media_root = self.path.parent  # what stored media paths are relative to
        self._notices: list[str] = []
        self._listener: Notice | None = None
        self._db = self._open()

    def listen(self, listener: Notice) -> None:
        """Hand every notice to `listener`: those kept until now at once, later ones as they come."""
        self._listener = listener
        kept, self._notices = self._notices, []
        for text in kept:
            listener(text)

    def close(self) -> None:
        self._db.close()
        if not self.saving:
            shutil.rmtree(self._media_root, ignore_errors=True)

    def media_dir(self, conversation: int) -> Path:
        return self._media_root / MEDIA / str(conversation)

    def new_conversation(self, title: str = "New chat") -> int:
        now = time.time()
        cursor = self._run(
            lambda db: db.execute(
                "INSERT INTO conversations (title, created, updated) VALUES (?, ?, ?)", (title, now, now)
            )
        )
        return int(cursor.lastrowid or 0)

    def add_message(self, conversation: int, role: str, text: str, note: str = "") -> int:
        now = time.time()

        def add(db: sqlite3.Connection) -> int:
            with db:
                cursor = db.execute(
                    "INSERT INTO messages (conversation, role, text, note, created) VALUES (?, ?, ?, ?, ?)",
                    (conversation, role, text, note, now),
                )
                _touch(db, conversation, now)
                if role == "user" and text.strip() and _count(db, conversation) == 1:
                    db.execute(
                        "UPDATE conversations SET title = ? WHERE id = ?", (_title(text), conversation)
                    )
            return int(cursor.lastrowid or 0)

        return self._run(add)

    def attach(self, message: int, kind: str, path: Path) -> None:
        """Record a file (already written in the conversation's media folder) as part of a message."""
        relative = path.relative_to(self._media_root).as_posix()
        self._run(
            lambda db: db.execute(
                "INSERT INTO attachments (message, kind, path) VALUES (?, ?, ?)", (message, kind, relative)
            )
        )

    def update_message(self, message: int, text: str, note: str = "") -> None:
        def update(db: sqlite3.Connection) -> None:
            with db:
                db.execute("UPDATE messages SET text = ?, note = ? WHERE id = ?", (text, note, message))
                row = db.execute("SELECT conversation FROM messages WHERE id = ?", (message,)).fetchone()
                if row:
                    _touch(db, row[0], time.time())
                    if text.strip() and _answers_an_untyped_question(db, row[0], message):
                        db.execute("UPDATE conversations SET title = ? WHERE id = ?", (_title(text), row[0]))

        self._run(update)

    def conversations(self, search: str = "") -> list[ConversationSummary]:
        """Newest first; `search` matches titles and message text, ignoring case."""
        pattern = f"%{search}%"
        rows = self._run(
            lambda db: db.execute(
                """SELECT id, title, updated FROM conversations c
                   WHERE ? = '' OR title LIKE ? OR EXISTS
                       (SELECT 1 FROM messages m WHERE m.conversation = c.id AND m.text LIKE ?)
                   ORDER BY updated DESC, id DESC""",
                (search, pattern, pattern),
            ).fetchall()
        )
        return [ConversationSummary(*row) for row in rows]

    def messages(self, conversation: int) -> list[StoredMessage]:
        def read(db: sqlite3.Connection) -> tuple[list[tuple], list[tuple]]:
            rows = db.execute(
                "SELECT id, role, text, note FROM messages WHERE conversation = ? ORDER BY id",
                (conversation,),
            ).fetchall()
            files = db.execute(
                """SELECT a.message, a.kind, a.path FROM attachments a JOIN messages m ON m.id = a.message
                   WHERE m.conversation = ? ORDER BY a.id""",
                (conversation,),
            ).fetchall()
            return rows, files

        rows, files = self._run(read)
        attached: dict[int, list[Attachment]] = {}
        for message, kind, path in files:
            attached.setdefault(message, []).append(Attachment(kind, self._media_root / path))
        return [
            StoredMessage(id_, role, text, note, tuple(attached.get(id_, ())))
            for id_, role, text, note in rows
        ]

    def rename(self, conversation: int, title: str) -> None:
        self._run(
            lambda db: db.execute(
                "UPDATE conversations SET title = ? WHERE id = ?", (_title(title) or "Untitled", conversation)
            )
        )

    def delete(self, conversation: int) -> None:
        self._run(lambda db: db.execute("DELETE FROM conversations WHERE id = ?", (conversation,)))
        shutil.rmtree(self.media_dir(conversation), ignore_errors=True)

    def export_markdown(self, conversation: int, folder: Path) -> Path:
        """Write the conversation as Markdown (and its media files beside it); return the file."""
        title = self._run(
            lambda db: db.execute("SELECT title FROM conversations WHERE id = ?", (conversation,)).fetchone()
        )
        if title is None:
            raise KeyError(conversation)
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"# {title[0]}", ""]
        for message in self.messages(conversation):
            who = "You" if message.role == "user" else "Omnidesk"
            note = f" *({message.note})*" if message.note else ""
            lines += [f"**{who}**{note}", ""]
            for a in message.attachments:
                if a.path.is_file():
                    (folder / MEDIA).mkdir(exist_ok=True)
                    shutil.copy2(a.path, folder / MEDIA / a.path.name)
                link = "![image]" if a.kind == "image" else "[recording]"
                lines.append(f"{link}(media/{a.path.name})")
            lines += [message.text, ""]
        target = folder / f"{_safe_name(title[0])}.md"
        target.write_text("\n".join(lines), encoding="utf-8")
        return target

    # -- when the database cannot be used ---------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            return open_database(self.path)
        except DamagedHistory as exc:
            if intact_without_journal(self.path):
                return self._without_journal(str(exc))
            return self._start_over(str(exc))
        except (OSError, sqlite3.Error) as exc:  # the folder cannot be made or written, the disk is full
            saved = read_only(self.path)
            try:
                return self._in_memory(self._unsaved(exc), saved)
            finally:
                if saved is not None:
                    saved.close()

    def _start_over(self, problem: str) -> sqlite3.Connection:
        """Keep the damaged history aside, in a dated folder, and begin a new one."""
        try:
            kept = set_aside(self.path)
            db = open_database(self.path)
        except (OSError, sqlite3.Error, DamagedHistory) as exc:
            return self._in_memory(
                f"The history in {self.path} cannot be read ({problem}) nor set aside ({why(exc)}): "
                "conversations are kept only until Omnidesk closes.",
                None,
            )
        self._tell(
            f"The history could not be read ({problem}). It was kept in {kept} and a new history was started."
        )
        return db

    def _without_journal(self, problem: str) -> sqlite3.Connection:
        """Keep the -wal (and -shm) aside, in a dated folder, and open the database without it."""
        try:
            kept = set_aside(self.path, journal_only=True)
            db = open_database(self.path)
        except (OSError, sqlite3.Error, DamagedHistory):
            return self._start_over(problem)
        self._tell(
            f"The history's journal ({self.path.name}-wal) was not its own ({problem}). It was kept in "
            f"{kept} and the history opened without it."
        )
        return db

    def _run(self, action: Callable[[sqlite3.Connection], T]) -> T:
        """Run `action` on the database; if the disk refuses it, go on in memory and run it there."""
        try:
            return action(self._db)
        except sqlite3.DatabaseError as exc:
            if not self.saving or not storage_failure(exc):
                raise
            saved = self._db
            self._db = self._in_memory(self._unsaved(exc), saved)
            saved.close()
            return action(self._db)

    def _in_memory(self, notice: str, saved: sqlite3.Connection | None) -> sqlite3.Connection:
        """A history in memory, holding what `saved` holds when that is a readable history."""
        memory = in_memory(saved, self._media_root)
        self.saving = False
        # Media of this session go to a folder of its own: the history's files stay as they are.
        self._media_root = Path(tempfile.gettempdir()) / f"omnidesk-unsaved-{os.getpid()}-{id(self):x}"
        self._tell(notice)
        return memory

    def _unsaved(self, exc: BaseException) -> str:
        return (
            f"The history cannot be saved in {self.path.parent} ({why(exc)}): conversations are kept "
            "only until Omnidesk closes. Free some space or make the folder writable, then restart "
            "Omnidesk to save again."
        )

    def _tell(self, text: str) -> None:
        log.warning("%s", text)
        if self._listener is not None:
            self._listener(text)
        else:
            self._notices.append(text)


def _touch(db: sqlite3.Connection, conversation: int, now: float) -> None:
    db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation))


def _count(db: sqlite3.Connection, conversation: int) -> int:
    return int(
        db.execute("SELECT COUNT(*) FROM messages WHERE conversation = ?", (conversation,)).fetchone()[0]
    )


def _answers_an_untyped_question(db: sqlite3.Connection, conversation: int, message: int) -> bool:
    """Whether `message` is the first reply of a conversation whose first question had no text (a
    recording only): that conversation is titled from the reply, as it grows."""
    first = db.execute(
        "SELECT id, text FROM messages WHERE conversation = ? ORDER BY id LIMIT 2", (conversation,)
    ).fetchall()
    return len(first) == 2 and first[1][0] == message and not first[0][1].strip()


def _title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


def _safe_name(title: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in " -_" else "_" for c in title).strip()
    return cleaned[:80] or "conversation"
