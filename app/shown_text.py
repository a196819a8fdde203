"""Untrusted text (a reply, a question, a note) made safe to show, in the window or on a terminal.

A reply may hold a terminal's escape sequences and other control characters: on a terminal they
move the cursor, recolour or retitle it; in a document they are noise. `displayed` takes them out.
"""

from __future__ import annotations

import re

# A terminal's escape sequences (colours, cursor moves), then every other control character but
# tab and newline (C0, DEL, C1).
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def displayed(text: str) -> str:
    """`text` as it may be shown: line ends made newlines, escape sequences and other control
    characters (all but tab and newline) taken out. A sequence split between two pieces of a
    streamed reply loses its ESC, so what is left of it is plain text."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", _ESCAPES.sub("", text))
