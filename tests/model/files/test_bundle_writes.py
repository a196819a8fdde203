"""Writing bundles as transactions: a failed convert or import (a bad shard, a full disk, a kill)
leaves any earlier bundle working and nothing that later looks like a bundle."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import pytest
from safetensors import SafetensorError

from model.errors import ModelFileError, OmnideskError
from model.files.bundle import MANIFEST, Bundle
from model.files.convert import convert_checkpoint
from model.files.store import MODELS_DIR_VARIABLE, list_bundles, remove


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def old_bundle(tiny_bundle: Bundle, tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A copy of the tiny bundle to convert over, and what it holds now."""
    root = Path(shutil.copytree(tiny_bundle.root, tmp_path / "bundle"))
    return root, contents(root)


def assert_untouched(root: Path, before: dict[str, bytes]) -> None:
    assert contents(root) == before
    Bundle.open(root, trust_stamps=False)  # every file hashed again: the old bundle still works
    assert sorted(p.name for p in root.parent.iterdir() if p.name.startswith(root.name)) == [root.name]


def omnidesk(*args: str | Path, models: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **{MODELS_DIR_VARIABLE: str(models)})
    command = [sys.executable, "-m", "app.cli.main", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


class TestConvertOverABundle:
    def test_a_truncated_shard_keeps_the_old_bundle(self, tiny_checkpoint, tiny_bundle: Bundle, tmp_path):
        source = Path(shutil.copytree(tiny_checkpoint.path, tmp_path / "checkpoint"))
        shard = max(source.glob("*.safetensors"))
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
        root, before = old_bundle(tiny_bundle, tmp_path)
        result = omnidesk("models", "convert", "--from-hf", source, "--out", root, models=tmp_path)
        print(result.stderr)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.splitlines()[-1].startswith(f"omnidesk: error: {shard}")
        assert_untouched(root, before)

    def test_a_good_conversion_replaces_it_whole(self, tiny_checkpoint, tiny_bundle: Bundle, tmp_path):
        root, _ = old_bundle(tiny_bundle, tmp_path)
        bundle = convert_checkpoint(tiny_checkpoint.path, root, dtype="f16")
        assert bundle.root == root and bundle.thinker_dtype == "f16"
        assert not (root / "thinker-f32.gguf").exists(), "nothing of the old bundle is left in it"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"], "no staging or old folder left"
        Bundle.open(root, trust_stamps=False)

    def test_a_folder_that_is_not_a_bundle_is_refused(self, tiny_checkpoint, tmp_path):
        out = tmp_path / "documents"
        out.mkdir()
        (out / "letter.txt").write_text("keep me")
        with pytest.raises(OmnideskError, match="holds files but no Omnidesk bundle"):
            convert_checkpoint(tiny_checkpoint.path, out, dtype="f32")
        assert contents(out) == {"letter.txt": b"keep me"}


def ggml_writes_no_more(self, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def safetensors_writes_no_more(*args, **kwargs):
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def copy_writes_no_more(source, target, *args, **kwargs):
    Path(target).write_bytes(Path(source).read_bytes()[:100])
    raise OSError(errno.ENOSPC, "No space left on device", str(target))


FULL_DISKS = {
    "the Thinker GGUF": ("gguf.GGUFWriter.write_tensor_data", ggml_writes_no_more),
    "a safetensors file": ("model.files.convert.save_file", safetensors_writes_no_more),
    "the imported GGUF": ("model.files.convert.shutil.copyfile", copy_writes_no_more),
}


class TestFullDisk:
    @pytest.mark.parametrize("where", sorted(FULL_DISKS))
    def test_over_an_old_bundle(self, where, tiny_checkpoint, tiny_bundle: Bundle, tmp_path, monkeypatch):
        root, before = old_bundle(tiny_bundle, tmp_path)
        target, write = FULL_DISKS[where]
        monkeypatch.setattr(target, write)
        imported = tiny_bundle.file("thinker") if where == "the imported GGUF" else None
        with pytest.raises(OmnideskError) as failed:
            convert_checkpoint(tiny_checkpoint.path, root, dtype="f32", thinker_gguf=imported)
        print(failed.value)
        assert str(failed.value).startswith(f"the disk holding {tmp_path} is full: free some space")
        monkeypatch.undo()
        assert_untouched(root, before)

    def test_writing_the_manifest_of_a_new_bundle(self, tiny_checkpoint, tmp_path, monkeypatch):
        original = Path.write_text

        def full(self, data, *args, **kwargs):
            if self.name == MANIFEST + ".part":
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
            return original(self, data, *args, **kwargs)

        monkeypatch.setattr(Path, "write_text", full)
        with pytest.raises(OmnideskError, match="is full"):
            convert_checkpoint(tiny_checkpoint.path, tmp_path / "new", dtype="f32")
        assert sorted(tmp_path.iterdir()) == [], "nothing half-written is left"

    def test_the_command_says_it_in_one_line(self, tiny_checkpoint, tiny_bundle: Bundle, tmp_path):
        """Through `omnidesk models import`, the process writing into a folder that is full: a
        sitecustomize in the child's path makes every safetensors write fail as a full disk does."""
        hooks = tmp_path / "hooks"
        hooks.mkdir()
        (hooks / "sitecustomize.py").write_text(
            "import safetensors.torch\n"
            "def full(*args, **kwargs):\n"
            "    raise safetensors.SafetensorError('I/O error: No space left on device (os error 28)')\n"
            "safetensors.torch.save_file = full\n"
        )
        env = dict(
            os.environ, PYTHONPATH=f"{hooks}{os.pathsep}{os.getcwd()}", **{MODELS_DIR_VARIABLE: str(tmp_path)}
        )
        command = [
            sys.executable,
            "-m",
            "app.cli.main",
            "models",
            "import",
            str(tiny_checkpoint.path),
            "--name",
            "tiny",
        ]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        print(result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.startswith("omnidesk: error")]
        assert result.returncode == 1 and "Traceback" not in result.stderr and len(lines) == 1
        assert "is full: free some space" in lines[0]
        assert not any(p.name.startswith("tiny") for p in tmp_path.iterdir())


KILLED_IMPORT = """
import os, signal, sys
from pathlib import Path
import model.files.convert as convert
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
convert.save_safetensors = die
convert.convert_checkpoint(Path(sys.argv[1]), Path(sys.argv[2]), dtype="f32")
"""


class TestKilledImport:
    def test_is_listed_removable_and_imported_again(self, tiny_checkpoint, tmp_path):
        store = tmp_path / "models"
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_IMPORT, str(tiny_checkpoint.path), str(store / "tiny")], timeout=300
        )
        assert killed.returncode == -9
        assert not (store / "tiny").exists() and (store / "tiny.partial" / "thinker-f32.gguf").is_file()
        [listed] = list_bundles(store)
        assert listed.name == "tiny.partial" and listed.incomplete
        print(listed.state)
        assert "was interrupted: run it again, or omnidesk models remove tiny.partial" in listed.state
        shown = omnidesk("models", "list", models=store)
        assert "tiny.partial" in shown.stdout and "incomplete" in shown.stdout

        again = omnidesk("models", "import", tiny_checkpoint.path, "--name", "tiny", models=store)
        assert again.returncode == 0, again.stderr
        assert sorted(p.name for p in store.iterdir()) == ["tiny"], "the import started over and finished"
        Bundle.open(store / "tiny", trust_stamps=False)

    def test_a_staging_folder_is_removed_by_name(self, tiny_checkpoint, tmp_path):
        store = tmp_path / "models"
        staging = store / "tiny.partial"
        staging.mkdir(parents=True)
        (staging / ".staging").write_text("the conversion of somewhere\n")
        (staging / "thinker-f32.gguf.part").write_bytes(b"GGUF")
        removed = omnidesk("models", "remove", "tiny.partial", "--yes", models=store)
        assert removed.returncode == 0, removed.stderr
        assert not staging.exists()

    def test_an_import_over_an_existing_bundle_says_what_to_do(self, tiny_checkpoint, tiny_bundle, tmp_path):
        store = tmp_path / "models"
        shutil.copytree(tiny_bundle.root, store / "tiny")
        result = omnidesk("models", "import", tiny_checkpoint.path, "--name", "tiny", models=store)
        assert result.returncode == 1
        assert "already exists: choose another --name, or remove it first (omnidesk models remove tiny)" in (
            result.stderr
        )

    def test_remove_still_refuses_a_folder_that_is_not_ours(self, tmp_path):
        (tmp_path / "photos").mkdir()
        with pytest.raises(OmnideskError, match="holds no Omnidesk bundle"):
            remove(tmp_path / "photos")


def test_the_new_bundle_is_checked_before_it_replaces_the_old(
    tiny_checkpoint, tiny_bundle: Bundle, tmp_path, monkeypatch
):
    """Our own writer making a GGUF llama.cpp would refuse: the old bundle stays."""
    real = gguf.GGUFWriter.add_block_count
    monkeypatch.setattr(gguf.GGUFWriter, "add_block_count", lambda self, n: real(self, n + 1))
    root, before = old_bundle(tiny_bundle, tmp_path)
    with pytest.raises(ModelFileError, match="tensor blk.2.attn_norm.weight is missing"):
        convert_checkpoint(tiny_checkpoint.path, root, dtype="f32")
    assert_untouched(root, before)
