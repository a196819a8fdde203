"""Some tensors of a checkpoint's remote shard, fetched as a safetensors file of their own.

A shard's header is read first (at most MAX_HEADER bytes, safetensors' own limit, refused before
a byte of it is read) and each wanted tensor's entry checked against the shard's size; the
extract's header is then made, and the tensors' bytes fetched span by span (neighbouring tensors
in one span), appended to a `.part` file that a later run continues. Tensor ranges cannot be
checked against the shard's sha256 without fetching the whole shard: they are checked against the
shard's own header (names, dtypes, shapes, lengths).

Threads: none of its own.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.errors import OmnideskError
from model.files.hub import RETRIES, TRANSIENT, Hub, Progress, RemoteFile, network_failure, reason

INDEX_FILE = "model.safetensors.index.json"
MAX_HEADER = 100_000_000  # bytes: safetensors refuses a longer header (its MAX_HEADER_SIZE)


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


def plan_extracts(
    hub: Hub, commit: str, files: dict[str, RemoteFile], index: dict, prefixes: tuple[str, ...]
) -> list[Extract]:
    """The extracts holding the tensors of `index` (the checkpoint's safetensors index) whose names
    start with `prefixes`, one per shard; each shard's header is read from the Hub."""
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
            f"{where} does not start with a safetensors header ({reason(exc)}): the server sent something "
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


def fetch_extract(hub: Hub, commit: str, extract: Extract, target: Path, progress: Progress) -> None:
    """Fetch `extract` into `target`, continuing an earlier run's `.part` file, with retries."""
    if target.is_file() and target.stat().st_size == extract.size:
        return
    part = target.with_name(target.name + ".part")
    if not part.exists() or part.stat().st_size < len(extract.header):
        part.write_bytes(extract.header)
    for attempt in range(RETRIES):
        try:
            _continue_extract(hub, commit, extract, part, progress)
            break
        except TRANSIENT as exc:
            if attempt == RETRIES - 1:
                raise network_failure(f"{extract.shard.repo}/{extract.shard.path}", exc) from None
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
            f"{shard.repo}/{shard.path}: the header's entry for {name} is unusable ({reason(exc)}): "
            "try again later, or check HF_ENDPOINT"
        ) from None
    return entry
