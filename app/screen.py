"""Screen shots with Qt's own grab, and conversions between QImage and RGB pixels."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QGuiApplication, QImage, QScreen

from model.errors import OmnideskError
from model.media import Image


def grab_screen(screen: QScreen | None = None) -> Image:
    """The whole of `screen` (the primary screen by default) as an RGB image."""
    screen = screen or QGuiApplication.primaryScreen()
    if screen is None:
        raise OmnideskError("there is no screen to capture")
    shot = screen.grabWindow(0)
    if shot.isNull():
        raise OmnideskError("the screen could not be captured (the system refused it)")
    return Image(rgb_pixels(shot.toImage()))


def rgb_pixels(image: QImage) -> np.ndarray:
    """(height, width, 3) uint8 RGB copy of a QImage of any format."""
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    width, height, stride = rgb.width(), rgb.height(), rgb.bytesPerLine()
    rows = np.frombuffer(rgb.constBits(), np.uint8, count=stride * height).reshape(height, stride)
    return rows[:, : width * 3].reshape(height, width, 3).copy()


def qimage(pixels: np.ndarray) -> QImage:
    """A QImage holding its own copy of (height, width, 3) uint8 RGB pixels."""
    pixels = np.ascontiguousarray(pixels)
    height, width, _ = pixels.shape
    return QImage(pixels.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()
