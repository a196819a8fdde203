"""The Hugging Face Hub as a download needs it: a repository's files, whole files and byte ranges.

File lists come from the Hub's API (as huggingface_hub asks it); transfers are ranged GETs
through huggingface_hub's HTTP session and URLs (HF_ENDPOINT and HF_TOKEN honoured). A whole file
is appended to a `.part` file, so that a killed run continues where it stopped, and checked against
the Hub's sha256 (LFS files) or git blob id (small files) before it takes its name.

A misbehaving server costs bounded memory: transfers come in pieces, never past the size asked
for, and a repository's file listing is read up to MAX_LISTING bytes. Transient network failures
(TRANSIENT) are retried RETRIES times; every failure ends in one line saying what happened and
what to do. A `stop` event set from any thread ends a transfer between pieces (DownloadStopped).

Threads: none of its own; a Hub is used from the downloading thread, its `stop` set from any.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx2

from model.errors import OmnideskError
from model.files.bundle import sha256_file

RETRIES = 3
MAX_LISTING = 16 * 2**20  # bytes: a repository's file listing (Qwen2.5-Omni's are a few KB)
TRANSIENT = (ConnectionError, TimeoutError, httpx2.TransportError)  # the network, not the disk
_RETRY_ADVICE = "check the connection and run again to resume"

Progress = Callable[[str, int, int], None]  # (what, bytes done, bytes total)


class DownloadStopped(OmnideskError):
    """The user paused or cancelled; everything fetched so far is kept for the next run."""


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
                f"cannot reach {self.endpoint} ({reason(exc)}): check the connection, or HF_ENDPOINT"
            ) from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # not the Hub's API answering
            raise OmnideskError(
                f"{self.endpoint} did not answer as the Hub does for {repo} ({reason(exc)}): "
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
            except TRANSIENT as exc:
                if attempt == RETRIES - 1:
                    raise network_failure(f"{remote.repo}/{remote.path}", exc) from None
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
            except TRANSIENT as exc:
                if attempt == RETRIES - 1:
                    raise network_failure(f"{remote.repo}/{remote.path}", exc) from None
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


def _relative(path: str) -> str:
    """A repository file name, refused if it would lead out of the staging folder."""
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute() or ".." in parts or "\\" in path:
        raise ValueError(f"the file name {path!r} leads out of the repository")
    return path


def network_failure(what: str, exc: BaseException) -> OmnideskError:
    return OmnideskError(f"{what}: {reason(exc)}; {_RETRY_ADVICE} (or check HF_ENDPOINT)")


def reason(exc: BaseException) -> str:
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
