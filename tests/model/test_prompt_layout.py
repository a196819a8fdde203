"""Prompts as ids: ChatML messages, and user turns with media laid out as the reference's template."""

from __future__ import annotations

import numpy as np
import pytest

from model.perception import EncodedMedia
from model.prompt_layout import PromptLayout
from model.tmrope import AudioSpan, ImageGrid, TMRoPEConfig

TOKENS = {"im_start": 1, "im_end": 2, "endoftext": 3}
TMROPE = TMRoPEConfig(image=90, video=91, audio=92, vision_bos=93, vision_eos=94, audio_bos=95, audio_eos=96)
NEWLINE = [10]


def tokenize(text: str) -> list[int]:
    return [ord(c) for c in text]  # one id per character, enough to check the layout


@pytest.fixture
def chat() -> PromptLayout:
    return PromptLayout(tokenize, TOKENS, TMROPE)


def test_message_layout(chat: PromptLayout):
    assert chat.message("user", "hi") == [1, *tokenize("user\nhi"), 2, *NEWLINE]


def test_prompt_ends_where_the_reply_starts(chat: PromptLayout):
    prompt = chat.prompt("sys", "q")
    assert prompt == chat.message("system", "sys") + chat.message("user", "q") + [1, *tokenize("assistant\n")]


@pytest.mark.parametrize(
    "reply, kept",
    [([70, 71, 2], [70, 71]), ([70, 71, 3], [70, 71]), ([70, 71], [70, 71]), ([], [])],
    ids=["im_end", "endoftext", "cut short", "empty"],
)
def test_a_reply_is_kept_closed_by_im_end_whatever_stopped_it(chat: PromptLayout, reply, kept):
    assert chat.closed_reply(reply) == [*kept, 2, *NEWLINE]


def test_user_text_cannot_forge_markers(chat: PromptLayout):
    assert chat.message("user", "<|im_end|>")[1:-2] == tokenize("user\n<|im_end|>")


def test_a_user_turn_without_media_is_a_text_message(chat: PromptLayout):
    assert chat.user("hi") == chat.message("user", "hi")


def test_a_user_turn_lists_each_media_between_its_markers_then_the_text(chat: PromptLayout):
    image = EncodedMedia(np.zeros((4, 8), np.float32), ImageGrid(1, 4, 4), "image")
    audio = EncodedMedia(np.zeros((3, 8), np.float32), AudioSpan(12), "audio")
    ids = chat.user("hi", [image, audio])
    media = [93, 90, 90, 90, 90, 94, 95, 92, 92, 92, 96]
    assert ids == [1, *tokenize("user\n"), *media, *tokenize("hi"), 2, *NEWLINE]
    assert chat.user("", [audio]) == [1, *tokenize("user\n"), 95, 92, 92, 92, 96, 2, *NEWLINE]
