"""Text the user types into the command line or the terminal, checked to be UTF-8.

Python hands over bytes it cannot decode (in arguments, and on standard input with
`surrogateescape`) as lone surrogates, which no tokenizer can encode: they are found
here and named, byte and place, in one line.
"""

from __future__ import annotations

import io
import sys

from model.errors import OmnideskError


def checked_text(text: str, what: str) -> str:
    """`text` itself if it is valid UTF-8 text, else OmnideskError naming `what` and the first bad byte."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        bad = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise OmnideskError(
            f"{what} is not valid UTF-8 text ({bad} at character {exc.start + 1}): "
            "type it again, or set your terminal to UTF-8"
        ) from None
    return text


def keep_undecodable_input() -> None:
    """Let standard input hand over undecodable bytes (as `checked_text` finds them) instead of
    raising UnicodeDecodeError, whatever the locale."""
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(errors="surrogateescape")
