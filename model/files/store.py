"""Where bundles live: one folder per bundle under the user's data directory.

The models folder is platformdirs' user data dir + "models" (for example
~/.local/share/Omnidesk/models on Linux), or $OMNIDESK_MODELS_DIR when set.
A bundle is named by its folder; commands accept a name or a path. A staging folder that an
interrupted import, conversion or download left there ("<name>.partial", "<name>.download") is
listed as incomplete and can be removed like a bundle.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from model.errors import ModelFileError, OmnideskError
from model.files.bundle import MANIFEST, Bundle
from model.files.staging import staging_purpose

MODELS_DIR_VARIABLE = "OMNIDESK_MODELS_DIR"


def models_dir() -> Path:
    override = os.environ.get(MODELS_DIR_VARIABLE)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir("Omnidesk", appauthor=False)) / "models"


@dataclass(frozen=True)
class StoredBundle:
    name: str
    path: Path
    size_bytes: int
    thinker_dtype: str
    problem: str  # empty when the bundle's files are all present with their sizes
    incomplete: bool = False  # a staging folder left by an interrupted import, conversion or download

    @property
    def state(self) -> str:
        """One line for a listing: ok, damaged or incomplete, and why."""
        if self.incomplete:
            return f"incomplete: {self.problem}"
        return f"damaged: {self.problem}" if self.problem else "ok"


def list_bundles(root: Path | None = None) -> list[StoredBundle]:
    """Every folder of the models folder that is, or was meant to be, a bundle, staging folders included."""
    root = root or models_dir()
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        purpose = staging_purpose(folder)
        if purpose is not None:
            problem = f"{purpose} was interrupted: run it again, or omnidesk models remove {folder.name}"
            found.append(StoredBundle(folder.name, folder, size, "?", problem, incomplete=True))
            continue
        try:
            bundle = Bundle.open(folder, verify=False)
        except ModelFileError as exc:
            if not _holds_bundle(folder):
                continue  # not ours
            found.append(StoredBundle(folder.name, folder, size, "?", exc.problem))
            continue
        found.append(StoredBundle(folder.name, folder, size, bundle.thinker_dtype, ""))
    return found


def resolve(name_or_path: str) -> Path:
    """A bundle folder from its name in the models folder, or from a path."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    stored = models_dir() / name_or_path
    if stored.is_dir():
        return stored
    names = ", ".join(b.name for b in list_bundles()) or "none yet"
    raise OmnideskError(f"no bundle named {name_or_path!r} (bundles in {models_dir()}: {names})")


def remove(path: Path) -> None:
    """Delete a bundle folder, or a staging folder; refuses folders that hold neither."""
    if not _holds_bundle(path) and staging_purpose(path) is None:
        raise OmnideskError(f"{path} holds no Omnidesk bundle: nothing was removed")
    shutil.rmtree(path)


def _holds_bundle(folder: Path) -> bool:
    """A bundle's manifest, or a file being written by an earlier Omnidesk, is there."""
    return (folder / MANIFEST).exists() or any(folder.glob("*.part"))
