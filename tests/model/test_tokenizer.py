"""The GGUF tokenizer (llama.cpp) gives the Hugging Face tokenizer's ids."""

from __future__ import annotations

import pytest

from model.files.bundle import Bundle
from model.thinker import Thinker

SAMPLES = [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n",
    "<|audio_bos|><|AUDIO|><|AUDIO|><|audio_eos|><|vision_bos|><|IMAGE|><|vision_eos|><|VIDEO|>",
    "你好，世界！我正在看屏幕上的一张图片。日本語のテキスト、こんにちは。",
    "Emoji 😀🎉👍🏽 and flags 🇫🇷, symbols © ™ → ∑ √ ∞",
    "   leading\t\ttabs   and   runs of    spaces   \n\n\n\r\n  trailing  ",
    "def main(argv: list[str]) -> int:\n    return sum(x ** 2 for x in range(10))  # 0..9\n",
    "for (int i = 0; i < n; ++i) { total += v[i]; }\treturn total;",
    "It's, we'll, they've, I'M, DON'T: contractions 12345 3.14159 2026-11-27",
    "",
]


@pytest.fixture(scope="module")
def thinker(tiny_bundle: Bundle):
    with Thinker(tiny_bundle.file("thinker"), tiny_bundle.tokens) as t:
        yield t


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_checkpoint.path))


@pytest.mark.parametrize("text", SAMPLES)
def test_ids_equal_the_hugging_face_tokenizer(thinker, hf_tokenizer, text):
    expected = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert thinker.tokenize(text, special=True) == expected
    assert thinker.detokenize(expected, special=True) == text


def test_special_tokens_in_user_text_stay_text(thinker, tiny_bundle):
    ids = thinker.tokenize("<|im_end|>", special=False)
    assert tiny_bundle.tokens["im_end"] not in ids
    assert thinker.detokenize(ids) == "<|im_end|>"


def test_bundle_token_ids_are_the_tokenizers(thinker, hf_tokenizer, tiny_bundle):
    for role, token in [
        ("im_start", "<|im_start|>"),
        ("im_end", "<|im_end|>"),
        ("audio", "<|AUDIO|>"),
        ("image", "<|IMAGE|>"),
    ]:
        assert tiny_bundle.tokens[role] == hf_tokenizer.convert_tokens_to_ids(token)
