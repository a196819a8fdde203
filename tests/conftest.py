"""Session fixtures: the tiny checkpoint and its bundle are built once per test run."""

from __future__ import annotations

import logging
import os

import pytest

from model.files.bundle import Bundle
from model.files.convert import convert_checkpoint
from tests.fixtures.tiny_checkpoint import TinyCheckpoint, build_tiny_checkpoint


@pytest.fixture(autouse=True, scope="session")
def _own_log_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The log file of this process and of the commands tests run goes to the session's folder."""
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))


@pytest.fixture(autouse=True, scope="session")
def _own_cache_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Native kernels (model/native_library.py) are built in the session's folder, as on a new machine."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True, scope="session")
def _quiet_llama_cpp() -> None:
    logging.getLogger("llama.cpp").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> TinyCheckpoint:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-checkpoint"))


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint: TinyCheckpoint, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return convert_checkpoint(tiny_checkpoint.path, tmp_path_factory.mktemp("tiny-bundle"), dtype="f32")


@pytest.fixture(scope="session")
def reference_model(tiny_checkpoint: TinyCheckpoint):  # -> Qwen2_5OmniForConditionalGeneration
    """transformers' Qwen2.5-Omni on the tiny checkpoint, in eval mode, with its speakers loaded."""
    from transformers import Qwen2_5OmniForConditionalGeneration

    return Qwen2_5OmniForConditionalGeneration.from_pretrained(str(tiny_checkpoint.path)).eval()
