"""`omnidesk` commands run as a user runs them: a separate process, output read back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from model.files.bundle import Bundle, write_manifest
from model.files.store import MODELS_DIR_VARIABLE
from model.sampling import SamplingOptions
from model.thinker import Thinker
from model.thinker_types import Finished, TokenRun


def omnidesk(
    *args: str | Path, models_dir: Path | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if models_dir is not None:
        env[MODELS_DIR_VARIABLE] = str(models_dir)
    return subprocess.run(
        [sys.executable, "-m", "app.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        input=stdin,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    print(result.stderr)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in result.stderr + result.stdout
    for text in expected:
        assert text in lines[0]


def write_gguf(path: Path, architecture: str, n_vocab: int, n_embd: int) -> Path:
    """A minimal GGUF: an architecture and a token embedding table, nothing else."""
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_tensor("token_embd.weight", np.zeros((n_vocab, n_embd), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def copy_bundle(bundle: Bundle, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle.root, tmp_path / "bundle"))


def rewrite_manifest(root: Path, bundle: Bundle, thinker: Path) -> None:
    """A bundle whose manifest vouches for `thinker`: the GGUF checks themselves must catch it."""
    files = {part: root / entry.path for part, entry in bundle.files.items()} | {"thinker": thinker}
    write_manifest(
        root, files, bundle.config, bundle.tokens, bundle.codec, bundle.voices, bundle.thinker_dtype
    )


class TestAsk:
    def test_json_reply_equals_the_thinker_greedy_reply(self, tiny_bundle: Bundle):
        """--greedy is the reference's greedy Thinker: no repetition penalty (see test_cli_greedy.py)."""
        result = omnidesk(
            "ask", "--models", tiny_bundle.root, "--greedy", "--json", "--max-tokens", "12", "What is this?"
        )
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout.strip().splitlines()[-1])
        assert set(record) >= {"prompt_ids", "reply_ids", "text", "first_token_s", "tokens_per_s"}
        with Thinker(tiny_bundle.file("thinker"), tiny_bundle.tokens) as thinker:
            events = list(
                thinker.generate(
                    [TokenRun(tuple(record["prompt_ids"]))],
                    SamplingOptions(greedy=True, repetition_penalty=1.0),
                    max_tokens=12,
                )
            )
        finished = events[-1]
        assert isinstance(finished, Finished)
        assert record["reply_ids"] == list(finished.reply_ids)
        assert record["text"] in result.stdout
        assert record["first_token_s"] > 0

    def test_text_only_and_seed_are_accepted(self, tiny_bundle: Bundle):
        runs = [
            omnidesk(
                "ask",
                "--models",
                tiny_bundle.root,
                "--text-only",
                "--seed",
                "3",
                "--json",
                "--max-tokens",
                "6",
                "Hi",
            )
            for _ in range(2)
        ]
        replies = [json.loads(r.stdout.strip().splitlines()[-1])["reply_ids"] for r in runs]
        assert replies[0] == replies[1]


class TestBadInput:
    def test_missing_bundle(self, tmp_path: Path):
        result = omnidesk("ask", "--models", tmp_path / "nowhere", "hi", models_dir=tmp_path)
        assert_one_line_error(result, "nowhere", "no bundle named")

    def test_missing_thinker_file(self, tiny_bundle: Bundle, tmp_path: Path):
        root = copy_bundle(tiny_bundle, tmp_path)
        (root / tiny_bundle.files["thinker"].path).unlink()
        assert_one_line_error(omnidesk("ask", "--models", root, "hi"), "thinker-f32.gguf", "missing")

    def test_truncated_thinker_file(self, tiny_bundle: Bundle, tmp_path: Path):
        root = copy_bundle(tiny_bundle, tmp_path)
        thinker = root / tiny_bundle.files["thinker"].path
        thinker.write_bytes(thinker.read_bytes()[: thinker.stat().st_size // 2])
        assert_one_line_error(omnidesk("ask", "--models", root, "hi"), "thinker-f32.gguf", "incomplete")
        rewrite_manifest(root, tiny_bundle, thinker)
        assert_one_line_error(omnidesk("ask", "--models", root, "hi"), "thinker-f32.gguf", "truncated")

    def test_not_a_gguf_file(self, tiny_bundle: Bundle, tmp_path: Path):
        root = copy_bundle(tiny_bundle, tmp_path)
        fake = root / "thinker.gguf"
        fake.write_text("<html>404 Not Found</html>")
        rewrite_manifest(root, tiny_bundle, fake)
        assert_one_line_error(omnidesk("ask", "--models", root, "hi"), "thinker.gguf", "not a GGUF")

    def test_gguf_of_another_architecture(self, tiny_bundle: Bundle, tmp_path: Path):
        root = copy_bundle(tiny_bundle, tmp_path)
        other = write_gguf(root / "llama.gguf", "llama", n_vocab=8, n_embd=4)
        rewrite_manifest(root, tiny_bundle, other)
        assert_one_line_error(omnidesk("ask", "--models", root, "hi"), "llama.gguf", "'llama'")

    def test_missing_bundle_file(self, tiny_bundle: Bundle, tmp_path: Path):
        root = copy_bundle(tiny_bundle, tmp_path)
        (root / "voices.safetensors").unlink()
        assert_one_line_error(omnidesk("ask", "--models", root, "hi"), "voices.safetensors", "missing")

    def test_wrong_sha256(self, tiny_bundle: Bundle, tmp_path: Path):
        root = copy_bundle(tiny_bundle, tmp_path)
        talker = root / "talker.safetensors"
        data = bytearray(talker.read_bytes())
        data[-1] ^= 0xFF
        talker.write_bytes(bytes(data))
        assert_one_line_error(omnidesk("ask", "--models", root, "hi"), "talker.safetensors", "sha256")

    def test_damaged_manifest(self, tiny_bundle: Bundle, tmp_path: Path):
        root = copy_bundle(tiny_bundle, tmp_path)
        (root / "omnidesk.json").write_text("{ not json")
        assert_one_line_error(omnidesk("ask", "--models", root, "hi"), "omnidesk.json", "manifest")

    def test_a_manifest_without_its_thinker(self, tiny_bundle: Bundle, tmp_path: Path):
        root = copy_bundle(tiny_bundle, tmp_path)
        spec = json.loads((root / "omnidesk.json").read_text())
        del spec["files"]["thinker"]
        (root / "omnidesk.json").write_text(json.dumps(spec))
        assert_one_line_error(omnidesk("ask", "--models", root, "hi"), "omnidesk.json", "no thinker file")

    def test_unreadable_speaker_dictionary(self, tiny_checkpoint, tmp_path: Path):
        source = Path(shutil.copytree(tiny_checkpoint.path, tmp_path / "checkpoint"))
        (source / "spk_dict.pt").write_bytes(b"\x80\x04not a pickle at all")
        result = omnidesk("models", "convert", "--from-hf", source, "--out", tmp_path / "out")
        assert_one_line_error(result, "spk_dict.pt", "speaker dictionary")
        assert not (tmp_path / "out" / "omnidesk.json").exists()

    def test_not_a_checkpoint(self, tmp_path: Path):
        result = omnidesk("models", "convert", "--from-hf", tmp_path, "--out", tmp_path / "out")
        assert_one_line_error(result, "config.json", "not found")

    @pytest.mark.parametrize("option", [["--max-tokens", "0"], ["--gpu-layers", "x"]])
    def test_bad_options(self, tiny_bundle: Bundle, option: list[str]):
        result = omnidesk("ask", "--models", tiny_bundle.root, *option, "hi")
        assert result.returncode != 0
        assert "Traceback" not in result.stderr


class TestVerification:
    def test_a_verified_bundle_is_not_hashed_again(self, tiny_bundle: Bundle, tmp_path: Path, monkeypatch):
        root = copy_bundle(tiny_bundle, tmp_path)
        Bundle.open(root)
        calls: list[Path] = []
        monkeypatch.setattr("model.files.bundle.sha256_file", lambda p: calls.append(p) or "")
        Bundle.open(root)
        assert calls == []


class TestModels:
    def test_import_list_verify_path_remove(self, tiny_checkpoint, tiny_bundle: Bundle, tmp_path: Path):
        store = tmp_path / "models"
        assert "No bundles" in omnidesk("models", "list", models_dir=store).stdout
        gguf_file = tiny_bundle.file("thinker")
        imported = omnidesk(
            "models", "import", tiny_checkpoint.path, gguf_file, "--name", "tiny", models_dir=store
        )
        assert imported.returncode == 0, imported.stderr
        bundle = Bundle.open(store / "tiny")
        assert bundle.files["thinker"].sha256 == tiny_bundle.files["thinker"].sha256, (
            "the GGUF is used as it is"
        )
        assert bundle.thinker_dtype == "f32"
        assert "tiny" in omnidesk("models", "list", models_dir=store).stdout
        assert omnidesk("models", "path", "tiny", models_dir=store).stdout.strip() == str(store / "tiny")
        asked = omnidesk("ask", "--models", "tiny", "--max-tokens", "3", "--json", "hi", models_dir=store)
        assert asked.returncode == 0, asked.stderr

        talker = store / "tiny" / "talker.safetensors"
        data = bytearray(talker.read_bytes())
        data[-1] ^= 0xFF
        talker.write_bytes(bytes(data))
        assert_one_line_error(
            omnidesk("models", "verify", "tiny", models_dir=store), "talker.safetensors", "sha256"
        )

        refused = omnidesk("models", "remove", "tiny", models_dir=store, stdin="n\n")
        assert (store / "tiny").exists(), refused.stdout
        removed = omnidesk("models", "remove", "tiny", "--yes", models_dir=store)
        assert removed.returncode == 0 and not (store / "tiny").exists()

    def test_import_refuses_a_gguf_of_another_model(self, tiny_checkpoint, tmp_path: Path):
        other = write_gguf(tmp_path / "other.gguf", "qwen2vl", n_vocab=768, n_embd=32)
        result = omnidesk("models", "import", tiny_checkpoint.path, other, models_dir=tmp_path / "models")
        assert_one_line_error(result, "other.gguf", "do not match")
        assert not (tmp_path / "models" / tiny_checkpoint.path.name / "omnidesk.json").exists()


class TestSpeech:
    def test_ask_writes_the_speech_and_reports_codes_and_marks(self, tiny_bundle: Bundle, tmp_path: Path):
        out = tmp_path / "reply.wav"
        result = omnidesk(
            "ask", "--models", tiny_bundle.root, "--greedy", "--seed", "1", "--max-tokens", "20",
            "--max-codes", "80", "--out", out, "--json", "Say hello",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        record = json.loads(result.stdout.strip().splitlines()[-1])
        assert record["codes"] and {"first_text", "first_code", "first_audio", "done"} <= set(record["marks"])
        # where it was made: the tiny Talker fits llama.cpp, which the Fast profile runs it in on a CPU
        assert "omnidesk: speech on Talker CPU llama.cpp, iq4_nl weights" in result.stderr
        import wave

        with wave.open(str(out)) as wav:
            assert wav.getframerate() == 24_000
            assert wav.getnframes() == 480 * len(record["codes"])

    def test_text_only_speaks_nothing(self, tiny_bundle: Bundle, tmp_path: Path):
        out = tmp_path / "none.wav"
        result = omnidesk(
            "ask",
            "--models",
            tiny_bundle.root,
            "--text-only",
            "--max-tokens",
            "5",
            "--out",
            out,
            "--json",
            "Hi",
        )
        record = json.loads(result.stdout.strip().splitlines()[-1])
        assert record["codes"] == [] and not out.exists()

    def test_play_without_a_sound_card_still_answers(self, tiny_bundle: Bundle):
        result = omnidesk(
            "ask", "--models", tiny_bundle.root, "--play", "--max-tokens", "5", "--max-codes", "20", "Hi"
        )
        assert result.returncode == 0, result.stderr
        assert "replying without playing" in result.stderr or "Traceback" not in result.stderr

    def test_an_unknown_voice_is_one_line(self, tiny_bundle: Bundle):
        result = omnidesk("ask", "--models", tiny_bundle.root, "--voice", "Nobody", "Hi")
        assert_one_line_error(result, "Nobody", "Chelsie")

    def test_chat_keeps_the_conversation_until_eof(self, tiny_bundle: Bundle):
        result = omnidesk(
            "chat", "--models", tiny_bundle.root, "--text-only", "--max-tokens", "5", stdin="First\nSecond\n"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("omnidesk> ") == 2
