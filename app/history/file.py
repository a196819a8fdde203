"""The history's SQLite file: its schema, the checks before it is used, and what is done when it
cannot be used (app.history.store says when).

- `open_database` opens (or creates) it, checked through a read-only connection first, which never
  replays a -wal into it; `DamagedHistory` says why it is not a usable history (not a database,
  malformed, another program's tables, a table lacking columns).
- `set_aside` moves a damaged history (database, -wal, -shm, media folder) into a dated folder
  beside it, itself a complete history; or only its -wal and -shm, when `intact_without_journal`
  finds the database itself intact (the -wal is another database's).
- `read_only` and `in_memory` keep what was saved readable when the disk refuses writes.
- `storage_failure` tells the disk's refusals from our own bugs; `why` says a refusal in a few words.
- `check_history` is the selftest's question: readable, and writable? It changes nothing.

Threads: none of its own.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from pathlib import Path

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
MEDIA = "media"  # the media folder beside the database
PROBE_BYTES = 1 << 20  # the selftest writes this much beside the history: room for a few turns
_STORAGE_ERRORS = (
    "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM",
    "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_PROTOCOL",
)  # fmt: skip

log = logging.getLogger(__name__)


class DamagedHistory(OmnideskError):
    """The database cannot be read as an Omnidesk history; the message says why."""


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
            f"the history in {path.parent} cannot be written ({why(exc)}): free some space or make "
            "the folder writable"
        ) from None


def set_aside(path: Path, journal_only: bool = False) -> Path:
    """Move a damaged history (the database, its -wal and -shm, its media folder) into a new dated
    folder beside it; returns that folder. The -wal goes first: left behind, it would be replayed
    into the new history. `journal_only`: only the -wal and -shm go (a journal not the database's)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = path.parent / f"{path.stem}-damaged-{stamp}"
    n = 1
    while folder.exists():
        n += 1
        folder = path.parent / f"{path.stem}-damaged-{stamp}-{n}"
    folder.mkdir()
    parts = [Path(f"{path}-wal"), Path(f"{path}-shm")]
    if not journal_only:
        parts += [path, path.parent / MEDIA]
    for part in parts:
        if part.exists():
            os.replace(part, folder / part.name)
    return folder


def intact_without_journal(path: Path) -> bool:
    """Whether the history at `path` has a -wal and is a usable history read without it (the -wal is
    then what is damaged: another database's, or torn)."""
    if not Path(f"{path}-wal").is_file():
        return False
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)
    except sqlite3.Error:
        return False
    try:
        _check(db, created=False)
        return True
    except (sqlite3.Error, DamagedHistory):
        return False
    finally:
        db.close()


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


def read_only(path: Path) -> sqlite3.Connection | None:
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


def in_memory(saved: sqlite3.Connection | None, media_root: Path) -> sqlite3.Connection:
    """A history in memory, holding what `saved` holds when that is a readable history (its media
    paths made absolute, from `media_root`), else empty."""
    memory = _copy_of(saved, media_root) if saved is not None else None
    if memory is None:
        memory = sqlite3.connect(":memory:", isolation_level=None)
        _prepare(memory)
    return memory


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


def storage_failure(exc: sqlite3.Error) -> bool:
    """The disk refused (full, read-only, I/O error, locked) or the file went bad: not a bug of ours
    (a missing table or a broken constraint is one, and is raised)."""
    name = getattr(exc, "sqlite_errorname", "")  # Python 3.11 and later
    if name:
        return name.startswith(_STORAGE_ERRORS)
    return type(exc) in (sqlite3.OperationalError, sqlite3.DatabaseError)


def why(exc: BaseException) -> str:
    """The cause in a few words: the disk is full, the folder is read-only, or the error's own text."""
    code = getattr(exc, "sqlite_errorname", "")
    if code == "SQLITE_FULL" or getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    if code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")) or getattr(
        exc, "errno", None
    ) in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"the folder is read-only: {exc}"
    return str(exc) or type(exc).__name__
