"""Screen shots with Qt's own grab, and conversions between QImage and RGB pixels.

On macOS (10.15 and later) an app without the Screen Recording permission gets a picture of the
wallpaper and the menu bar, not of the windows; `grab_screen` checks the permission first and, if
it is missing, asks the system to offer it and says how to grant it, instead of sending the model
a wallpaper.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

import numpy as np
from PySide6.QtGui import QGuiApplication, QImage, QScreen

from model.errors import OmnideskError
from model.media import Image


def grab_screen(screen: QScreen | None = None) -> Image:
    """The whole of `screen` (the primary screen by default) as an RGB image."""
    if not screen_capture_allowed():
        raise OmnideskError(SCREEN_PERMISSION_HELP)
    screen = screen or QGuiApplication.primaryScreen()
    if screen is None:
        raise OmnideskError("there is no screen to capture")
    shot = screen.grabWindow(0)
    if shot.isNull():
        raise OmnideskError("the screen could not be captured (the system refused it)")
    return Image(rgb_pixels(shot.toImage()))


SCREEN_PERMISSION_HELP = (
    "Omnidesk may not record the screen yet: allow it in System Settings > Privacy & Security > "
    "Screen Recording, then quit and reopen Omnidesk"
)
_CORE_GRAPHICS = "/System/Library/Frameworks/CoreGraphics.framework/CoreGraphics"


def screen_capture_allowed() -> bool:
    """Whether a grab shows the windows. On macOS, asks for the permission (the system's prompt,
    shown once) when it is missing; elsewhere there is no such permission."""
    if sys.platform != "darwin":
        return True
    graphics = core_graphics()
    if graphics is None:  # before macOS 10.15: no permission to ask for
        return True
    if graphics.CGPreflightScreenCaptureAccess():
        return True
    graphics.CGRequestScreenCaptureAccess()
    return False


def core_graphics() -> Any:
    """CoreGraphics' two permission functions, or None where this macOS has none."""
    try:
        library = ctypes.CDLL(ctypes.util.find_library("CoreGraphics") or _CORE_GRAPHICS)
        for name in ("CGPreflightScreenCaptureAccess", "CGRequestScreenCaptureAccess"):
            getattr(library, name).restype = ctypes.c_bool
    except (OSError, AttributeError):
        return None
    return library


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
