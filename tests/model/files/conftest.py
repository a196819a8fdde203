"""The loopback Hub serving the tiny model as the Hub does the released one: ggml-org's GGUFs and
Qwen's checkpoint, each in its repository."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from model.files.bundle import Bundle
from model.files.download import download_bundle
from model.files.hub import Hub
from tests.fixtures.fake_hub import FakeHub

GGUF_REPO, CHECKPOINT_REPO = "ggml-org/Qwen2.5-Omni-3B-GGUF", "Qwen/Qwen2.5-Omni-3B"
THINKER = "Qwen2.5-Omni-3B-F32.gguf"
MMPROJ = "mmproj-Qwen2.5-Omni-3B-F32.gguf"
# `omnidesk models download` of the 3B F32 bundle as "tiny" (HF_ENDPOINT set to the loopback Hub).
DOWNLOAD_COMMAND = (
    sys.executable,
    "-m",
    "app.cli.main",
    "models",
    "download",
    "3b",
    "--quant",
    "F32",
    "--name",
    "tiny",
)


@pytest.fixture
def hub(tiny_checkpoint, tiny_bundle: Bundle) -> Iterator[FakeHub]:
    checkpoint = {p.name: p.read_bytes() for p in tiny_checkpoint.path.iterdir() if p.is_file()}
    ggufs = {
        THINKER: tiny_bundle.file("thinker").read_bytes(),
        "Qwen2.5-Omni-3B-Q4_K_M.gguf": b"GGUF not this one",
        MMPROJ: tiny_bundle.file("mmproj").read_bytes(),
    }
    with FakeHub({GGUF_REPO: ggufs, CHECKPOINT_REPO: checkpoint}) as server:
        yield server


def download(hub: FakeHub, out: Path) -> Bundle:
    """The 3B F32 bundle from `hub`, into `out`."""
    return download_bundle("3b", "F32", out, Hub(endpoint=hub.endpoint))
