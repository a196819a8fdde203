"""Downloads from a Hub stand-in on loopback: whole, resumed, corrupted, out of space, failing."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import gguf
import pytest

from model.errors import OmnideskError
from model.files.bundle import MANIFEST, Bundle
from model.files.checkpoint import Checkpoint
from model.files.download import download_bundle
from model.files.hub import Hub
from model.files.mmproj_gguf import write_mmproj_gguf
from tests.fixtures.fake_hub import FakeHub
from tests.model.files.conftest import CHECKPOINT_REPO, DOWNLOAD_COMMAND, GGUF_REPO, THINKER, download


def shard_bytes(hub: FakeHub) -> tuple[int, int]:
    """(bytes served from the checkpoint's shards, their total size)"""
    shards = {k: len(v) for k, v in hub.repos[CHECKPOINT_REPO].items() if k.endswith(".safetensors")}
    return sum(hub.bytes_served[f"{CHECKPOINT_REPO}/{k}"] for k in shards), sum(shards.values())


def test_a_downloaded_bundle_is_byte_identical_to_a_converted_one(
    hub: FakeHub, tiny_bundle: Bundle, tmp_path
):
    bundle = download(hub, tmp_path / "tiny")
    assert (bundle.root / MANIFEST).read_bytes() == (tiny_bundle.root / MANIFEST).read_bytes()
    for part, entry in tiny_bundle.files.items():
        assert (bundle.root / entry.path).read_bytes() == (tiny_bundle.root / entry.path).read_bytes(), part
    served, total = shard_bytes(hub)
    print(f"shards: {served} of {total} bytes fetched")
    assert served < total, "only the needed tensors' byte ranges are fetched"
    assert not (tmp_path / "tiny.download").exists(), "the staging folder is removed"


def test_a_killed_download_resumes_without_fetching_bytes_twice(hub: FakeHub, tmp_path):
    key = f"{GGUF_REPO}/{THINKER}"
    size = len(hub.repos[GGUF_REPO][THINKER])
    hub.faults.delay_per_chunk_s[key] = 0.2
    script = (
        "import sys; from pathlib import Path; from model.files.download import download_bundle; "
        "from model.files.hub import Hub; "
        f"download_bundle('3b', 'F32', Path(sys.argv[1]), Hub(endpoint='{hub.endpoint}'))"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "tiny")])
    deadline = time.monotonic() + 120
    while hub.bytes_served[key] < size // 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    fetched_before = hub.bytes_served[key]
    assert 0 < fetched_before < size
    assert not (tmp_path / "tiny" / MANIFEST).exists(), "a partial download never looks complete"

    kept = (tmp_path / "tiny.download" / "gguf" / f"{THINKER}.part").stat().st_size
    del hub.faults.delay_per_chunk_s[key]
    bundle = download(hub, tmp_path / "tiny")
    print(f"GGUF: {kept} of {size} bytes kept after the kill; then asked for {hub.ranges_requested(key)[-1]}")
    assert kept > 0 and hub.ranges_requested(key)[-1] == f"bytes={kept}-{size - 1}", "only the missing bytes"
    Bundle.open(bundle.root, trust_stamps=False)


def test_a_connection_cut_mid_shard_is_resumed(hub: FakeHub, tmp_path):
    shard = next(k for k in sorted(hub.repos[CHECKPOINT_REPO]) if k.endswith("11.safetensors"))
    hub.faults.cut_after[f"{CHECKPOINT_REPO}/{shard}"] = 5000
    bundle = download(hub, tmp_path / "tiny")
    Bundle.open(bundle.root, trust_stamps=False)
    served, total = shard_bytes(hub)
    assert served < total


def test_a_server_error_is_retried(hub: FakeHub, tmp_path):
    hub.faults.errors[f"{GGUF_REPO}/{THINKER}"] = 500
    bundle = download(hub, tmp_path / "tiny")
    assert bundle.thinker_dtype == "f32"


def test_a_corrupted_file_is_caught_and_deleted(hub: FakeHub, tmp_path):
    real = hub.repos[GGUF_REPO][THINKER]
    hub.faults.corrupt[f"{GGUF_REPO}/{THINKER}"] = real[:-1] + bytes([real[-1] ^ 0xFF])
    with pytest.raises(OmnideskError, match="checksum"):
        download(hub, tmp_path / "tiny")
    assert not (tmp_path / "tiny.download" / "gguf" / THINKER).exists()
    assert not (tmp_path / "tiny" / MANIFEST).exists()


def test_too_little_disk_space_stops_before_fetching(hub: FakeHub, tmp_path, monkeypatch):
    monkeypatch.setattr(
        "model.files.download.shutil.disk_usage", lambda _: type("U", (), {"free": 100_000})()
    )
    with pytest.raises(OmnideskError, match="needs .* GB free"):
        download(hub, tmp_path / "tiny")
    assert hub.bytes_served[f"{GGUF_REPO}/{THINKER}"] == 0


def test_an_unknown_quantization_lists_the_available_ones(hub: FakeHub, tmp_path):
    with pytest.raises(OmnideskError, match="available: F32, Q4_K_M"):
        download_bundle("3b", "Q6_K", tmp_path / "x", Hub(endpoint=hub.endpoint))


def test_a_missing_repository_is_named(tmp_path):
    with FakeHub({}) as empty, pytest.raises(OmnideskError, match="ggml-org/Qwen2.5-Omni-3B-GGUF.*not found"):
        download_bundle("3b", "Q4_K_M", tmp_path / "x", Hub(endpoint=empty.endpoint))


def test_the_command_honours_hf_endpoint_and_hf_token(hub: FakeHub, tiny_bundle: Bundle, tmp_path):
    hub.token = "secret-token"
    env = dict(os.environ, HF_ENDPOINT=hub.endpoint, OMNIDESK_MODELS_DIR=str(tmp_path))
    env.pop("HF_TOKEN", None)
    command = DOWNLOAD_COMMAND
    denied = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert denied.returncode != 0 and "HF_TOKEN" in denied.stderr and "Traceback" not in denied.stderr
    allowed = subprocess.run(
        command, capture_output=True, text=True, env=env | {"HF_TOKEN": "secret-token"}, timeout=300
    )
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "tiny" / MANIFEST).read_bytes() == (tiny_bundle.root / MANIFEST).read_bytes()


def test_the_vision_projector_comes_along(hub: FakeHub, tiny_checkpoint, tmp_path):
    # A projector llama.cpp can load (a bundle refuses one it cannot), and not the repository's F32 one.
    write_mmproj_gguf(Checkpoint.open(tiny_checkpoint.path), tmp_path / "clip.gguf", "f16")
    projector = (tmp_path / "clip.gguf").read_bytes()
    hub.repos[GGUF_REPO] |= {
        "mmproj-Qwen2.5-Omni-3B-f16.gguf": b"GGUF?",
        "mmproj-Qwen2.5-Omni-3B-Q8_0.gguf": projector,
    }
    bundle = download(hub, tmp_path / "tiny")
    assert bundle.file("mmproj").read_bytes() == projector, "the Q8_0 projector is preferred"
    Bundle.open(bundle.root, trust_stamps=False)


def test_without_a_projector_in_the_repository_one_is_made_from_the_checkpoint(hub: FakeHub, tmp_path):
    del hub.repos[GGUF_REPO]["mmproj-Qwen2.5-Omni-3B-F32.gguf"]
    bundle = download(hub, tmp_path / "tiny")
    reader = gguf.GGUFReader(str(bundle.file("mmproj")))
    assert bytes(reader.get_field("general.architecture").parts[-1]).decode() == "clip"
    file_type = reader.get_field("general.file_type")
    assert int(file_type.parts[-1][0]) == gguf.LlamaFileType.MOSTLY_F16, "made in float16, not float32"
    assert {t.name for t in reader.tensors} >= {"v.patch_embd.weight", "v.patch_embd.weight.1", "mm.2.weight"}


def test_a_damaged_vision_projector_is_named(hub: FakeHub, tmp_path):
    hub.repos[GGUF_REPO]["mmproj-Qwen2.5-Omni-3B-Q8_0.gguf"] = b"<html>oops</html>"
    with pytest.raises(OmnideskError, match="mmproj-Qwen2.5-Omni-3B-Q8_0.gguf.*not a GGUF"):
        download(hub, tmp_path / "tiny")
    assert not (tmp_path / "tiny" / MANIFEST).exists()
