"""Configuration values and the speaker dictionary, range-checked before anything is built from them:
one line naming the file and the value, never a traceback, a hang or gigabytes taken."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.errors import ModelFileError
from model.files.bundle import MANIFEST, Bundle, write_manifest
from model.files.config_check import ConfigError, check_config
from model.files.convert import convert_checkpoint
from model.token2wav.synthesizer import Token2Wav
from model.voices import load_voices
from tests.app.cli.test_main import assert_one_line_error, copy_bundle, omnidesk

BAD_VALUES: list[tuple[tuple[Any, ...], str]] = [
    (("talker_config", "num_hidden_layers", 10**9), "talker_config.num_hidden_layers is 1000000000, not an"),
    (("thinker_config", "audio_config", "encoder_layers", 10**7), "audio_config.encoder_layers is 10000000"),
    (("thinker_config", "audio_config", "d_model", -1280), "thinker_config.audio_config.d_model is -1280"),
    (("talker_config", None), "talker_config is null, not an object"),
    (("token2wav_config", "dit_config", "hidden_size", "wide"), "dit_config.hidden_size is 'wide'"),
    (("talker_config", "rms_norm_eps", math.nan), "talker_config.rms_norm_eps is nan, not a number"),
    (("talker_config", "num_hidden_layers", 24.0), "num_hidden_layers is 24.0, not an integer"),
    (("thinker_config", "audio_config", "n_window", 99), "n_window is odd"),
    (
        ("talker_config", "num_key_value_heads", 3),
        "num_attention_heads 2 is not a multiple of num_key_value_heads 3",
    ),
    (
        ("token2wav_config", "bigvgan_config", "upsample_rates", []),
        "upsample_rates is [], not a list of 1..64",
    ),
    (
        ("thinker_config", "vision_config", "spatial_merge_size", 3),
        "spatial_merge_size is 3, not an integer in 2..2",
    ),
]


def changed(config: dict[str, Any], *path_and_value: Any) -> dict[str, Any]:
    config = json.loads(json.dumps(config))
    *path, key, value = path_and_value
    node = config
    for step in path:
        node = node[step]
    node[key] = value
    return config


def with_config(bundle: Bundle, root: Path, config: dict[str, Any]) -> Path:
    """`root` holding a copy of `bundle` whose manifest carries `config` (its files unchanged)."""
    spec = json.loads((bundle.root / MANIFEST).read_text())
    spec["config"] = config
    (root / MANIFEST).write_text(json.dumps(spec))
    return root


@pytest.fixture
def bundle_copy(tiny_bundle: Bundle, tmp_path) -> Path:
    return copy_bundle(tiny_bundle, tmp_path)


class TestManifestConfig:
    @pytest.mark.parametrize(("change", "message"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
    def test_a_bad_value_is_named_when_the_bundle_opens(self, change, message, tiny_bundle, bundle_copy):
        root = with_config(tiny_bundle, bundle_copy, changed(tiny_bundle.config, *change))
        with pytest.raises(ModelFileError) as refused:
            Bundle.open(root)
        assert refused.value.path == root / MANIFEST and "the model configuration is out of range" in str(
            refused.value
        )
        assert message in str(refused.value)

    def test_the_command_ends_in_one_line_instead_of_building_a_billion_layers(
        self, tiny_bundle, bundle_copy
    ):
        root = with_config(tiny_bundle, bundle_copy, changed(tiny_bundle.config, *BAD_VALUES[0][0]))
        assert_one_line_error(omnidesk("ask", "--models", root, "hi"), "omnidesk.json", BAD_VALUES[0][1])

    def test_the_released_configurations_pass(self):
        for config in released_configs():
            check_config(config)

    def test_a_list_of_the_wrong_kind(self):
        config = changed(released_configs()[0], "token2wav_config", "dit_config", "enc_channels", [8, "x"])
        with pytest.raises(ConfigError, match=r"dit_config.enc_channels\[1\] is 'x'"):
            check_config(config)

    def test_token2wav_sized_past_its_file_is_refused_before_it_is_allocated(self, tiny_bundle, bundle_copy):
        """Within range (60000 wide, 256 layers: terabytes if built) but not what the file holds."""
        config = changed(tiny_bundle.config, "token2wav_config", "dit_config", "hidden_size", 60000)
        config = changed(config, "token2wav_config", "dit_config", "num_hidden_layers", 256)
        root = with_config(tiny_bundle, bundle_copy, config)
        with pytest.raises(ModelFileError, match="token2wav weights do not fit the configuration"):
            Token2Wav.load(Bundle.open(root))


def released_configs() -> list[dict[str, Any]]:
    """Qwen2.5-Omni-3B's and 7B's configuration (the Talker's and Token2Wav's as released)."""
    from model.bench.parts.random_bundle import omni_config
    from model.bench.parts.random_thinker import SHAPES

    return [omni_config(shape) for shape in SHAPES.values()]


def test_a_checkpoint_config_is_checked_before_converting(tiny_checkpoint, tmp_path):
    source = Path(shutil.copytree(tiny_checkpoint.path, tmp_path / "checkpoint"))
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps(changed(config, *BAD_VALUES[0][0])))
    with pytest.raises(ModelFileError) as refused:
        convert_checkpoint(source, tmp_path / "out", dtype="f32")
    assert refused.value.path == source / "config.json" and BAD_VALUES[0][1] in str(refused.value)
    assert not (tmp_path / "out").exists()


def speakers_with(tiny_checkpoint, tmp_path: Path, key: str, value: Any) -> Path:
    """A copy of the tiny checkpoint whose voice Chelsie has `key` replaced by `value`."""
    source = Path(shutil.copytree(tiny_checkpoint.path, tmp_path / "checkpoint"))
    speakers = torch.load(source / "spk_dict.pt", weights_only=True)
    speakers["Chelsie"][key] = value
    torch.save(speakers, source / "spk_dict.pt")
    return source


SPEAKERS = {
    "a huge view": ("cond", torch.zeros(1).expand(10**12), "cond has shape (1000000000000,), not (16,)"),
    "NaN": ("cond", torch.full((1, 16), math.nan), "cond holds values that are not finite numbers"),
    "a wrong mel width": (
        "ref_mel",
        torch.zeros(1, 120, 79),
        "ref_mel has shape (120, 79), not (frames, 80)",
    ),
    "integers": (
        "ref_mel",
        torch.zeros(1, 120, 80, dtype=torch.int32),
        "ref_mel holds values that are not finite",
    ),
    "a text-bos of many values": ("bos_token", torch.arange(10**6), "bos_token is not a token id"),
}


@pytest.mark.parametrize("kind", sorted(SPEAKERS))
def test_a_bad_speaker_dictionary_is_named_before_converting(kind, tiny_checkpoint, tmp_path):
    key, value, message = SPEAKERS[kind]
    source = speakers_with(tiny_checkpoint, tmp_path, key, value)
    with pytest.raises(ModelFileError) as refused:
        convert_checkpoint(source, tmp_path / "out", dtype="f32")
    assert refused.value.path == source / "spk_dict.pt" and f"voice Chelsie: {message}" in str(refused.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("cond", "message"),
    [
        (torch.full((16,), math.nan), "cond holds values that are not finite numbers"),
        (torch.zeros(17), "cond has shape (17,), not (16,)"),
    ],
)
def test_bad_voices_in_a_bundle_are_named(cond, message, tiny_bundle: Bundle, bundle_copy):
    voices = bundle_copy / "voices.safetensors"
    save_file(load_file(str(voices)) | {"Chelsie.cond": cond}, str(voices))
    files = {part: bundle_copy / entry.path for part, entry in tiny_bundle.files.items()}
    bundle = write_manifest(
        bundle_copy,
        files,
        tiny_bundle.config,
        tiny_bundle.tokens,
        tiny_bundle.codec,
        tiny_bundle.voices,
        "f32",
    )
    with pytest.raises(ModelFileError) as refused:
        load_voices(bundle)
    assert refused.value.path == voices and f"voice Chelsie: {message}" in str(refused.value)
