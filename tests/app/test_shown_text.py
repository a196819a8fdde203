"""Untrusted text loses its escape sequences and control characters before it is shown."""

from __future__ import annotations

from app.shown_text import displayed

RAW = "A\x00B\x1b[31mred\x1b[0m\rC\x7fD\x9b\tE\ufffd"


def test_control_characters_are_taken_out_for_display():
    assert displayed(RAW) == "ABred\nCD\tE\ufffd"


def test_a_sequence_split_between_pieces_is_left_without_its_escape():
    pieces = ["Hi \x1b", "]0;pwned\x07 there\x0b\x1d"]
    assert "".join(displayed(piece) for piece in pieces) == "Hi ]0;pwned there"
