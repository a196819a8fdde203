"""Screen shots and QImage conversions."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QColor, QImage

from app.screen import grab_screen, qimage, rgb_pixels


def test_a_qimage_becomes_rgb_pixels_whatever_its_format(qtbot):
    image = QImage(7, 5, QImage.Format.Format_ARGB32)  # 7 pixels wide: rows are padded in RGB888
    image.fill(QColor(10, 120, 250))
    image.setPixelColor(6, 4, QColor(255, 0, 0))
    pixels = rgb_pixels(image)
    assert pixels.shape == (5, 7, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[0, 0]) == (10, 120, 250) and tuple(pixels[4, 6]) == (255, 0, 0)


def test_pixels_round_trip_through_qimage(qtbot):
    pixels = np.random.default_rng(1).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    assert np.array_equal(rgb_pixels(qimage(pixels)), pixels)


def test_the_primary_screen_is_grabbed_whole(qtbot):
    from PySide6.QtGui import QGuiApplication

    size = QGuiApplication.primaryScreen().size()
    shot = grab_screen()
    assert shot.pixels.shape == (size.height(), size.width(), 3)
