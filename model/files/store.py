"""Where bundles live: one folder per bundle under the user's data directory.

The models folder is platformdirs' user data dir + "models" (for example
~/.local/share/Omnidesk/models on Linux), or $OMNIDESK_MODELS_DIR when set.
A bundle is named by its folder; commands accept a name or a path.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from model.errors import ModelFileError, OmnideskError
from model.files.bundle import MANIFEST, Bundle

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


def list_bundles(root: Path | None = None) -> list[StoredBundle]:
    """Every folder of the models folder that is, or was meant to be, a bundle."""
    root = root or models_dir()
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        try:
            bundle = Bundle.open(folder, verify=False)
        except ModelFileError as exc:
            if not (folder / MANIFEST).exists() and not any(folder.glob("*.part")):
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
    """Delete a bundle folder; refuses folders that hold no bundle."""
    if not (path / MANIFEST).exists() and not any(path.glob("*.part")):
        raise OmnideskError(f"{path} holds no Omnidesk bundle: nothing was removed")
    shutil.rmtree(path)
