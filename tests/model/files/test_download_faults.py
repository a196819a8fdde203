"""Downloads against a loopback Hub that misbehaves: each failure is one line that says what to do,
the staging folder survives it, the next run resumes, and memory stays bounded."""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import subprocess
import tracemalloc
from pathlib import Path

import pytest
from safetensors import SafetensorError

from model.errors import OmnideskError
from model.files.bundle import MANIFEST, Bundle
from model.files.extracts import MAX_HEADER
from model.files.hub import MAX_LISTING, Hub
from model.files.store import MODELS_DIR_VARIABLE, list_bundles
from tests.fixtures.fake_hub import FakeHub
from tests.model.files.conftest import CHECKPOINT_REPO, DOWNLOAD_COMMAND, GGUF_REPO, MMPROJ, THINKER, download

INDEX = f"{CHECKPOINT_REPO}/model.safetensors.index.json"
MEMORY_BOUND = 16 * 2**20  # bytes of Python allocations a refused response may cost (tracemalloc peak)


def first_shard(hub: FakeHub) -> str:
    return f"{CHECKPOINT_REPO}/" + min(k for k in hub.repos[CHECKPOINT_REPO] if k.endswith(".safetensors"))


def full_disk(*args, **kwargs):
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def fail_at(step: str, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `step` of a download fail every time it is tried."""
    shard = f"{CHECKPOINT_REPO}/" + max(k for k in hub.repos[CHECKPOINT_REPO] if k.endswith(".safetensors"))
    faults = {
        "the GGUF repository": lambda: hub.faults.api_down.update({GGUF_REPO: 500}),
        "the checkpoint repository": lambda: hub.faults.api_down.update({CHECKPOINT_REPO: 503}),
        "the index": lambda: hub.faults.down.update({INDEX: 500}),
        "a shard header": lambda: hub.faults.down.update({first_shard(hub): 502}),
        "the Thinker": lambda: hub.faults.down.update({f"{GGUF_REPO}/{THINKER}": 500}),
        "the projector": lambda: hub.faults.cut_every.update({f"{GGUF_REPO}/{MMPROJ}": 1000}),
        "a checkpoint file": lambda: hub.faults.down.update({f"{CHECKPOINT_REPO}/spk_dict.pt": 404}),
        "tensor ranges": lambda: hub.faults.cut_every.update({shard: 5000}),
        "writing the bundle": lambda: monkeypatch.setattr("model.files.convert.save_file", full_disk),
    }
    faults[step]()


STEPS = [
    "the GGUF repository",
    "the checkpoint repository",
    "the index",
    "a shard header",
    "the Thinker",
    "the projector",
    "a checkpoint file",
    "tensor ranges",
    "writing the bundle",
]


@pytest.mark.parametrize("step", STEPS)
def test_a_failure_at_each_step_is_one_line_and_the_next_run_resumes(
    step, hub: FakeHub, tiny_bundle: Bundle, tmp_path, monkeypatch
):
    fail_at(step, hub, monkeypatch)
    with pytest.raises(OmnideskError) as failed:
        download(hub, tmp_path / "tiny")
    message = str(failed.value)
    print(f"{step}: {message}")
    assert "\n" not in message and (
        "run it again" in message or "try again" in message or "HF_ENDPOINT" in message
    )
    assert not (tmp_path / "tiny" / MANIFEST).exists()

    for table in (hub.faults.api_down, hub.faults.down, hub.faults.cut_every):
        table.clear()
    monkeypatch.undo()
    thinker_served = hub.bytes_served[f"{GGUF_REPO}/{THINKER}"]
    bundle = download(hub, tmp_path / "tiny")
    assert (bundle.root / MANIFEST).read_bytes() == (tiny_bundle.root / MANIFEST).read_bytes()
    Bundle.open(bundle.root, trust_stamps=False)
    if step in STEPS[STEPS.index("the projector") :]:
        assert hub.bytes_served[f"{GGUF_REPO}/{THINKER}"] == thinker_served, (
            "the Thinker is not fetched again"
        )
    assert not (tmp_path / "tiny.download").exists() and not (tmp_path / "tiny.partial").exists()


def test_a_failed_last_step_keeps_the_hubs_index(hub: FakeHub, tmp_path, monkeypatch):
    """The last step once overwrote the Hub's index with the extracts' own, so that every later run
    raised KeyError: 'extract-00000.safetensors'."""
    fail_at("writing the bundle", hub, monkeypatch)
    with pytest.raises(OmnideskError, match="is full"):
        download(hub, tmp_path / "tiny")
    kept = tmp_path / "tiny.download" / "index" / "model.safetensors.index.json"
    assert kept.read_bytes() == hub.repos[CHECKPOINT_REPO]["model.safetensors.index.json"]
    listed = [b for b in list_bundles(tmp_path) if b.name == "tiny.download"]
    assert listed and listed[0].incomplete and "run it again" in listed[0].state
    monkeypatch.undo()
    download(hub, tmp_path / "tiny")


def test_a_fetched_file_the_conversion_refuses_is_fetched_again(hub: FakeHub, tmp_path):
    """The Hub served a bad speaker dictionary (its checksum matching): a later run against a good
    Hub had reused it from the staging folder and failed the same way, every time."""
    good = hub.repos[CHECKPOINT_REPO]["spk_dict.pt"]
    hub.repos[CHECKPOINT_REPO]["spk_dict.pt"] = b"\x80\x04not a pickle at all"
    with pytest.raises(OmnideskError) as failed:
        download(hub, tmp_path / "tiny")
    message = str(failed.value)
    assert "spk_dict.pt" in message and "speaker dictionary" in message and "run it again" in message
    assert not (tmp_path / "tiny.download" / "checkpoint" / "spk_dict.pt").exists()
    hub.repos[CHECKPOINT_REPO]["spk_dict.pt"] = good
    bundle = download(hub, tmp_path / "tiny")
    Bundle.open(bundle.root, trust_stamps=False)


class TestMisbehavingHub:
    def test_nothing_listening(self, tmp_path):
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
        with pytest.raises(
            OmnideskError, match=r"cannot reach .*refused.*: check the connection, or HF_ENDPOINT"
        ):
            Hub(endpoint=f"http://127.0.0.1:{port}").files(GGUF_REPO)

    def test_a_server_error_on_the_api(self, hub: FakeHub, tmp_path):
        hub.faults.api_down[GGUF_REPO] = 500
        with pytest.raises(OmnideskError, match="HTTP 500: try again later, or check HF_ENDPOINT"):
            download(hub, tmp_path / "tiny")
        assert not (tmp_path / "tiny.download").exists(), "nothing is written before the files are known"

    def test_a_connection_cut_every_time(self, hub: FakeHub, tmp_path):
        hub.faults.cut_every[f"{GGUF_REPO}/{THINKER}"] = 10_000
        with pytest.raises(
            OmnideskError, match=r"closed connection .*check the connection and run again to resume"
        ):
            download(hub, tmp_path / "tiny")

    def test_a_garbage_shard_header(self, hub: FakeHub, tmp_path):
        shard = first_shard(hub)
        real = hub.repos[CHECKPOINT_REPO][shard.split("/", 2)[2]]
        hub.faults.corrupt[shard] = struct.pack("<Q", 64) + b"\x80" * 64 + real[72:]
        with pytest.raises(OmnideskError, match=r"does not start with a safetensors header \(.*utf-8"):
            download(hub, tmp_path / "tiny")

    def test_a_header_entry_pointing_outside_the_shard(self, hub: FakeHub, tmp_path):
        shard = first_shard(hub)
        real = hub.repos[CHECKPOINT_REPO][shard.split("/", 2)[2]]
        (length,) = struct.unpack("<Q", real[:8])
        header = json.loads(real[8 : 8 + length])
        name = next(n for n in header if n != "__metadata__")
        header[name]["data_offsets"] = [0, 10**12]
        raw = json.dumps(header).encode()
        hub.faults.corrupt[shard] = struct.pack("<Q", len(raw)) + raw + real[8 + length :]
        with pytest.raises(OmnideskError, match=r"the header's entry for .* is unusable \(data offsets"):
            download(hub, tmp_path / "tiny")

    def test_a_huge_header_claim_streamed_forever_costs_bounded_memory(self, hub: FakeHub, tmp_path):
        shard = first_shard(hub)
        hub.faults.endless[shard] = struct.pack("<Q", 2**40)
        tracemalloc.start()
        try:
            with pytest.raises(OmnideskError, match=r"claims a 1,099,511,627,776-byte header, more than"):
                download(hub, tmp_path / "tiny")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        sent = hub.bytes_served[shard]
        print(f"peak Python allocations {peak / 2**20:.1f} MiB; the server sent {sent:,} bytes")
        assert peak < MEMORY_BOUND
        assert hub.bytes_served[shard] < 2**40

    def test_an_endless_file_listing_costs_bounded_memory(self, hub: FakeHub, tmp_path):
        hub.faults.endless[GGUF_REPO] = b'{"siblings": ['
        tracemalloc.start()
        try:
            with pytest.raises(
                OmnideskError, match=r"did not answer as the Hub does .*longer than 16,777,216 bytes"
            ):
                download(hub, tmp_path / "tiny")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        print(f"peak Python allocations {peak / 2**20:.1f} MiB")
        assert peak < MEMORY_BOUND + 2 * MAX_LISTING

    def test_a_header_claim_within_the_limit_but_past_the_shard(self, hub: FakeHub, tmp_path):
        shard = first_shard(hub)
        hub.faults.endless[shard] = struct.pack("<Q", MAX_HEADER - 1)
        with pytest.raises(OmnideskError, match="or the shard holds"):
            download(hub, tmp_path / "tiny")


def omnidesk_download(endpoint: str, models: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_ENDPOINT=endpoint, **{MODELS_DIR_VARIABLE: str(models)})
    env.pop("HF_TOKEN", None)
    command = DOWNLOAD_COMMAND
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("fault", ["cut", "garbage header", "server error"])
def test_the_command_prints_the_failure_on_a_line_of_its_own(fault, hub: FakeHub, tmp_path):
    key = f"{GGUF_REPO}/{THINKER}"
    if fault == "cut":
        hub.faults.cut_every[key] = len(hub.repos[GGUF_REPO][THINKER]) // 2  # after progress was drawn
    elif fault == "garbage header":
        hub.faults.corrupt[first_shard(hub)] = struct.pack("<Q", 16) + b"\x80" * 16
    else:
        hub.faults.api_down[CHECKPOINT_REPO] = 500
    result = omnidesk_download(hub.endpoint, tmp_path / "models")
    print(result.stderr)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.rstrip("\n").split("\n")[-1]
    assert last.startswith("omnidesk: error: ") and "\r" not in last, "the error starts a line of its own"


def test_a_full_disk_while_writing_the_staging_folder_is_one_line(hub: FakeHub, tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("model.files.download.fetch_extract", no_space)
    with pytest.raises(OmnideskError, match=r"is full: free some space .*what was fetched is kept"):
        download(hub, tmp_path / "tiny")
    assert (tmp_path / "tiny.download" / "gguf" / THINKER).is_file(), "kept for the next run"


def test_a_folder_that_is_not_a_bundle_is_refused_before_fetching(hub: FakeHub, tmp_path):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "notes.txt").write_text("mine")
    with pytest.raises(OmnideskError, match="holds files but no Omnidesk bundle"):
        download(hub, tmp_path / "tiny")
    assert sum(hub.bytes_served.values()) == 0 and not (tmp_path / "tiny.download").exists()
