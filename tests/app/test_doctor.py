"""`omnidesk doctor` on this machine."""

from __future__ import annotations

from app.doctor import report
from model.hardware import probe


def test_report_names_the_backends_and_a_choice():
    hardware = probe()
    text = report(hardware)
    print(text)
    assert f"llama.cpp:     built for {hardware.llama_backend}" in text
    assert f"computing on {hardware.torch_device}" in text
    assert "Recommended:" in text and "Why:" in text
