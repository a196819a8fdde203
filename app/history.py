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
window (those from before it listened first), each once.

Threads: none of its own; not thread-safe: use it from one thread (the GUI thread).
"""

from __future__ import annotations

import errno
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

from model.errors import OmnideskError

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
COLUMNS = {  # what the queries below read and write, table by table
    "conversations": {"id", "title", "created", "updated"},
    "messages": {"id", "conversation", "role", "text", "note", "created"},
    "attachments": {"id", "message", "kind", "path"},
}
TITLE_CHARS = 60
MEDIA = "media"
PROBE_BYTES = 1 << 20  # the selftest writes this much beside the history: room for a few turns
_STORAGE_ERRORS = (
    "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM",
    "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_PROTOCOL",
)  # fmt: skip

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


class DamagedHistory(OmnideskError):
    """The database cannot be read as an Omnidesk history; the message says why."""


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
        return [StoredMessage(*row, tuple(attached.get(row[0], ()))) for row in rows]

    def rename(self, conversation: int, title: str) -> None:
        self._run(
            lambda db: db.execute(
                "UPDATE conversations SET title = ? WHERE id = ?", (title.strip() or "Untitled", conversation)
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
            return self._start_over(str(exc))
        except (OSError, sqlite3.Error) as exc:  # the folder cannot be made or written, the disk is full
            saved = _read_only(self.path)
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
                f"The history in {self.path} cannot be read ({problem}) nor set aside ({_why(exc)}): "
                "conversations are kept only until Omnidesk closes.",
                None,
            )
        self._tell(
            f"The history could not be read ({problem}). It was kept in {kept} and a new history was started."
        )
        return db

    def _run(self, action: Callable[[sqlite3.Connection], T]) -> T:
        """Run `action` on the database; if the disk refuses it, go on in memory and run it there."""
        try:
            return action(self._db)
        except sqlite3.DatabaseError as exc:
            if not self.saving or not _storage_failure(exc):
                raise
            saved = self._db
            self._db = self._in_memory(self._unsaved(exc), saved)
            saved.close()
            return action(self._db)

    def _in_memory(self, notice: str, saved: sqlite3.Connection | None) -> sqlite3.Connection:
        """A history in memory, holding what `saved` holds when that is a readable history."""
        memory = _copy_of(saved, self._media_root) if saved is not None else None
        if memory is None:
            memory = sqlite3.connect(":memory:", isolation_level=None)
            _prepare(memory)
        self.saving = False
        # Media of this session go to a folder of its own: the history's files stay as they are.
        self._media_root = Path(tempfile.gettempdir()) / f"omnidesk-unsaved-{os.getpid()}-{id(self):x}"
        self._tell(notice)
        return memory

    def _unsaved(self, exc: BaseException) -> str:
        return (
            f"The history cannot be saved in {self.path.parent} ({_why(exc)}): conversations are kept "
            "only until Omnidesk closes. Free some space or make the folder writable, then restart "
            "Omnidesk to save again."
        )

    def _tell(self, text: str) -> None:
        log.warning("%s", text)
        if self._listener is not None:
            self._listener(text)
        else:
            self._notices.append(text)


def open_database(path: Path) -> sqlite3.Connection:
    """Open (or create) the history at `path`, checked; DamagedHistory if it is not a usable one,
    OSError or sqlite3.Error if the disk does not let it be opened."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.stat().st_size:
        _inspect(path)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # With WAL, NORMAL still keeps every commit through a crash of the program (only a power cut
        # may lose the last ones) and spares the GUI thread an fsync per streamed piece of a reply.
        db.execute("PRAGMA synchronous=NORMAL")
        _prepare(db)
    except (sqlite3.OperationalError, DamagedHistory):
        db.close()
        raise
    except sqlite3.DatabaseError as exc:  # not a database, malformed
        db.close()
        raise DamagedHistory(str(exc)) from None
    return db


def check_history(path: Path) -> None:
    """What `omnidesk --selftest` asks: is the history at `path` readable, and can its folder take
    writes? Raises OmnideskError saying what is wrong; changes nothing (no file is set aside)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() and path.stat().st_size:
            _inspect(path)
        probe = path.parent / f".omnidesk-probe-{os.getpid()}"
        try:
            with probe.open("wb") as f:
                f.write(bytes(PROBE_BYTES))
                f.flush()
                os.fsync(f.fileno())
        finally:
            probe.unlink(missing_ok=True)
    except DamagedHistory as exc:
        raise OmnideskError(
            f"{path}: the history is damaged ({exc}); the window will keep it aside and start a new one"
        ) from None
    except (OSError, sqlite3.OperationalError) as exc:
        raise OmnideskError(
            f"the history in {path.parent} cannot be written ({_why(exc)}): free some space or make "
            "the folder writable"
        ) from None


def set_aside(path: Path) -> Path:
    """Move a damaged history (the database, its -wal and -shm, its media folder) into a new dated
    folder beside it; returns that folder. The -wal goes first: left behind, it would be replayed
    into the new history."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = path.parent / f"{path.stem}-damaged-{stamp}"
    n = 1
    while folder.exists():
        n += 1
        folder = path.parent / f"{path.stem}-damaged-{stamp}-{n}"
    folder.mkdir()
    parts = [Path(f"{path}-wal"), Path(f"{path}-shm"), path, path.parent / MEDIA]
    for part in parts:
        if part.exists():
            os.replace(part, folder / part.name)
    return folder


def _inspect(path: Path) -> None:
    """Check an existing history through a read-only connection, which never writes the file or
    replays its -wal into it (a foreign -wal would overwrite it). A read-only connection that cannot
    be had (a read-only folder without the -shm file) leaves the checking to the writing one."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.OperationalError:
        return
    try:
        _check(db, created=False)
    except sqlite3.OperationalError:
        pass
    except sqlite3.DatabaseError as exc:
        raise DamagedHistory(str(exc)) from None
    finally:
        db.close()


def _prepare(db: sqlite3.Connection) -> None:
    """Check what the database holds, then add what this version's schema has and it lacks."""
    _check(db, created=False)
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(SCHEMA)
    _check(db, created=True)


def _check(db: sqlite3.Connection, created: bool) -> None:
    """DamagedHistory unless `db` is intact and either empty or an Omnidesk history (`created`: the
    schema was applied, so every table must be there with its columns)."""
    result = db.execute("PRAGMA quick_check(1)").fetchone()[0]
    if result != "ok":
        raise DamagedHistory(f"damaged: {result}")
    names = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    tables = {name for (name,) in names}
    if tables and "conversations" not in tables:
        raise DamagedHistory(f"it holds another database's tables: {', '.join(sorted(tables))}")
    for table, columns in COLUMNS.items():
        if table not in tables and not created:
            continue
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if not columns <= present:
            raise DamagedHistory(f"its table {table} lacks {', '.join(sorted(columns - present))}")


def _read_only(path: Path) -> sqlite3.Connection | None:
    """A read-only connection to the history at `path` (ignoring its -wal if it must), or None."""
    if not path.is_file():
        return None
    for options in ("mode=ro", "immutable=1"):
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?{options}", uri=True)
        except sqlite3.Error:
            continue
        try:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.Error:
            db.close()
    return None


def _copy_of(saved: sqlite3.Connection, media_root: Path) -> sqlite3.Connection | None:
    """An in-memory copy of the history `saved`, its media paths made absolute; None if it cannot be
    read or is not a history."""
    memory = sqlite3.connect(":memory:", isolation_level=None)
    try:
        saved.backup(memory)
        _prepare(memory)
        prefix = media_root.as_posix().rstrip("/") + "/"
        memory.execute("UPDATE attachments SET path = ? || path", (prefix,))
    except (sqlite3.Error, DamagedHistory) as exc:
        log.warning("the saved history could not be read into memory: %s", exc)
        memory.close()
        return None
    return memory


def _storage_failure(exc: sqlite3.Error) -> bool:
    """The disk refused (full, read-only, I/O error, locked) or the file went bad: not a bug of ours
    (a missing table or a broken constraint is one, and is raised)."""
    name = getattr(exc, "sqlite_errorname", "")  # Python 3.11 and later
    if name:
        return name.startswith(_STORAGE_ERRORS)
    return type(exc) in (sqlite3.OperationalError, sqlite3.DatabaseError)


def _why(exc: BaseException) -> str:
    """The cause in a few words: the disk is full, the folder is read-only, or the error's own text."""
    code = getattr(exc, "sqlite_errorname", "")
    if code == "SQLITE_FULL" or getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    if code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) or getattr(
        exc, "errno", None
    ) in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"the folder is read-only: {exc}"
    return str(exc) or type(exc).__name__


def _touch(db: sqlite3.Connection, conversation: int, now: float) -> None:
    db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation))


def _count(db: sqlite3.Connection, conversation: int) -> int:
    return int(
        db.execute("SELECT COUNT(*) FROM messages WHERE conversation = ?", (conversation,)).fetchone()[0]
    )


def _title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1] + "…"


def _safe_name(title: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in " -_" else "_" for c in title).strip()
    return cleaned[:80] or "conversation"
