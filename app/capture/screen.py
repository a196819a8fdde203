"""Screen shots with Qt's own grab, and conversions between QImage and RGB pixels.

A shot asked for from the window must not show the window itself: `grab_screen_without` hides it,
grabs the screen once the window system has drawn what was under it (HIDDEN_MS later), and shows
it again.

On macOS (10.15 and later) an app without the Screen Recording permission gets a picture of the
wallpaper and the menu bar, not of the windows; `grab_screen` checks the permission first and, if
it is missing, asks the system to offer it and says how to grant it, instead of sending the model
a wallpaper.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QTimer
from PySide6.QtGui import QGuiApplication, QImage, QScreen
from PySide6.QtWidgets import QWidget

from model.errors import OmnideskError
from model.media import Image

# After hiding the window, the window system unmaps it (a compositor may fade it out) and the windows
# under it redraw; 350 ms covers both on the desktops tried (X11 with and without a compositor).
HIDDEN_MS = 350


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


def grab_screen_without(
    window: QWidget, taken: Callable[[Image], None], failed: Callable[[OmnideskError], None]
) -> None:
    """A shot of `window`'s screen without `window` in it, handed to `taken` (or the reason to
    `failed`) HIDDEN_MS later, from the event loop; at once if the window is not shown."""

    def grab() -> None:
        try:
            shot = grab_screen(window.screen())
        except OmnideskError as exc:
            failed(exc)
            return
        finally:
            if hidden:
                window.show()
                window.activateWindow()
        taken(shot)

    if not screen_capture_allowed():  # macOS: asked first, so the window does not vanish for nothing
        failed(OmnideskError(SCREEN_PERMISSION_HELP))
        return
    hidden = window.isVisible()
    if hidden:
        window.hide()
        QTimer.singleShot(HIDDEN_MS, grab)
    else:
        grab()


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
