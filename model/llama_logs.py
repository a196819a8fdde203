"""llama.cpp's log lines, routed into Python logging (logger "llama.cpp") at their real levels.

llama-cpp-python installs a callback whose level table predates ggml's current
enum (NONE, DEBUG, INFO, WARN, ERROR, CONT), so its warnings surface as errors.
"""

from __future__ import annotations

import ctypes
import logging

import llama_cpp

_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_CONTINUATION = 5

log = logging.getLogger("llama.cpp")


@llama_cpp.llama_log_callback
def _forward(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    if level == _CONTINUATION or not text:
        return
    message = text.decode("utf-8", errors="replace").rstrip("\n")
    if message:
        log.log(_LEVELS.get(level, logging.DEBUG), "%s", message)


def route_llama_logs() -> None:
    """Send llama.cpp's (and ggml's) log output through `log` from now on."""
    llama_cpp.llama_log_set(_forward, ctypes.c_void_p(0))


def route_mtmd_logs() -> None:
    """The same for the multimodal library (mtmd and its clip encoder), which logs on its own."""
    from llama_cpp import mtmd_cpp

    mtmd_cpp.mtmd_log_set(_forward, ctypes.c_void_p(0))
    mtmd_cpp.mtmd_helper_log_set(_forward, ctypes.c_void_p(0))
