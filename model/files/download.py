"""`omnidesk models download`: a bundle from the Hugging Face Hub, resumable and verified.

What is fetched, for size S (3b or 7b) and quantization Q:
- from ggml-org/Qwen2.5-Omni-S-GGUF: the Thinker GGUF of quantization Q and the vision
  projector (mmproj, Q8_0 when there is one), whole;
- from Qwen/Qwen2.5-Omni-S: config.json, preprocessor_config.json, tokenizer.json,
  tokenizer_config.json, spk_dict.pt and the safetensors index whole, and from the shards only the byte
  ranges of the tensors the bundle needs (thinker.audio_tower.*, talker.*, token2wav.*).

File lists come from the Hub's API (as huggingface_hub asks it); transfers are ranged GETs
through huggingface_hub's HTTP session and URLs (HF_ENDPOINT and HF_TOKEN honoured), appended to `.part` files
so that a killed run continues where it stopped. Whole files are checked against the
Hub's sha256 (LFS files) or git blob id (small files). Tensor
ranges cannot be checked against a shard's sha256 without fetching the whole shard:
they are checked against the shard's own header (names, dtypes, shapes, lengths).
Everything lands in "<bundle>.download/" first; an interrupted run resumes from it
and no bundle manifest exists until the end, so a partial download never looks complete.
What the Hub sent stays as it came (the checkpoint's own index in index/); what is made from
it (the extracts' index) is written whole under a new name and renamed, so a failure at any
step leaves the staging folder in a state the next run resumes from.

A misbehaving server costs bounded memory: whole files and tensor ranges go to disk piece by
piece, never past the size asked for, and the only bytes held in memory are a repository's
file listing (at most 16 MiB) and a shard's header, refused above safetensors' own limit
(100 MB) before a byte of it is read. Every network failure ends in one line saying what
happened and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import httpx2

from model.errors import OmnideskError
from model.files.bundle import Bundle, sha256_file
from model.files.convert import NATIVE_PARTS, convert_checkpoint
from model.files.mmproj_gguf import VISION_PREFIX
from model.files.staging import check_replaceable, mark_staging, write_failure

CHECKPOINT_FILES = (
    "config.json",
    "preprocessor_config.json",  # how long a recording the model hears
    "tokenizer.json",
    "tokenizer_config.json",
    "spk_dict.pt",
)
INDEX_FILE = "model.safetensors.index.json"
DISK_MARGIN = 1.05
RETRIES = 3
MAX_HEADER = 100_000_000  # bytes: safetensors refuses a longer header (its MAX_HEADER_SIZE)
MAX_LISTING = 16 * 2**20  # bytes: a repository's file listing (Qwen2.5-Omni's are a few KB)
_TRANSIENT = (ConnectionError, TimeoutError, httpx2.TransportError)  # the network, not the disk
_RETRY_ADVICE = "check the connection and run again to resume"

Progress = Callable[[str, int, int], None]  # (what, bytes done, bytes total)


class Listener:
    """What a download tells its watcher (all calls come from the downloading thread)."""

    def planned(self, transfers: list[tuple[str, int]]) -> None:
        """Every transfer still to come, with its size in bytes (known before the first byte)."""

    def message(self, text: str) -> None:
        """A step begins."""

    def progress(self, what: str, done: int, total: int) -> None:
        """Bytes of one transfer so far."""


class DownloadStopped(OmnideskError):
    """The user paused or cancelled; everything fetched so far is kept for the next run."""


@dataclass(frozen=True)
class Repos:
    gguf: str
    checkpoint: str


def repos_for(size: str) -> Repos:
    if size not in ("3b", "7b"):
        raise OmnideskError(f"unknown model size {size!r}: choose 3b or 7b")
    name = f"Qwen2.5-Omni-{size.upper()}"
    return Repos(gguf=f"ggml-org/{name}-GGUF", checkpoint=f"Qwen/{name}")


@dataclass(frozen=True)
class RemoteFile:
    repo: str
    path: str
    size: int
    sha256: str | None  # LFS files
    blob_id: str | None  # git files

    def check(self, local: Path) -> None:
        if local.stat().st_size != self.size:
            raise _corrupt(self, f"has {local.stat().st_size} bytes, the Hub says {self.size}")
        data_hash = sha256_file(local) if self.sha256 else _git_blob_id(local)
        if data_hash != (self.sha256 or self.blob_id):
            raise _corrupt(self, "does not match the Hub's checksum")


@dataclass(frozen=True)
class TensorSpan:
    local: int  # offset in the extracted file's data section
    remote: int  # absolute offset in the shard
    length: int


@dataclass(frozen=True)
class Extract:
    """Some tensors of one shard, written as a safetensors file of their own."""

    shard: RemoteFile
    header: bytes  # the extracted file's 8-byte length + JSON header
    spans: tuple[TensorSpan, ...]
    names: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.header) + sum(s.length for s in self.spans)


class Hub:
    """The Hub's API for one endpoint and token (HF_ENDPOINT and HF_TOKEN when not given)."""

    def __init__(
        self, endpoint: str | None = None, token: str | None = None, stop: threading.Event | None = None
    ) -> None:
        """`stop`, set from any thread, ends transfers with DownloadStopped between pieces."""
        self.endpoint = endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        self.token = token or os.environ.get("HF_TOKEN") or None
        self.stop = stop or threading.Event()

    def files(self, repo: str) -> tuple[str, dict[str, RemoteFile]]:
        """The repository's commit and its files (the Hub's model info with blobs, as huggingface_hub's
        `model_info` asks for it, read up to MAX_LISTING bytes)."""
        from huggingface_hub.utils import build_hf_headers, get_session

        url = f"{self.endpoint}/api/models/{repo}"
        headers = build_hf_headers(token=self.token)
        try:
            with get_session().stream(
                "GET", url, params={"blobs": "true"}, headers=headers, follow_redirects=True, timeout=60
            ) as response:
                if response.status_code != 200:
                    raise OmnideskError(f"{repo} on {self.endpoint}: {_http_reason(response.status_code)}")
                listing = bytearray()
                for piece in response.iter_bytes():
                    listing += piece
                    if len(listing) > MAX_LISTING:
                        raise ValueError(f"an answer longer than {MAX_LISTING:,} bytes")
            info = json.loads(listing)
            files = {}
            for sibling in info["siblings"]:
                lfs = sibling.get("lfs")
                files[sibling["rfilename"]] = RemoteFile(
                    repo=repo,
                    path=_relative(sibling["rfilename"]),
                    size=int(sibling.get("size") or 0),
                    sha256=str(lfs["sha256"]) if lfs else None,
                    blob_id=sibling.get("blobId"),
                )
        except (OSError, httpx2.TransportError) as exc:
            raise OmnideskError(
                f"cannot reach {self.endpoint} ({_reason(exc)}): check the connection, or HF_ENDPOINT"
            ) from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # not the Hub's API answering
            raise OmnideskError(
                f"{self.endpoint} did not answer as the Hub does for {repo} ({_reason(exc)}): "
                "check HF_ENDPOINT, or try again later"
            ) from None
        return str(info["sha"]), files

    def download(self, remote: RemoteFile, revision: str, folder: Path, progress: Progress) -> Path:
        """Fetch a whole file into `folder`, continuing an earlier run's `.part`, and check it.

        (huggingface_hub's own downloader starts over in every process, which a killed
        multi-GB download cannot afford.)
        """
        local = folder / remote.path
        if local.is_file():
            return local
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(local.name + ".part")
        for attempt in range(RETRIES):
            have = part.stat().st_size if part.exists() else 0
            try:
                with part.open("ab") as f:
                    for piece in self.read_range(remote, revision, have, remote.size):
                        f.write(piece)
                        have += len(piece)
                        progress(remote.path, have, remote.size)
                break
            except _TRANSIENT as exc:
                if attempt == RETRIES - 1:
                    raise _network_failure(f"{remote.repo}/{remote.path}", exc) from None
        try:
            remote.check(part)
        except OmnideskError:
            part.unlink()
            raise
        os.replace(part, local)
        return local

    def read_bytes(self, remote: RemoteFile, revision: str, start: int, end: int) -> bytes:
        """Bytes start..end-1 of a remote file into memory (callers bound end - start), with retries."""
        for attempt in range(RETRIES):
            try:
                return b"".join(self.read_range(remote, revision, start, end))
            except _TRANSIENT as exc:
                if attempt == RETRIES - 1:
                    raise _network_failure(f"{remote.repo}/{remote.path}", exc) from None
        raise AssertionError("unreachable")

    def read_range(self, remote: RemoteFile, revision: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes start..end-1 of a remote file, in pieces."""
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session

        url = hf_hub_url(remote.repo, remote.path, revision=revision, endpoint=self.endpoint)
        headers = build_hf_headers(token=self.token) | {"Range": f"bytes={start}-{end - 1}"}
        if start >= end:
            return
        with get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=60) as response:
            if response.status_code == 429 or response.status_code >= 500:
                raise ConnectionError(f"the server answered HTTP {response.status_code}")
            if response.status_code == 401:
                raise OmnideskError(
                    f"{remote.repo}: access denied (set HF_TOKEN to a token that may read it)"
                )
            if response.status_code not in (200, 206):
                raise OmnideskError(
                    f"{remote.repo}/{remote.path}: the server answered HTTP {response.status_code}: "
                    "check HF_ENDPOINT, or try again later"
                )
            skip = start if response.status_code == 200 else 0  # a server that ignores ranges
            received = 0
            for piece in response.iter_bytes():
                if skip:
                    cut = min(skip, len(piece))
                    piece, skip = piece[cut:], skip - cut
                piece = piece[: end - start - received]
                if piece:
                    received += len(piece)
                    yield piece  # the caller keeps it before a stop is noticed
                if received >= end - start:
                    return
                if self.stop.is_set():
                    raise DownloadStopped("the download was stopped; run it again to resume")
        if received < end - start:
            raise ConnectionError(f"the connection closed after {received} of {end - start} bytes")


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
    extracts = _plan_extracts(hub, ckpt_commit, ckpt_files, _read_index(index_path), prefixes)
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
        _fetch_extract(hub, ckpt_commit, extract, target, progress)
        weight_map |= {name: target.name for name in extract.names}
    extracts_index = staging / "checkpoint" / INDEX_FILE
    part = extracts_index.with_name(INDEX_FILE + ".part")
    part.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}), encoding="utf-8")
    os.replace(part, extracts_index)

    report("writing the bundle")
    bundle = convert_checkpoint(
        staging / "checkpoint",
        out,
        thinker_gguf=gguf_path,
        report=report,
        link_thinker=True,
        mmproj=mmproj_path,
        dtype="f16",  # only the vision projector, when it is made here
    )
    shutil.rmtree(staging)
    return bundle


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


def _plan_extracts(
    hub: Hub, commit: str, files: dict[str, RemoteFile], index: dict, prefixes: tuple[str, ...]
) -> list[Extract]:
    by_shard: dict[str, list[str]] = {}
    for name, shard in index["weight_map"].items():
        if name.startswith(prefixes):
            by_shard.setdefault(shard, []).append(name)
    extracts = []
    for shard_name in sorted(by_shard):
        if shard_name not in files:
            raise OmnideskError(
                f"{files[INDEX_FILE].repo}/{INDEX_FILE} names {shard_name!r}, which the repository lacks: "
                "try again later, or check HF_ENDPOINT"
            )
        shard = files[shard_name]
        data_start, header = _shard_header(hub, commit, shard)
        extracts.append(_extract(shard, data_start, header, set(by_shard[shard_name])))
    return extracts


def _shard_header(hub: Hub, commit: str, shard: RemoteFile) -> tuple[int, dict[str, Any]]:
    """(where the shard's data begins, its header), read with at most MAX_HEADER bytes in memory."""
    where = f"{shard.repo}/{shard.path}"
    (length,) = struct.unpack("<Q", hub.read_bytes(shard, commit, 0, 8))
    if length > min(MAX_HEADER, shard.size - 8):
        raise OmnideskError(
            f"{where} claims a {length:,}-byte header, more than safetensors allows ({MAX_HEADER:,}) "
            f"or the shard holds ({shard.size:,}): the server sent something else; try again later, "
            "or check HF_ENDPOINT"
        )
    try:
        header = json.loads(hub.read_bytes(shard, commit, 8, 8 + length))
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise OmnideskError(
            f"{where} does not start with a safetensors header ({_reason(exc)}): the server sent something "
            "else; try again later, or check HF_ENDPOINT"
        ) from None
    return 8 + length, header


def _extract(shard: RemoteFile, data_start: int, header: dict[str, Any], wanted: set[str]) -> Extract:
    header = {name: _tensor_entry(shard, header, name, data_start) for name in wanted}
    entries = sorted((header[name]["data_offsets"][0], name) for name in wanted)
    new_header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    spans: list[TensorSpan] = []
    local = 0
    for _, name in entries:
        begin, end = header[name]["data_offsets"]
        new_header[name] = {"dtype": header[name]["dtype"], "shape": header[name]["shape"]}
        new_header[name]["data_offsets"] = [local, local + end - begin]
        last = spans[-1] if spans else None
        if last and last.remote + last.length == data_start + begin:
            spans[-1] = TensorSpan(last.local, last.remote, last.length + end - begin)
        else:
            spans.append(TensorSpan(local, data_start + begin, end - begin))
        local += end - begin
    raw = json.dumps(new_header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return Extract(shard, struct.pack("<Q", len(raw)) + raw, tuple(spans), tuple(n for _, n in entries))


def _fetch_extract(hub: Hub, commit: str, extract: Extract, target: Path, progress: Progress) -> None:
    if target.is_file() and target.stat().st_size == extract.size:
        return
    part = target.with_name(target.name + ".part")
    if not part.exists() or part.stat().st_size < len(extract.header):
        part.write_bytes(extract.header)
    for attempt in range(RETRIES):
        try:
            _continue_extract(hub, commit, extract, part, progress)
            break
        except _TRANSIENT as exc:
            if attempt == RETRIES - 1:
                raise _network_failure(f"{extract.shard.repo}/{extract.shard.path}", exc) from None
    os.replace(part, target)


def _continue_extract(hub: Hub, commit: str, extract: Extract, part: Path, progress: Progress) -> None:
    with part.open("r+b") as f:
        done = part.stat().st_size - len(extract.header)
        f.seek(0, os.SEEK_END)
        total = extract.size - len(extract.header)
        for span in extract.spans:
            if done >= span.local + span.length:
                continue
            skip = done - span.local
            for piece in hub.read_range(extract.shard, commit, span.remote + skip, span.remote + span.length):
                f.write(piece)
                done += len(piece)
                progress(extract.shard.path, done, total)
            f.flush()


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
            f"{INDEX_FILE} from the Hub is not a safetensors index ({_reason(exc)}): run again"
        ) from None
    return index


def _tensor_entry(shard: RemoteFile, header: dict[str, Any], name: str, data_start: int) -> dict[str, Any]:
    """The shard header's entry for `name`, checked: its bytes lie inside the shard."""
    entry = header.get(name)
    try:
        if not isinstance(entry, dict):
            raise ValueError("missing")
        begin, end = entry["data_offsets"]
        if not (
            isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= shard.size - data_start
        ):
            raise ValueError(f"data offsets {begin}..{end} outside the shard")
        if not (
            isinstance(entry["dtype"], str) and all(isinstance(n, int) and n >= 0 for n in entry["shape"])
        ):
            raise ValueError("no dtype and shape")
    except (ValueError, TypeError, KeyError) as exc:
        raise OmnideskError(
            f"{shard.repo}/{shard.path}: the header's entry for {name} is unusable ({_reason(exc)}): "
            "try again later, or check HF_ENDPOINT"
        ) from None
    return entry


def _relative(path: str) -> str:
    """A repository file name, refused if it would lead out of the staging folder."""
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute() or ".." in parts or "\\" in path:
        raise ValueError(f"the file name {path!r} leads out of the repository")
    return path


def _network_failure(what: str, exc: BaseException) -> OmnideskError:
    return OmnideskError(f"{what}: {_reason(exc)}; {_RETRY_ADVICE} (or check HF_ENDPOINT)")


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__


def _http_reason(status: int) -> str:
    if status == 401:
        return "access denied (set HF_TOKEN to a token that may read it)"
    if status == 404:
        return "not found"
    return f"the server answered HTTP {status}: try again later, or check HF_ENDPOINT"


def _corrupt(remote: RemoteFile, problem: str) -> OmnideskError:
    return OmnideskError(f"{remote.repo}/{remote.path} {problem}: it was deleted; run the download again")


def _git_blob_id(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
