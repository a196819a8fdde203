"""`omnidesk serve`'s own checks, made before the model loads."""

from __future__ import annotations

import pytest

from app.cli.serve import is_loopback
from model.files.bundle import Bundle
from tests.app.cli.test_main import assert_one_line_error, omnidesk


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("192.168.1.5", False),
     ("myhost.example", False)],
)  # fmt: skip
def test_only_loopback_addresses_count_as_this_computer(host, loopback):
    assert is_loopback(host) is loopback


def test_another_address_without_a_key_is_refused_in_one_line(tiny_bundle: Bundle, monkeypatch):
    monkeypatch.delenv("OMNIDESK_API_KEY", raising=False)
    result = omnidesk("serve", "--models", tiny_bundle.root, "--host", "0.0.0.0")
    assert_one_line_error(result, "--api-key")


def test_bad_limits_are_refused_in_one_line(tiny_bundle: Bundle):
    result = omnidesk("serve", "--models", tiny_bundle.root, "--max-codes", "0")
    assert_one_line_error(result, "--max-codes")
