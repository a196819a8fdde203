"""Conversations saved as they happen, in SQLite (WAL) in the user data folder.

Every message is written when it starts and a streaming reply is updated as it
grows, each change in its own transaction, so a crash loses at most the last
unsaved piece. Media and audio files of a conversation go in a folder beside
the database (`media/<conversation id>/`), referenced by relative path.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import platformdirs

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    conversation INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    text TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages(conversation, id);
CREATE TABLE IF NOT EXISTS attachments (
    id INTEGER PRIMARY KEY,
    message INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('image', 'audio')),
    path TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attachments_by_message ON attachments(message, id);
"""
TITLE_CHARS = 60


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
    """Not thread-safe: use it from one thread (the GUI thread)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # With WAL, NORMAL still keeps every commit through a crash of the program (only a power cut
        # may lose the last ones) and spares the GUI thread an fsync per streamed piece of a reply.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def media_dir(self, conversation: int) -> Path:
        return self.path.parent / "media" / str(conversation)

    def new_conversation(self, title: str = "New chat") -> int:
        now = time.time()
        cursor = self._db.execute(
            "INSERT INTO conversations (title, created, updated) VALUES (?, ?, ?)", (title, now, now)
        )
        return int(cursor.lastrowid or 0)

    def add_message(self, conversation: int, role: str, text: str, note: str = "") -> int:
        now = time.time()
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO messages (conversation, role, text, note, created) VALUES (?, ?, ?, ?, ?)",
                (conversation, role, text, note, now),
            )
            self._touch(conversation, now)
            if role == "user" and text.strip() and self._count(conversation) == 1:
                self._db.execute(
                    "UPDATE conversations SET title = ? WHERE id = ?", (_title(text), conversation)
                )
        return int(cursor.lastrowid or 0)

    def attach(self, message: int, kind: str, path: Path) -> None:
        """Record a file (already written in the conversation's media folder) as part of a message."""
        relative = path.relative_to(self.path.parent).as_posix()
        self._db.execute(
            "INSERT INTO attachments (message, kind, path) VALUES (?, ?, ?)", (message, kind, relative)
        )

    def update_message(self, message: int, text: str, note: str = "") -> None:
        with self._db:
            self._db.execute("UPDATE messages SET text = ?, note = ? WHERE id = ?", (text, note, message))
            row = self._db.execute("SELECT conversation FROM messages WHERE id = ?", (message,)).fetchone()
            if row:
                self._touch(row[0], time.time())

    def conversations(self, search: str = "") -> list[ConversationSummary]:
        """Newest first; `search` matches titles and message text, ignoring case."""
        pattern = f"%{search}%"
        rows = self._db.execute(
            """SELECT id, title, updated FROM conversations c
               WHERE ? = '' OR title LIKE ? OR EXISTS
                   (SELECT 1 FROM messages m WHERE m.conversation = c.id AND m.text LIKE ?)
               ORDER BY updated DESC, id DESC""",
            (search, pattern, pattern),
        ).fetchall()
        return [ConversationSummary(*row) for row in rows]

    def messages(self, conversation: int) -> list[StoredMessage]:
        rows = self._db.execute(
            "SELECT id, role, text, note FROM messages WHERE conversation = ? ORDER BY id", (conversation,)
        ).fetchall()
        files = self._db.execute(
            """SELECT a.message, a.kind, a.path FROM attachments a JOIN messages m ON m.id = a.message
               WHERE m.conversation = ? ORDER BY a.id""",
            (conversation,),
        ).fetchall()
        attached: dict[int, list[Attachment]] = {}
        for message, kind, path in files:
            attached.setdefault(message, []).append(Attachment(kind, self.path.parent / path))
        return [StoredMessage(*row, tuple(attached.get(row[0], ()))) for row in rows]

    def rename(self, conversation: int, title: str) -> None:
        self._db.execute(
            "UPDATE conversations SET title = ? WHERE id = ?", (title.strip() or "Untitled", conversation)
        )

    def delete(self, conversation: int) -> None:
        self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation,))
        shutil.rmtree(self.media_dir(conversation), ignore_errors=True)

    def export_markdown(self, conversation: int, folder: Path) -> Path:
        """Write the conversation as Markdown (and its media files beside it); return the file."""
        title = self._db.execute("SELECT title FROM conversations WHERE id = ?", (conversation,)).fetchone()
        if title is None:
            raise KeyError(conversation)
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"# {title[0]}", ""]
        for message in self.messages(conversation):
            who = "You" if message.role == "user" else "Omnidesk"
            note = f" *({message.note})*" if message.note else ""
            lines += [f"**{who}**{note}", ""]
            lines += [
                f"![image](media/{a.path.name})" if a.kind == "image" else f"[recording](media/{a.path.name})"
                for a in message.attachments
            ]
            lines += [message.text, ""]
        media = self.media_dir(conversation)
        if media.is_dir():
            shutil.copytree(media, folder / "media", dirs_exist_ok=True)
        target = folder / f"{_safe_name(title[0])}.md"
        target.write_text("\n".join(lines), encoding="utf-8")
        return target

    def _touch(self, conversation: int, now: float) -> None:
        self._db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation))

    def _count(self, conversation: int) -> int:
        return int(
            self._db.execute(
                "SELECT COUNT(*) FROM messages WHERE conversation = ?", (conversation,)
            ).fetchone()[0]
        )


def _title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


def _safe_name(title: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in " -_" else "_" for c in title).strip()
    return cleaned[:80] or "conversation"
