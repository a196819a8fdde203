"""Module-scoped pieces the model tests share: a float32 Thinker on the tiny bundle, its media
encoders and TMRoPE settings (a test module may define its own `thinker` instead), and a conversation
on the reference's path with a float32 cache (`fresh_conversation`: as it was just loaded)."""

from __future__ import annotations

import pytest

from model.perception import Perception
from model.pipeline import Conversation
from model.thinker import Thinker
from model.thinker_types import ThinkerOptions
from model.tmrope import TMRoPEConfig


@pytest.fixture(scope="module")
def thinker(tiny_bundle):
    options = ThinkerOptions(n_ctx=4096, kv_cache_type="f32")
    with Thinker(tiny_bundle.file("thinker"), tiny_bundle.tokens, options) as t:
        yield t


@pytest.fixture(scope="module")
def perception(tiny_bundle, thinker) -> Perception:
    return Perception(tiny_bundle, thinker)


@pytest.fixture(scope="module")
def tmrope(tiny_bundle) -> TMRoPEConfig:
    return TMRoPEConfig.from_bundle(tiny_bundle.tokens, tiny_bundle.config["thinker_config"])


@pytest.fixture(scope="module")
def conversation(tiny_bundle) -> Conversation:
    return Conversation(tiny_bundle, ThinkerOptions(n_ctx=4096, kv_cache_type="f32"))


@pytest.fixture
def fresh_conversation(conversation: Conversation) -> Conversation:
    """The module's conversation with no history, its cache holding the system prompt alone."""
    conversation.restore([])
    conversation.thinker.reset()
    conversation.prepare()
    return conversation
