"""Voices: read from the bundle as the speaker dictionary holds them, chosen by name."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.errors import ModelFileError, OmnideskError
from model.files.bundle import Bundle
from model.voices import load_voices, pick_voice


class TestVoices:
    def test_voices_are_those_of_the_speaker_dictionary(self, tiny_bundle, tiny_checkpoint):
        voices = load_voices(tiny_bundle)
        speakers = torch.load(tiny_checkpoint.path / "spk_dict.pt", weights_only=True)
        assert set(voices) == set(speakers) == {"Chelsie", "Ethan"}
        for name, voice in voices.items():
            assert torch.equal(voice.cond, speakers[name]["cond"].reshape(-1))
            assert torch.equal(voice.ref_mel, speakers[name]["ref_mel"][0])
            assert voice.bos_token == speakers[name]["bos_token"] == tiny_checkpoint.voices[name]

    def test_unknown_voice_lists_the_available_ones(self, tiny_bundle):
        with pytest.raises(OmnideskError, match="unknown voice 'Nobody'.*Chelsie, Ethan"):
            pick_voice(load_voices(tiny_bundle), "Nobody")

    def test_a_voice_with_a_missing_tensor_names_the_file_and_the_voice(
        self, tiny_bundle: Bundle, tmp_path: Path
    ):
        bundle = copied(tiny_bundle, tmp_path)
        tensors = load_file(str(bundle.file("voices")))
        del tensors["Ethan.ref_mel"]
        save_file(tensors, str(bundle.file("voices")))
        with pytest.raises(ModelFileError, match="voice Ethan lacks tensor"):
            load_voices(bundle)

    def test_a_voice_of_the_wrong_shape_is_refused(self, tiny_bundle: Bundle, tmp_path: Path):
        bundle = copied(tiny_bundle, tmp_path)
        tensors = load_file(str(bundle.file("voices")))
        tensors["Chelsie.cond"] = tensors["Chelsie.cond"][None]
        save_file(tensors, str(bundle.file("voices")))
        with pytest.raises(ModelFileError, match="voice Chelsie: its tensors have the wrong shape"):
            load_voices(bundle)


def copied(bundle: Bundle, folder: Path) -> Bundle:
    """The bundle's files copied, so a test may change them (the manifest's hashes are not checked here)."""
    for entry in bundle.files.values():
        shutil.copy(bundle.root / entry.path, folder / entry.path)
    return dataclasses.replace(bundle, root=folder)
