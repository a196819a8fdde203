"""Every entry point puts speech where the plan says: with torch's device queries faked to show an
NVIDIA GPU, the window, `ask`, `chat` and the selftest each build their conversation on it.

The conversation is stopped as it is built (there is no GPU to load onto): what is checked is the
plan each entry point hands to it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from app.cli import selftest
from app.cli.main import main
from app.worker import ConversationWorker, ModelChoice
from model.files.bundle import Bundle
from model.pipeline.conversation import Conversation
from model.placement import STAGES, Plan


class Built(Exception):
    """The conversation an entry point built, stopped before it loads anything."""


@pytest.fixture
def plans(monkeypatch) -> list[Plan]:
    """Fakes a CUDA GPU for torch and records the plan of every conversation built."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda device=None: SimpleNamespace(name="NVIDIA GeForce RTX 4090", total_memory=24 * 2**30),
    )
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (22 * 2**30, 24 * 2**30))
    built: list[Plan] = []

    def stop(self, bundle, thinker_options, plan, **kwargs) -> None:
        built.append(plan)
        raise Built

    monkeypatch.setattr(Conversation, "__init__", stop)
    return built


def assert_on_the_gpu(plans: list[Plan]) -> None:
    (plan,) = plans
    assert all(plan.placement(stage).device == "cuda" for stage in STAGES), plan.describe()
    assert plan.talker.dtype == torch.bfloat16 and plan.compile_talker


@pytest.mark.parametrize("command", [["ask", "hi"], ["chat"]])
def test_the_command_line(plans, tiny_bundle: Bundle, command):
    with pytest.raises(Built):
        main([command[0], "--models", str(tiny_bundle.root), *command[1:]])
    assert_on_the_gpu(plans)


def test_the_window(plans, tiny_bundle: Bundle):
    with pytest.raises(Built):
        ConversationWorker().load(ModelChoice(str(tiny_bundle.root)))
    assert_on_the_gpu(plans)


def test_the_selftest(plans, tiny_bundle: Bundle):
    with pytest.raises(Built):
        selftest.answer_one_turn(tiny_bundle)
    assert_on_the_gpu(plans)


def test_a_user_who_keeps_speech_on_the_cpu_is_heard(plans, tiny_bundle: Bundle):
    with pytest.raises(Built):
        main(["ask", "--models", str(tiny_bundle.root), "--speech-device", "cpu", "hi"])
    (plan,) = plans
    assert all(plan.placement(stage).device == "cpu" for stage in STAGES)
