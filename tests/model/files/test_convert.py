"""`models convert`: the bundle written from an original checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors import safe_open

from model.audio_features import recording_limit
from model.audio_rates import INPUT_SAMPLE_RATE
from model.errors import ModelFileError
from model.files.bundle import MANIFEST, Bundle, sha256_file, write_manifest
from model.files.checkpoint import Checkpoint
from model.files.convert import NATIVE_PARTS, convert_checkpoint
from model.files.thinker_gguf import check_thinker_gguf
from model.thinker import Thinker
from model.thinker_types import TokenRun


def test_manifest_lists_every_file_with_size_and_hash(tiny_bundle: Bundle):
    assert set(tiny_bundle.files) == {"thinker", "mmproj", "audio_encoder", "talker", "token2wav", "voices"}
    for entry in tiny_bundle.files.values():
        path = tiny_bundle.root / entry.path
        assert path.stat().st_size == entry.size
        assert sha256_file(path) == entry.sha256
    assert tiny_bundle.thinker_dtype == "f32"


def test_special_ids_come_from_the_checkpoint(tiny_bundle: Bundle, tiny_checkpoint):
    talker = tiny_bundle.config["talker_config"]
    assert tiny_bundle.tokens["tts_text_pad"] == talker["tts_text_pad_token_id"]
    assert tiny_bundle.tokens["tts_text_eos"] == talker["tts_text_end_token_id"]
    assert tiny_bundle.codec == {"bos": 101, "eos": 102, "pad": 100, "mask": 103}
    assert tiny_bundle.voices == tiny_checkpoint.voices
    assert tiny_bundle.tokens["im_end"] == tiny_checkpoint.token_ids["<|im_end|>"]


def test_native_parts_keep_the_checkpoint_names_and_values(tiny_bundle: Bundle, tiny_checkpoint):
    checkpoint = Checkpoint.open(tiny_checkpoint.path)
    for part, prefix in NATIVE_PARTS.items():
        with safe_open(str(tiny_bundle.file(part)), framework="pt") as f:
            names = sorted(f.keys())  # noqa: SIM118
            assert names == checkpoint.names(prefix)
            for name, tensor in checkpoint.tensors(names):
                assert torch.equal(f.get_tensor(name), tensor), name


def test_voices_come_from_the_speaker_dictionary(tiny_bundle: Bundle, tiny_checkpoint):
    speakers = torch.load(tiny_checkpoint.path / "spk_dict.pt", weights_only=True)
    with safe_open(str(tiny_bundle.file("voices")), framework="pt") as f:
        for name, entry in speakers.items():
            assert torch.equal(f.get_tensor(f"{name}.cond"), entry["cond"].reshape(-1))
            assert torch.equal(f.get_tensor(f"{name}.ref_mel"), entry["ref_mel"][0])
            assert int(f.get_tensor(f"{name}.bos_token")) == entry["bos_token"]


def test_thinker_gguf_is_a_qwen2vl_model_with_mrope_sections(tiny_bundle: Bundle, tiny_checkpoint):
    info = check_thinker_gguf(tiny_bundle.file("thinker"))
    reader = info.reader
    sections = reader.get_field("qwen2vl.rope.dimension_sections")
    assert [int(sections.parts[i][0]) for i in sections.data] == [2, 3, 3, 0]
    assert info.n_embd == 64 and info.n_vocab == 768
    assert {t.name for t in reader.tensors} >= {"token_embd.weight", "output.weight", "blk.1.ffn_down.weight"}


def test_conversion_is_deterministic(tiny_checkpoint, tiny_bundle: Bundle, tmp_path):
    again = convert_checkpoint(tiny_checkpoint.path, tmp_path / "again", dtype="f32")
    assert {p: e.sha256 for p, e in again.files.items()} == {
        p: e.sha256 for p, e in tiny_bundle.files.items()
    }


def test_quantized_thinker_loads_and_embeds_close_to_float(tiny_checkpoint, tiny_bundle: Bundle, tmp_path):
    quantized = convert_checkpoint(tiny_checkpoint.path, tmp_path / "q8", dtype="f16", quant="Q8_0")
    assert quantized.thinker_dtype == "Q8_0"
    assert quantized.file("thinker").name == "thinker-Q8_0.gguf"
    assert not (quantized.root / "thinker-f16.gguf").exists(), "the float intermediate is removed"
    reader = gguf.GGUFReader(str(quantized.file("thinker")))
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.ffn_up.weight"] == gguf.GGMLQuantizationType.Q8_0
    ids = list(range(0, 700, 7))
    with (
        Thinker(quantized.file("thinker"), quantized.tokens) as q,
        Thinker(tiny_bundle.file("thinker"), tiny_bundle.tokens) as f,
    ):
        exact, approx = f.input_embeddings(ids), q.input_embeddings(ids)
        relative = np.abs(approx - exact).max() / np.abs(exact).max()
        print(f"Q8_0 embedding rows: max relative error {relative:.2e}")
        assert relative < 1e-2
        events = list(q.generate([TokenRun(tuple(ids[:20]))], max_tokens=5))
        assert events[-1].reply_ids


def test_an_interrupted_conversion_leaves_no_manifest(tiny_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "interrupted"

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("model.files.convert.save_file", fail)
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(tiny_checkpoint.path, out, dtype="f32")
    assert not (out / MANIFEST).exists()
    assert not list(out.glob("*.safetensors")), "only .part files may remain"


def test_manifest_records_the_checkpoint_config(tiny_bundle: Bundle, tiny_checkpoint):
    config = json.loads((tiny_checkpoint.path / "config.json").read_text())
    assert tiny_bundle.config == config


class TestPreprocessorConfig:
    """How long a recording the model hears comes from the checkpoint, through the bundle."""

    def test_the_manifest_keeps_the_checkpoints_preprocessor_config(
        self, tiny_bundle: Bundle, tiny_checkpoint
    ):
        released = json.loads((tiny_checkpoint.path / "preprocessor_config.json").read_text())
        assert tiny_bundle.preprocessor == released
        assert recording_limit(tiny_bundle.preprocessor) == 300 * INPUT_SAMPLE_RATE

    def test_a_transformers_5_processor_config_is_read_as_transformers_reads_it(
        self, tiny_checkpoint, tmp_path
    ):
        """transformers 5's processor nests the extractor in processor_config.json, which comes first."""
        from transformers import WhisperFeatureExtractor

        copy = Path(shutil.copytree(tiny_checkpoint.path, tmp_path / "checkpoint"))
        extractor = json.loads((copy / "preprocessor_config.json").read_text()) | {"chunk_length": 45}
        (copy / "processor_config.json").write_text(json.dumps({"feature_extractor": extractor}))
        preprocessor = Checkpoint.open(copy).preprocessor()
        assert preprocessor == extractor
        assert recording_limit(preprocessor) == WhisperFeatureExtractor.from_pretrained(str(copy)).n_samples

    def test_a_bundle_without_one_hears_as_the_released_checkpoints(self, tiny_bundle: Bundle, tmp_path):
        """Bundles made before the config was kept: the released checkpoints' 300 s."""
        root = Path(shutil.copytree(tiny_bundle.root, tmp_path / "bundle"))
        files = {part: root / entry.path for part, entry in tiny_bundle.files.items()}
        b = tiny_bundle
        write_manifest(root, files, b.config, b.tokens, b.codec, b.voices, b.thinker_dtype)
        assert "preprocessor" not in json.loads((root / MANIFEST).read_text())
        assert Bundle.open(root).preprocessor is None
        assert recording_limit(None) == 300 * INPUT_SAMPLE_RATE

    def test_a_checkpoint_without_one_converts_without_one(self, tiny_checkpoint, tmp_path):
        copy = Path(shutil.copytree(tiny_checkpoint.path, tmp_path / "checkpoint"))
        (copy / "preprocessor_config.json").unlink()
        assert Checkpoint.open(copy).preprocessor() is None

    @pytest.mark.parametrize("part", ["thinker", "talker", "token2wav", "voices"])
    def test_a_manifest_without_a_part_every_bundle_holds_is_refused(
        self, tiny_bundle: Bundle, tmp_path, part
    ):
        root = Path(shutil.copytree(tiny_bundle.root, tmp_path / "bundle"))
        spec = json.loads((root / MANIFEST).read_text())
        del spec["files"][part]
        (root / MANIFEST).write_text(json.dumps(spec))
        with pytest.raises(ModelFileError, match=f"the manifest lists no {part} file"):
            Bundle.open(root)

    def test_a_manifest_whose_preprocessor_is_not_an_object_is_refused(self, tiny_bundle: Bundle, tmp_path):
        root = Path(shutil.copytree(tiny_bundle.root, tmp_path / "bundle"))
        spec = json.loads((root / MANIFEST).read_text()) | {"preprocessor": [300]}
        (root / MANIFEST).write_text(json.dumps(spec))
        with pytest.raises(ModelFileError, match="preprocessor is list, not an object"):
            Bundle.open(root)
