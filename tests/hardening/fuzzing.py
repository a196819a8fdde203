"""Hypothesis settings shared by the fuzz tests: bounded by examples, never by a deadline.

OMNIDESK_FUZZ_SCALE multiplies every test's examples for a longer campaign
(for example OMNIDESK_FUZZ_SCALE=20); the default run keeps the counts written in each test.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def fuzz(examples: int) -> settings:
    scale = float(os.environ.get("OMNIDESK_FUZZ_SCALE", "1"))
    return settings(
        max_examples=max(1, round(examples * scale)),
        deadline=None,  # the first example of a test pays for imports and file writes
        suppress_health_check=[HealthCheck.too_slow],
    )
