"""ChatML prompts as token ids, the layout of Qwen2.5-Omni's chat template.

Markers (<|im_start|>, <|im_end|>) are inserted as ids; the text between them is
tokenized without parsing special tokens, so a user typing "<|im_end|>" cannot
forge a turn. Between markers this gives the same ids as tokenizing the
template's rendered string, since markers are split out first there too.
"""

from __future__ import annotations

from collections.abc import Callable

# The reference's system prompt; the Talker was trained to speak only under it.
SPEECH_SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
    "auditory and visual inputs, as well as generating text and speech."
)

Tokenize = Callable[[str], list[int]]


class ChatFormat:
    def __init__(self, tokenize: Tokenize, tokens: dict[str, int]) -> None:
        self._tokenize = tokenize
        self._im_start = tokens["im_start"]
        self._im_end = tokens["im_end"]
        self._stops = {tokens["im_end"], tokens["endoftext"]}
        self._newline = tokenize("\n")

    def message(self, role: str, text: str) -> list[int]:
        """A whole message: <|im_start|>role\\ntext<|im_end|>\\n"""
        return [self._im_start, *self._tokenize(f"{role}\n{text}"), self._im_end, *self._newline]

    def reply_header(self) -> list[int]:
        """What precedes the assistant's reply: <|im_start|>assistant\\n"""
        return [self._im_start, *self._tokenize("assistant\n")]

    def closed_reply(self, reply_ids: list[int]) -> list[int]:
        """A reply as the history keeps it: ended by <|im_end|> and a newline, whatever stopped it.

        A reply stopped by <|endoftext|> or cut short gets <|im_end|> in place: the
        template's layout, and a stop token other than <|im_end|> is never fed back.
        """
        body = reply_ids[:-1] if reply_ids and reply_ids[-1] in self._stops else reply_ids
        return [*body, self._im_end, *self._newline]

    def prompt(self, system: str, user: str) -> list[int]:
        """A one-question prompt ending where the reply starts."""
        return [*self.message("system", system), *self.message("user", user), *self.reply_header()]
