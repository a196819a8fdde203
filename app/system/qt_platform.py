"""Which Qt platform plugin Omnidesk starts on, and whether that platform has a display.

Qt ends the process (qFatal, SIGABRT) when its platform plugin cannot reach its display: an
X server that is not there, no Wayland compositor. So the window and the selftest ask first,
with the display libraries Qt itself would use, and say in one line what is missing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

from model.errors import OmnideskError

_NO_DISPLAY_ADVICE = (
    "start Omnidesk in a desktop session or under xvfb-run (to check an installation without a "
    "screen: QT_QPA_PLATFORM=offscreen omnidesk --selftest)"
)


def chosen_platform() -> str:
    """QT_QPA_PLATFORM's first choice, "" when it is not set."""
    return os.environ.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0]


def platform_name() -> str:
    """The Qt platform the window would use: QT_QPA_PLATFORM's first choice, else the system's display."""
    chosen = chosen_platform()
    if chosen:
        return chosen
    if sys.platform == "darwin":
        return "cocoa"
    if sys.platform == "win32":
        return "windows"
    if os.environ.get("WAYLAND_DISPLAY"):
        return "wayland"
    return "xcb" if os.environ.get("DISPLAY") else "offscreen"


def window_platform() -> str:
    """The platform Qt picks for the window by itself: QT_QPA_PLATFORM's first choice, else on Linux
    Wayland when its display is set and X11 otherwise ("" elsewhere: the system's own)."""
    chosen = chosen_platform()
    if chosen or not sys.platform.startswith("linux"):
        return chosen
    return "wayland" if os.environ.get("WAYLAND_DISPLAY") else "xcb"


def platform_plugin(name: str) -> Path:
    """The plugin file that provides Qt platform `name`, found by the keys in its metadata."""
    from PySide6.QtCore import QLibraryInfo, QPluginLoader

    folder = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms"
    files = sorted(folder.iterdir()) if folder.is_dir() else []
    for path in files:
        metadata = dict(QPluginLoader(str(path)).metaData()).get("MetaData")
        if isinstance(metadata, dict) and name in metadata.get("Keys", []):
            return path
    raise OmnideskError(
        f"no Qt platform plugin for {name!r} in {folder}: the installation is incomplete, install it again"
    )


def require_display(name: str) -> None:
    """Raise OmnideskError if Qt platform `name` would find no display to connect to."""
    problem = display_problem(name)
    if problem:
        raise OmnideskError(f"Qt's {name} platform has no display ({problem}): {_NO_DISPLAY_ADVICE}")


def display_problem(name: str) -> str:
    """What keeps platform `name` from its display, "" if nothing does (or it needs none, or the
    display library is not there to ask: then Qt's own plugin check speaks)."""
    if name == "xcb":
        display = os.environ.get("DISPLAY", "")
        if not display:
            return "DISPLAY is not set"
        return "" if _x_display_answers() else f"the X display {display} does not answer"
    if name.startswith("wayland"):
        display = os.environ.get("WAYLAND_DISPLAY", "")
        if not display:
            return "WAYLAND_DISPLAY is not set"
        return "" if _wayland_display_answers() else f"the Wayland display {display} does not answer"
    return ""


def _x_display_answers() -> bool:
    pointer = ctypes.c_void_p
    xcb = _library(
        "xcb",
        xcb_connect=(pointer, ctypes.c_char_p, pointer),
        xcb_connection_has_error=(ctypes.c_int, pointer),
        xcb_disconnect=(None, pointer),
    )
    if xcb is None:
        return True
    connection = xcb.xcb_connect(None, None)  # never NULL: a failed one is a connection in error
    try:
        return xcb.xcb_connection_has_error(connection) == 0
    finally:
        xcb.xcb_disconnect(connection)


def _wayland_display_answers() -> bool:
    pointer = ctypes.c_void_p
    wayland = _library(
        "wayland-client", wl_display_connect=(pointer, ctypes.c_char_p), wl_display_disconnect=(None, pointer)
    )
    if wayland is None:
        return True
    display = wayland.wl_display_connect(None)
    if display:
        wayland.wl_display_disconnect(display)
    return bool(display)


def _library(name: str, **functions: tuple) -> ctypes.CDLL | None:
    """The system's library `name` with `functions` typed (result type, then argument types), or None
    when it is not installed (then Qt's own plugin check speaks)."""
    found = ctypes.util.find_library(name)
    if found is None:
        return None
    library = ctypes.CDLL(found)
    for function, (result, *arguments) in functions.items():
        getattr(library, function).restype = result
        getattr(library, function).argtypes = arguments
    return library
