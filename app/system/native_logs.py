"""What the C libraries under the speakers, the microphone and the camera print, kept off the terminal.

ALSA (under PortAudio, on Linux) writes its errors to stderr from C: a playback that falls behind
prints "ALSA lib pcm.c:8570:(snd_pcm_recover) underrun occurred" at every underrun, hundreds of
lines in one spoken reply, into `chat`'s prompt too. ALSA lets a program replace that printer
(`snd_lib_error_set_handler`, the standard fix): `route_alsa_errors` puts in one that logs each line
(logger "alsa", which the terminal shows only with -v; the log file always). It is chosen over
redirecting file descriptor 2 through a pipe, which would also take Python's own tracebacks and
Omnidesk's one-line errors off the terminal and needs a thread to read the pipe; PortAudio already
keeps JACK's messages to itself. PortAudio's own complaints ("Expression '...' failed in
'src/hostapi/alsa/pa_linux_alsa.c'", when a device does not open) have no hook in the library as
Linux distributions build it, and come only while it starts or opens a stream: `stderr_to_log`
takes file descriptor 2 into a file for just that long and logs what came. OpenCV prints its
warnings from C++ with no hook for Python: `opencv` silences them, and Omnidesk says what failed in
its own words.

Threads: ALSA calls the handler on the thread that met the error (PortAudio's, for an underrun);
ctypes takes the GIL for it. Installing is idempotent and may be done from any thread.
`stderr_to_log` may be entered from any thread: one at a time (fd 2 is the whole process's), so a
second waits for the first, which lasts as long as a stream takes to open.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from app.system.logs import ALSA_LOGGER, PORTAUDIO_LOGGER

ALSA_LIBRARY = "libasound.so.2"

alsa_log = logging.getLogger(ALSA_LOGGER)

# void (*snd_lib_error_handler_t)(const char *file, int line, const char *function, int err,
#                                 const char *fmt, ...)
# The arguments after `fmt` are read as FORMAT_ARGUMENTS machine words: on x86-64 and arm64 Linux a
# variadic call passes them where a plain call passes further arguments (registers, then the stack),
# and libc's snprintf takes from them what `fmt` says, as ALSA's own handler's vfprintf does. ALSA's
# messages have fewer %-fields than that, and none of floating point.
FORMAT_ARGUMENTS = 6
MESSAGE_BYTES = 1024
_ERROR_HANDLER = ctypes.CFUNCTYPE(
    None,
    ctypes.c_char_p,
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_int,
    ctypes.c_char_p,
    *[ctypes.c_void_p] * FORMAT_ARGUMENTS,
)


@_ERROR_HANDLER
def _log_alsa(
    file: bytes | None, line: int, function: bytes | None, err: int, fmt: bytes | None, *arguments: int | None
) -> None:
    """ALSA's own line, as its default handler would have printed it."""
    message = f"ALSA lib {_text(file)}:{line}:({_text(function)}) {_formatted(fmt, arguments)}"
    library = _asound()
    if err and library is not None:
        message += f": {_text(library.snd_strerror(err))}"
    alsa_log.warning("%s", message)


def _formatted(fmt: bytes | None, arguments: tuple[int | None, ...]) -> str:
    if not fmt:
        return ""
    buffer = ctypes.create_string_buffer(MESSAGE_BYTES)
    _libc().snprintf(buffer, MESSAGE_BYTES, fmt, *(ctypes.c_void_p(a) for a in arguments))
    return _text(buffer.value)


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", errors="replace") if value else ""


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None)  # the process's own C library


@functools.cache
def _asound() -> Any:
    """The ALSA library PortAudio uses (the same one: dlopen returns the loaded copy), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        library = ctypes.CDLL(ALSA_LIBRARY)
    except OSError:
        return None
    library.snd_strerror.restype = ctypes.c_char_p
    library.snd_strerror.argtypes = [ctypes.c_int]
    library.snd_lib_error_set_handler.argtypes = [_ERROR_HANDLER]
    return library


def route_alsa_errors() -> bool:
    """From now on ALSA's error lines go to the log, not stderr; False where there is no ALSA."""
    library = _asound()
    if library is None:
        return False
    library.snd_lib_error_set_handler(_log_alsa)
    return True


_STDERR_TAKEN = threading.Lock()  # fd 2 is one for the whole process: taken by one block at a time


@contextmanager
def stderr_to_log(logger: str = PORTAUDIO_LOGGER) -> Iterator[None]:
    """While the block runs (on Linux), what C code writes to stderr goes to `logger` instead, line by
    line, once the block is over. Only for short calls into C libraries: Python's own stderr, from any
    thread, is taken too for as long."""
    if not sys.platform.startswith("linux"):
        yield
        return
    with _STDERR_TAKEN, tempfile.TemporaryFile() as taken:
        sys.stderr.flush()
        terminal = os.dup(2)
        os.dup2(taken.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(terminal, 2)
            os.close(terminal)
            taken.seek(0)
            for line in taken.read().decode("utf-8", errors="replace").splitlines():
                if line.strip():
                    logging.getLogger(logger).warning("%s", line)


def opencv() -> Any:
    """The cv2 module, its own terminal messages silenced (a camera that cannot be opened prints
    two warnings; Omnidesk's message says it once)."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    return cv2
