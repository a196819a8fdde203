"""Crafted GGUFs that pass a manifest's hash check but that llama.cpp cannot load, or that would end
its process (GGML_ASSERT: SIGABRT; a missing vision tensor: SIGSEGV): refused before llama.cpp sees
them, by `models import` and by a bundle, in one line, the process alive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from model.errors import ModelFileError
from model.files.bundle import MANIFEST, Bundle
from model.files.convert import convert_checkpoint
from model.files.thinker_gguf import check_mmproj_gguf, check_thinker_gguf
from tests.app.cli.test_main import assert_one_line_error, copy_bundle, omnidesk, rewrite_manifest
from tests.fixtures.gguf_surgery import rewrite_gguf

# The tiny Thinker: width 64, 4 heads of 16 (2 for keys and values), feed-forward 128, 2 blocks.
THINKERS: dict[str, tuple[dict[str, Any], str]] = {
    "a block count of 1e6": (
        {"fields": {"qwen2vl.block_count": 1_000_000}},
        "qwen2vl.block_count is 1000000, outside 1..512",
    ),
    "a rotary width other than the head's": (
        {"fields": {"qwen2vl.rope.dimension_count": 8}},
        "qwen2vl.rope.dimension_count is 8, not 16",
    ),
    "M-RoPE sections of zero": (
        {"fields": {"qwen2vl.rope.dimension_sections": [0, 0, 0, 0]}},
        "M-RoPE sections [0, 0, 0, 0] do not split",
    ),
    "no heads": ({"fields": {"qwen2vl.attention.head_count": 0}}, "qwen2vl.attention.head_count is 0"),
    "a wrong attn_q shape": (
        {"tensors": {"blk.0.attn_q.weight": np.zeros((32, 64), np.float32)}},
        "tensor blk.0.attn_q.weight has shape [64, 32], where its header implies [64, 64]",
    ),
    "a missing tensor": ({"drop_tensors": ("blk.1.ffn_up.weight",)}, "tensor blk.1.ffn_up.weight is missing"),
    "a tensor too many": (
        {"tensors": {"blk.2.attn_norm.weight": np.ones(64, np.float32)}},
        "tensor blk.2.attn_norm.weight is not one llama.cpp takes",
    ),
}
# The tiny vision tower: width 32, 2 heads, feed-forward 64, 2 blocks, into the Thinker's 64.
PROJECTORS: dict[str, tuple[dict[str, Any], str]] = {
    "a wrong attn_q shape": (
        {"tensors": {"v.blk.0.attn_q.weight": np.zeros((16, 32), np.float32)}},
        "tensor v.blk.0.attn_q.weight has shape [32, 16], where its header implies [32, 32]",
    ),
    "a wrong merger shape": (
        {"tensors": {"mm.0.weight": np.zeros((64, 128), np.float32)}},
        "tensor mm.0.weight has shape [128, 64]",
    ),
    "no heads": (
        {"fields": {"clip.vision.attention.head_count": 0}},
        "clip.vision.attention.head_count is 0",
    ),
    "no second patch kernel": (
        {"drop_tensors": ("v.patch_embd.weight.1",)},
        "tensor v.patch_embd.weight.1 is missing",
    ),
    "a patch bias": (
        {"tensors": {"v.patch_embd.bias": np.zeros(32, np.float32)}},
        "tensor v.patch_embd.bias is not part of Qwen2.5-Omni's vision tower",
    ),
    "another merge size": (
        {"fields": {"clip.vision.spatial_merge_size": 3}},
        "spatial_merge_size is 3, not 2",
    ),
    "a block count of 1e6": (
        {"fields": {"clip.vision.block_count": 1_000_000}},
        "clip.vision.block_count is 1000000, outside 1..512",
    ),
}


@pytest.fixture(scope="module")
def crafted(tiny_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """(part, kind) -> the crafted file."""
    folder = tmp_path_factory.mktemp("crafted")
    files = {}
    for part, kinds in (("thinker", THINKERS), ("mmproj", PROJECTORS)):
        for number, (kind, (change, _)) in enumerate(kinds.items()):
            files[part, kind] = rewrite_gguf(
                tiny_bundle.file(part), folder / f"{part}-{number}.gguf", **change
            )
    return files


def test_an_unchanged_copy_passes(tiny_bundle: Bundle, tmp_path):
    """The crafting itself changes nothing else: a copy with no change is byte for byte the file."""
    for part in ("thinker", "mmproj"):
        copy = rewrite_gguf(tiny_bundle.file(part), tmp_path / f"{part}.gguf")
        assert copy.read_bytes() == tiny_bundle.file(part).read_bytes()
    check_thinker_gguf(tmp_path / "thinker.gguf")
    check_mmproj_gguf(tmp_path / "mmproj.gguf", width=64)


class TestThinker:
    @pytest.mark.parametrize("kind", sorted(THINKERS))
    def test_the_check_names_what_llama_cpp_would_trip_on(self, kind, crafted):
        path = crafted["thinker", kind]
        with pytest.raises(ModelFileError) as refused:
            check_thinker_gguf(path)
        assert refused.value.path == path and THINKERS[kind][1] in refused.value.problem

    @pytest.mark.parametrize("kind", sorted(THINKERS))
    def test_import_refuses_it_and_writes_nothing(self, kind, crafted, tiny_checkpoint, tmp_path):
        with pytest.raises(ModelFileError, match="Thinker"):
            convert_checkpoint(tiny_checkpoint.path, tmp_path / "tiny", thinker_gguf=crafted["thinker", kind])
        assert list(tmp_path.iterdir()) == []

    def test_the_import_command_says_it_in_one_line(self, crafted, tiny_checkpoint, tmp_path):
        result = omnidesk(
            "models", "import", tiny_checkpoint.path, crafted["thinker", "a wrong attn_q shape"],
            models_dir=tmp_path / "models",
        )  # fmt: skip
        assert_one_line_error(result, "thinker-", THINKERS["a wrong attn_q shape"][1])
        assert not (tmp_path / "models" / tiny_checkpoint.path.name / MANIFEST).exists()

    @pytest.mark.parametrize("kind", sorted(THINKERS))
    def test_a_bundle_holding_it_ends_in_one_line_not_an_abort(self, kind, crafted, tiny_bundle, tmp_path):
        root = copy_bundle(tiny_bundle, tmp_path)
        thinker = root / tiny_bundle.files["thinker"].path
        thinker.write_bytes(crafted["thinker", kind].read_bytes())
        rewrite_manifest(root, tiny_bundle, thinker)  # the hash check passes
        result = omnidesk("ask", "--models", root, "--text-only", "hi")
        assert result.returncode == 1, f"exit status {result.returncode} (negative: killed by a signal)"
        assert_one_line_error(result, str(thinker), THINKERS[kind][1])


class TestProjector:
    @pytest.mark.parametrize("kind", sorted(PROJECTORS))
    def test_the_check_names_what_clip_cpp_would_trip_on(self, kind, crafted):
        path = crafted["mmproj", kind]
        with pytest.raises(ModelFileError) as refused:
            check_mmproj_gguf(path, width=64)
        assert refused.value.path == path and PROJECTORS[kind][1] in refused.value.problem

    @pytest.mark.parametrize("kind", sorted(PROJECTORS))
    def test_a_downloaded_one_is_refused_and_nothing_written(self, kind, crafted, tiny_checkpoint, tmp_path):
        with pytest.raises(ModelFileError, match="mmproj"):
            convert_checkpoint(tiny_checkpoint.path, tmp_path / "tiny", mmproj=crafted["mmproj", kind])
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("kind", sorted(PROJECTORS))
    def test_a_bundle_holding_it_ends_in_one_line_not_a_crash(self, kind, crafted, tiny_bundle, tmp_path):
        root = copy_bundle(tiny_bundle, tmp_path)
        mmproj = root / tiny_bundle.files["mmproj"].path
        mmproj.write_bytes(crafted["mmproj", kind].read_bytes())
        rewrite_manifest(root, tiny_bundle, root / tiny_bundle.files["thinker"].path)
        photo = tmp_path / "photo.png"
        Image.new("RGB", (56, 56), (200, 120, 40)).save(photo)
        result = omnidesk("ask", "--models", root, "--text-only", "--image", photo, "What is this?")
        assert result.returncode == 1, f"exit status {result.returncode} (negative: killed by a signal)"
        assert_one_line_error(result, str(mmproj), PROJECTORS[kind][1])
