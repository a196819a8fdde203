"""The Thinker's byte-level BPE tokenizer, read from a checkpoint's tokenizer.json.

It becomes the GGUF's `tokenizer.ggml.*` metadata (model "gpt2", pre-tokenizer
"qwen2"), from which llama.cpp tokenizes exactly as the Hugging Face tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gguf import TokenType

from model.errors import ModelFileError
from model.files.checkpoint import read_json

# The markers the code uses, by role; ids come from the tokenizer, never literals.
SPECIAL_TOKENS = {
    "endoftext": "<|endoftext|>",
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "audio": "<|AUDIO|>",
    "audio_bos": "<|audio_bos|>",
    "audio_eos": "<|audio_eos|>",
    "vision_bos": "<|vision_bos|>",
    "vision_eos": "<|vision_eos|>",
    "vision_pad": "<|vision_pad|>",
    "image": "<|IMAGE|>",
    "video": "<|VIDEO|>",
}

# Qwen2's split pattern: llama.cpp's "qwen2" pre-tokenizer implements it.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class TokenizerSpec:
    tokens: list[str]  # byte-level strings, padded to the embedding's vocabulary size
    token_types: list[int]
    merges: list[str]
    special_ids: dict[str, int]  # role (SPECIAL_TOKENS key) -> id
    chat_template: str | None


def read_tokenizer(checkpoint_dir: Path, vocab_size: int) -> TokenizerSpec:
    path = checkpoint_dir / "tokenizer.json"
    advice = "Copy tokenizer.json from the original Qwen2.5-Omni checkpoint again"
    spec = read_json(path, advice)
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ModelFileError(path, "not a byte-level BPE tokenizer", advice)
    if QWEN2_SPLIT_PATTERN not in _split_patterns(spec.get("pre_tokenizer") or {}):
        raise ModelFileError(path, "its pre-tokenizer is not Qwen2's", advice)

    by_id: dict[int, tuple[str, int]] = {i: (t, int(TokenType.NORMAL)) for t, i in model["vocab"].items()}
    for added in spec.get("added_tokens", []):
        kind = int(TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED)
        by_id[int(added["id"])] = (added["content"], kind)
    if max(by_id) >= vocab_size:
        raise ModelFileError(
            path, f"token id {max(by_id)} exceeds the model's {vocab_size} embeddings", advice
        )
    tokens, types = [], []
    for i in range(vocab_size):
        token, kind = by_id.get(i, (f"[PAD{i}]", int(TokenType.UNUSED)))
        tokens.append(token)
        types.append(kind)

    ids = {content: i for i, (content, _) in by_id.items()}
    missing = [t for t in SPECIAL_TOKENS.values() if t not in ids]
    if missing:
        raise ModelFileError(path, f"special tokens missing: {', '.join(missing)}", advice)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return TokenizerSpec(
        tokens=tokens,
        token_types=types,
        merges=merges,
        special_ids={role: ids[token] for role, token in SPECIAL_TOKENS.items()},
        chat_template=_chat_template(checkpoint_dir),
    )


def _split_patterns(pre_tokenizer: dict) -> list[str]:
    if pre_tokenizer.get("type") == "Sequence":
        return [p for sub in pre_tokenizer.get("pretokenizers", []) for p in _split_patterns(sub)]
    if pre_tokenizer.get("type") == "Split":
        return [pre_tokenizer.get("pattern", {}).get("Regex", "")]
    return []


def _chat_template(checkpoint_dir: Path) -> str | None:
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = checkpoint_dir / name
        if path.is_file():
            template = read_json(path, f"Copy {name} from the original checkpoint again").get("chat_template")
            if isinstance(template, str):
                return template
    return None
