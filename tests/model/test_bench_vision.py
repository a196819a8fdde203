"""`omnidesk bench vision` on a tiny tower: every variant runs, and each error it prints is the one
of that variant against transformers' tower."""

from __future__ import annotations

import pytest

from model.bench.parts.look_bundle import TINY_VISION as TINY_TOWER
from model.bench.vision import Row, fit_seconds, measure, table

TINY_VISION = {**TINY_TOWER, "window_size": 112}  # the tiny tower `bench look --size tiny` uses
BOUNDS = {  # relative to the largest value (see tests/model/test_vision_tower.py)
    "transformers float32": 0.0,
    "torch-float32": 1e-5,
    "mtmd-f32": 1e-3,
    "mtmd-f16": 3e-3,
    "mtmd-q8_0": 5e-2,
    "torch-bfloat16": 5e-2,
    "torch-int8": 5e-2,
}


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    variants = [name for name in BOUNDS if name != "transformers float32"]
    return measure(TINY_VISION, 128, [56, 112], variants, threads=1, reference=True)


def test_every_variant_is_measured_against_the_reference(rows):
    assert [row.variant for row in rows] == list(BOUNDS)
    for row in rows:
        assert set(row.seconds) == {56, 112} and all(s > 0 for s in row.seconds.values())
        assert all(error <= BOUNDS[row.variant] for error in row.error.values()), row
    # The float32 tower is the reference's arithmetic; the others round (so their error is not 0).
    by_name = {row.variant: row for row in rows}
    assert all(by_name[name].error[112] > 1e-5 for name in ("torch-bfloat16", "torch-int8", "mtmd-q8_0"))


def test_the_table_has_a_line_per_variant_and_its_fit(rows):
    lines = table(rows, [56, 112]).splitlines()
    assert lines[0].startswith("| variant | 56x56 s | 112x112 s | error 56 | error 112 |")
    assert sum(line.startswith("| torch-int8 |") for line in lines) == 1
    assert any(line.startswith("torch-int8: seconds = ") for line in lines)


def test_the_fit_passes_through_both_points():
    a, b = fit_seconds({256: 2.0, 1296: 20.0})
    assert a * 256 + b * 256**2 == pytest.approx(2.0)
    assert a * 1296 + b * 1296**2 == pytest.approx(20.0)


def test_a_larger_image_cheaper_per_embedding_fits_a_line():
    a, b = fit_seconds({256: 60.0, 1296: 118.0})
    assert b == 0.0 and 60.0 / 256 > a > 118.0 / 1296
