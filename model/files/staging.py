"""Writing a bundle folder as one transaction: built beside it, put in its place when complete.

`staged(target)` gives a fresh staging folder, "<target>.partial", marked as Omnidesk's by a
`.staging` file that says what it is being built from. Everything is written there; when the
block ends without an exception, the staging folder takes the target's place. So a failure, a
full disk or Ctrl-C leaves the target as it was (an old bundle keeps working) and the staging
folder is removed; only a killed process leaves one behind, which `models list` shows as
incomplete, a new run of the same command starts over, and `models remove` deletes.

Taking the target's place is two renames in one folder (the old bundle aside as "<target>.old",
then the new one in), since no portable call swaps two folders: a crash between them leaves both
the old bundle and the new one complete, each in its own folder.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from safetensors import SafetensorError

from model.errors import OmnideskError
from model.files.bundle import MANIFEST

STAGING_SUFFIX = ".partial"
MARKER = ".staging"  # inside a staging folder: one line, what it is being built from
OLD_SUFFIX = ".old"
_LOW_SPACE = 1 << 20  # bytes: a failed write with less than this free is taken for a full disk


def staging_folder(target: Path) -> Path:
    return target.with_name(target.name + STAGING_SUFFIX)


def staging_purpose(folder: Path) -> str | None:
    """What the staging folder `folder` was building, or None if it is not a staging folder."""
    try:
        return (folder / MARKER).read_text(encoding="utf-8").strip() or "a bundle"
    except (OSError, UnicodeDecodeError):
        return None


def mark_staging(folder: Path, purpose: str) -> None:
    """Make `folder` (and its parents) if needed, marked as a staging folder building `purpose`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(purpose + "\n", encoding="utf-8")


@contextmanager
def staged(target: Path, purpose: str) -> Iterator[Path]:
    """A fresh staging folder for `target` (an absent or empty folder, or a bundle to replace), which
    takes the target's place if the block ends without an exception. An OSError, including a full
    disk, becomes a one-line OmnideskError; any failure removes the staging folder."""
    check_replaceable(target)
    staging = staging_folder(target)
    if staging.exists():
        if staging_purpose(staging) is None:
            raise OmnideskError(f"{staging} is in the way and is not Omnidesk's: move it, then run again")
        shutil.rmtree(staging)  # an earlier run was killed: start over
    try:
        mark_staging(staging, purpose)
        yield staging
        (staging / MARKER).unlink()
        _replace(target, staging)
    except (OSError, SafetensorError) as exc:
        failure = write_failure(exc, target.parent, "nothing was changed")
        shutil.rmtree(staging, ignore_errors=True)
        raise failure from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_replaceable(target: Path) -> None:
    """Refuse a target that is a file, or a folder holding files but no bundle (never replaced)."""
    if not target.exists():
        return
    if not target.is_dir():
        raise OmnideskError(f"{target} is a file: choose a folder for the bundle")
    if any(target.iterdir()) and not (target / MANIFEST).is_file():
        raise OmnideskError(
            f"{target} holds files but no Omnidesk bundle: choose a new or empty folder (nothing was changed)"
        )


def _replace(target: Path, new: Path) -> None:
    if target.exists() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(target.name + OLD_SUFFIX)
    if old.exists():
        shutil.rmtree(old)  # left by a crash between the renames, after a newer bundle was in place
    os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_failure(exc: OSError | SafetensorError, folder: Path, consequence: str) -> OmnideskError:
    """One line for a failed write (or read) in `folder`, ending with `consequence`: a full disk
    (told by its error number, safetensors' message, or what is left free) or the error's own words."""
    text = str(exc)
    full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "os error 28" in text
    with suppress(OSError):
        full = full or shutil.disk_usage(folder).free < _LOW_SPACE
    if full:
        return OmnideskError(
            f"the disk holding {folder} is full: free some space and run it again ({consequence})"
        )
    where = getattr(exc, "filename", None) or folder
    reason = getattr(exc, "strerror", None) or text
    return OmnideskError(f"{where}: {reason} ({consequence})")
