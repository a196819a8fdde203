"""ChatML prompts as ids."""

from __future__ import annotations

import pytest

from model.chat import ChatFormat

TOKENS = {"im_start": 1, "im_end": 2, "endoftext": 3}
NEWLINE = [10]


def tokenize(text: str) -> list[int]:
    return [ord(c) for c in text]  # one id per character, enough to check the layout


@pytest.fixture
def chat() -> ChatFormat:
    return ChatFormat(tokenize, TOKENS)


def test_message_layout(chat: ChatFormat):
    assert chat.message("user", "hi") == [1, *tokenize("user\nhi"), 2, *NEWLINE]


def test_prompt_ends_where_the_reply_starts(chat: ChatFormat):
    prompt = chat.prompt("sys", "q")
    assert prompt == chat.message("system", "sys") + chat.message("user", "q") + [1, *tokenize("assistant\n")]


@pytest.mark.parametrize(
    "reply, kept",
    [([70, 71, 2], [70, 71]), ([70, 71, 3], [70, 71]), ([70, 71], [70, 71]), ([], [])],
    ids=["im_end", "endoftext", "cut short", "empty"],
)
def test_a_reply_is_kept_closed_by_im_end_whatever_stopped_it(chat: ChatFormat, reply, kept):
    assert chat.closed_reply(reply) == [*kept, 2, *NEWLINE]


def test_user_text_cannot_forge_markers(chat: ChatFormat):
    assert chat.message("user", "<|im_end|>")[1:-2] == tokenize("user\n<|im_end|>")
