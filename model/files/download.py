"""`omnidesk models download`: a bundle from the Hugging Face Hub, resumable and verified.

What is fetched, for size S (3b or 7b) and quantization Q:
- from ggml-org/Qwen2.5-Omni-S-GGUF: the Thinker GGUF of quantization Q and the vision
  projector (mmproj, Q8_0 when there is one), whole;
- from Qwen/Qwen2.5-Omni-S: config.json, preprocessor_config.json, tokenizer.json,
  tokenizer_config.json, spk_dict.pt and the safetensors index whole, and from the shards only the byte
  ranges of the tensors the bundle needs (thinker.audio_tower.*, talker.*, token2wav.*).

Whole files come through the Hub's client (model.files.hub: bounded reads, retries, resumed `.part`
files, checksums); the shards' tensors as extracts (model.files.extracts: checked against the
shard's own header). Everything lands in "<bundle>.download/" first; an interrupted run resumes from it
and no bundle manifest exists until the end, so a partial download never looks complete.
What the Hub sent stays as it came (the checkpoint's own index in index/); what is made from
it (the extracts' index) is written whole under a new name and renamed, so a failure at any
step leaves the staging folder in a state the next run resumes from.

A misbehaving server costs bounded memory: whole files and tensor ranges go to disk piece by
piece, never past the size asked for, and the only bytes held in memory are a repository's
file listing (at most 16 MiB) and a shard's header, refused above safetensors' own limit
(100 MB) before a byte of it is read. Every network failure ends in one line saying what
happened and what to do.

Threads: none of its own; `download_bundle` blocks its caller until the bundle is written.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.errors import ModelFileError, OmnideskError
from model.files.bundle import Bundle
from model.files.convert import NATIVE_PARTS, convert_checkpoint
from model.files.extracts import INDEX_FILE, Extract, fetch_extract, plan_extracts
from model.files.hub import Hub, RemoteFile, reason
from model.files.mmproj_gguf import VISION_PREFIX
from model.files.staging import check_replaceable, mark_staging, write_failure

CHECKPOINT_FILES = (
    "config.json",
    "preprocessor_config.json",  # how long a recording the model hears
    "tokenizer.json",
    "tokenizer_config.json",
    "spk_dict.pt",
)
DISK_MARGIN = 1.05


class Listener:
    """What a download tells its watcher (all calls come from the downloading thread)."""

    def planned(self, transfers: list[tuple[str, int]]) -> None:
        """Every transfer still to come, with its size in bytes (known before the first byte)."""

    def message(self, text: str) -> None:
        """A step begins."""

    def progress(self, what: str, done: int, total: int) -> None:
        """Bytes of one transfer so far."""


@dataclass(frozen=True)
class Repos:
    gguf: str
    checkpoint: str


def repos_for(size: str) -> Repos:
    if size not in ("3b", "7b"):
        raise OmnideskError(f"unknown model size {size!r}: choose 3b or 7b")
    name = f"Qwen2.5-Omni-{size.upper()}"
    return Repos(gguf=f"ggml-org/{name}-GGUF", checkpoint=f"Qwen/{name}")


def download_bundle(
    size: str,
    quant: str,
    out: Path,
    hub: Hub | None = None,
    listener: Listener | None = None,
) -> Bundle:
    try:
        return _download_bundle(size, quant, out, hub or Hub(), listener or Listener())
    except OSError as exc:  # writing the staging folder (the network's failures are told where they happen)
        raise write_failure(exc, out.parent, "what was fetched is kept: run it again to resume") from None


def _download_bundle(size: str, quant: str, out: Path, hub: Hub, listener: Listener) -> Bundle:
    report, progress = listener.message, listener.progress
    repos = repos_for(size)
    check_replaceable(out)  # before anything is fetched for a place the bundle cannot go
    staging = out.with_name(out.name + ".download")
    gguf_commit, gguf_files = hub.files(repos.gguf)
    ckpt_commit, ckpt_files = hub.files(repos.checkpoint)
    thinker = _thinker_file(gguf_files, quant, repos.gguf)
    mmproj = _mmproj_file(gguf_files)
    missing = [name for name in (*CHECKPOINT_FILES, INDEX_FILE) if name not in ckpt_files]
    if missing:
        raise OmnideskError(
            f"{repos.checkpoint} lacks {', '.join(missing)}: is it a Qwen2.5-Omni checkpoint?"
        )

    mark_staging(staging, f"the download of {repos.checkpoint} ({quant})")
    # The Hub's index, kept as it came: the checkpoint folder gets the extracts' own at the end.
    index_path = hub.download(ckpt_files[INDEX_FILE], ckpt_commit, staging / "index", progress)
    # Without an mmproj in the GGUF repository, the vision projector is made from the checkpoint.
    prefixes = (*NATIVE_PARTS.values(), *(() if mmproj else (VISION_PREFIX,)))
    extracts = plan_extracts(hub, ckpt_commit, ckpt_files, _read_index(index_path), prefixes)
    whole = [thinker, *([mmproj] if mmproj else []), *(ckpt_files[name] for name in CHECKPOINT_FILES)]
    _check_disk_space(staging, out, whole, extracts)
    listener.planned([(f.path, f.size) for f in whole] + [(e.shard.path, e.size) for e in extracts])

    report(f"fetching {thinker.path} from {repos.gguf}")
    gguf_path = hub.download(thinker, gguf_commit, staging / "gguf", progress)
    mmproj_path = None
    if mmproj is not None:
        report(f"fetching {mmproj.path} from {repos.gguf}")
        mmproj_path = hub.download(mmproj, gguf_commit, staging / "gguf", progress)
    else:
        report(f"{repos.gguf} has no mmproj GGUF: the vision projector will be made from the checkpoint")
    for name in CHECKPOINT_FILES:
        report(f"fetching {name} from {repos.checkpoint}")
        hub.download(ckpt_files[name], ckpt_commit, staging / "checkpoint", progress)
    weight_map: dict[str, str] = {}
    for number, extract in enumerate(extracts):
        target = staging / "checkpoint" / f"extract-{number:05d}.safetensors"
        report(f"fetching {len(extract.names)} tensors from {extract.shard.path}")
        fetch_extract(hub, ckpt_commit, extract, target, progress)
        weight_map |= {name: target.name for name in extract.names}
    extracts_index = staging / "checkpoint" / INDEX_FILE
    part = extracts_index.with_name(INDEX_FILE + ".part")
    part.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}), encoding="utf-8")
    os.replace(part, extracts_index)

    report("writing the bundle")
    try:
        bundle = convert_checkpoint(
            staging / "checkpoint",
            out,
            thinker_gguf=gguf_path,
            report=report,
            link_thinker=True,
            mmproj=mmproj_path,
            dtype="f16",  # only the vision projector, when it is made here
        )
    except ModelFileError as exc:
        raise _fetched_anew(exc, staging) from None
    shutil.rmtree(staging)
    return bundle


def _fetched_anew(exc: ModelFileError, staging: Path) -> OmnideskError:
    """A fetched file that the conversion refused is deleted, so that the next run fetches it again
    (kept, it was reused by every later run, whatever the Hub served then)."""
    path = exc.path.resolve()
    if not path.is_relative_to(staging.resolve()) or not path.is_file():
        return exc
    path.unlink()
    return OmnideskError(
        f"{path.name} from the Hub: {exc.problem}. It was deleted: run it again to fetch it anew "
        "(if the Hub serves it so again, the repository itself is damaged)"
    )


def _thinker_file(files: dict[str, RemoteFile], quant: str, repo: str) -> RemoteFile:
    suffix = f"-{quant}.gguf".lower()
    matches = [
        f for f in files.values() if f.path.lower().endswith(suffix) and not f.path.startswith("mmproj")
    ]
    if len(matches) != 1:
        available = sorted(
            f.path.rsplit("-", 1)[-1].removesuffix(".gguf")
            for f in files.values()
            if f.path.endswith(".gguf") and not f.path.startswith("mmproj")
        )
        raise OmnideskError(
            f"{repo} has no single {quant} Thinker; available: {', '.join(available) or 'none'}"
        )
    return matches[0]


def _mmproj_file(files: dict[str, RemoteFile]) -> RemoteFile | None:
    """The vision projector GGUF, preferring Q8_0, then f16, then any."""
    candidates = sorted(
        f.path for f in files.values() if f.path.startswith("mmproj") and f.path.endswith(".gguf")
    )
    for preference in ("q8_0", "f16", ""):
        for path in candidates:
            if preference in path.lower():
                return files[path]
    return None


def _check_disk_space(staging: Path, out: Path, whole: list[RemoteFile], extracts: list[Extract]) -> None:
    present = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
    needed = sum(f.size for f in whole) + 2 * sum(e.size for e in extracts) - present
    free = shutil.disk_usage(staging).free
    if needed * DISK_MARGIN > free:
        raise OmnideskError(
            f"the download needs {needed * DISK_MARGIN / 1e9:.1f} GB free in {out.parent}, "
            f"which has {free / 1e9:.1f} GB: free some space or choose another folder"
        )


def _read_index(path: Path) -> dict[str, Any]:
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
            raise ValueError("no weight_map")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in index["weight_map"].items()):
            raise ValueError("a weight_map entry is not a tensor name with a shard name")
    except (OSError, ValueError) as exc:
        path.unlink(missing_ok=True)
        raise OmnideskError(
            f"{INDEX_FILE} from the Hub is not a safetensors index ({reason(exc)}): run again"
        ) from None
    return index
