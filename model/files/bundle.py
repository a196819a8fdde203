"""A model bundle: one folder with the Thinker GGUF, the native parts' safetensors and a manifest.

`omnidesk.json` lists every file with its size and sha256, the checkpoint's
configuration and the special token ids, so nothing at run time depends on
literals. Hashing a multi-GB GGUF takes seconds, so a verified file's (size,
mtime) is remembered in `.verified.json`; a file that changed is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.errors import ModelFileError
from model.files.config_check import ConfigError, check_config

MANIFEST = "omnidesk.json"
VERIFIED_STAMP = ".verified.json"
FORMAT_VERSION = 1

log = logging.getLogger(__name__)

_REBUILD = "Build the bundle again (omnidesk models convert) or download it again"
# The parts every bundle holds (the encoders, audio_encoder and mmproj, are left out of the random
# bundles the benches make; a question that needs one says so when it asks for it).
REQUIRED_PARTS = ("thinker", "talker", "token2wav", "voices")


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the bundle folder
    size: int
    sha256: str


@dataclass(frozen=True)
class Bundle:
    root: Path
    files: dict[str, FileEntry]  # part -> file
    config: dict[str, Any]  # the checkpoint's config.json
    tokens: dict[str, int]  # role -> id in the Thinker's vocabulary
    codec: dict[str, int]  # bos, eos, pad, mask -> id in the Talker's vocabulary
    voices: dict[str, int]  # voice name -> its text-bos id
    thinker_dtype: str
    # The checkpoint's audio preprocessor settings (its WhisperFeatureExtractor's, from
    # preprocessor_config.json); None in bundles made before they were kept.
    preprocessor: dict[str, Any] | None = None

    def file(self, part: str) -> Path:
        if part not in self.files:
            raise ModelFileError(self.root / MANIFEST, f"the bundle has no {part} file", _REBUILD)
        return self.root / self.files[part].path

    @classmethod
    def open(cls, root: Path | str, verify: bool = True, trust_stamps: bool = True) -> Bundle:
        """Read the manifest and check every file's presence and size, and sha256 if `verify`
        (skipping files unchanged since their last verification, unless not `trust_stamps`)."""
        root = Path(root)
        manifest_path = root / MANIFEST
        if not root.is_dir():
            raise ModelFileError(root, "model bundle folder not found", "Pass --models with a bundle folder")
        try:
            spec = json.loads(manifest_path.read_text(encoding="utf-8"))
            if spec.get("format") != FORMAT_VERSION:
                raise ValueError(f"format {spec.get('format')!r}, expected {FORMAT_VERSION}")
            for key in ("config", "preprocessor"):
                if not isinstance(spec.get(key, {}), dict):
                    raise ValueError(f"{key} is {type(spec[key]).__name__}, not an object")
            bundle = cls(
                root=root,
                files={part: _file_entry(entry) for part, entry in spec["files"].items()},
                config=spec["config"],
                tokens={k: int(v) for k, v in spec["tokens"].items()},
                codec={k: int(v) for k, v in spec["codec"].items()},
                voices={k: int(v) for k, v in spec["voices"].items()},
                thinker_dtype=str(spec["thinker_dtype"]),
                preprocessor=spec.get("preprocessor"),
            )
            missing = [part for part in REQUIRED_PARTS if part not in bundle.files]
            if missing:
                raise ModelFileError(
                    manifest_path, f"the manifest lists no {', '.join(missing)} file", _REBUILD
                )
            check_config(bundle.config)  # before anything is built from it
        except FileNotFoundError:
            raise ModelFileError(manifest_path, "bundle manifest not found", _REBUILD) from None
        except ConfigError as exc:
            raise ModelFileError(
                manifest_path, f"the model configuration is out of range: {exc}", _REBUILD
            ) from None
        except (
            OSError,
            UnicodeDecodeError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            OverflowError,  # an integer written as 1e400
            RecursionError,  # JSON nested thousands deep
        ) as exc:
            raise ModelFileError(manifest_path, f"unreadable bundle manifest ({exc})", _REBUILD) from None
        bundle.check_files(verify, trust_stamps)
        return bundle

    def check_files(self, verify: bool, trust_stamps: bool = True) -> None:
        stamps = _read_stamps(self.root) if trust_stamps else {}
        changed = False
        for entry in self.files.values():
            path = self.root / entry.path
            try:
                stat = path.stat()
            except FileNotFoundError:
                raise ModelFileError(path, "file of the bundle is missing", _REBUILD) from None
            if stat.st_size != entry.size:
                raise ModelFileError(
                    path,
                    f"size {stat.st_size} bytes, the manifest says {entry.size} (incomplete or damaged)",
                    _REBUILD,
                )
            if not verify:
                continue
            stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": entry.sha256}
            if stamps.get(entry.path) == stamp:
                continue
            digest = sha256_file(path)
            if digest != entry.sha256:
                raise ModelFileError(
                    path, "sha256 does not match the manifest (the file is damaged)", _REBUILD
                )
            stamps[entry.path] = stamp
            changed = True
        if changed:
            _write_stamps(self.root, stamps)


def _file_entry(entry: dict[str, Any]) -> FileEntry:
    """A manifest's file entry; its path names a file in the bundle folder itself."""
    file = FileEntry(**entry)
    if not (isinstance(file.size, int) and isinstance(file.sha256, str) and isinstance(file.path, str)):
        raise ValueError(f"file entry {entry} is not a name, a size and a sha256")
    if file.path in ("", ".", "..") or Path(file.path).name != file.path or "\0" in file.path:
        raise ValueError(f"file entry {file.path!r} is not a file name in the bundle folder")
    return file


def write_manifest(
    root: Path,
    files: dict[str, Path],
    config: dict[str, Any],
    tokens: dict[str, int],
    codec: dict[str, int],
    voices: dict[str, int],
    thinker_dtype: str,
    preprocessor: dict[str, Any] | None = None,
) -> Bundle:
    entries = {
        part: FileEntry(path=path.name, size=path.stat().st_size, sha256=sha256_file(path))
        for part, path in files.items()
    }
    spec = {
        "format": FORMAT_VERSION,
        "files": {part: vars(entry) for part, entry in entries.items()},
        "thinker_dtype": thinker_dtype,
        "tokens": tokens,
        "codec": codec,
        "voices": voices,
        "config": config,
    }
    if preprocessor is not None:
        spec["preprocessor"] = preprocessor
    tmp = root / (MANIFEST + ".part")
    tmp.write_text(json.dumps(spec, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, root / MANIFEST)
    return Bundle.open(root, verify=False)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _read_stamps(root: Path) -> dict[str, Any]:
    try:
        stamps = json.loads((root / VERIFIED_STAMP).read_text(encoding="utf-8"))
        return stamps if isinstance(stamps, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_stamps(root: Path, stamps: dict[str, Any]) -> None:
    try:
        tmp = root / (VERIFIED_STAMP + ".part")
        tmp.write_text(json.dumps(stamps), encoding="utf-8")
        os.replace(tmp, root / VERIFIED_STAMP)
    except OSError as exc:  # a read-only bundle is verified again next time
        log.info("could not record verification in %s: %s", root, exc)
