"""`omnidesk bench serve` runs on the tiny bundle and ends with the line scripts read."""

from __future__ import annotations

import re

from model.files.bundle import Bundle
from tests.app.cli.test_main import omnidesk

LAST_LINE = re.compile(
    r"serve: first audio [\d.]+ s through the server, [\d.]+ s in-process \(median of 1\), "
    r"overhead -?[\d.]+ ms; "
    r"Stop ended the server's stages [\d.]+ ms after it \(median, \[[\d.]+\] s\), load [\d.]+"
)


def test_prints_first_audio_both_ways_and_the_stop(tiny_bundle: Bundle):
    result = omnidesk("bench", "serve", "--models", tiny_bundle.root, "--turns", "1")
    print(result.stdout, result.stderr)
    assert result.returncode == 0
    assert LAST_LINE.fullmatch(result.stdout.splitlines()[-1])
