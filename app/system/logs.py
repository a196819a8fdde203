"""Logging to a rotating file in the user log folder, and a record of every unexpected exception.

The file is <user log dir>/omnidesk.log (for example ~/.local/state/Omnidesk/log on
Linux), rotated at 2 MB with 5 old files kept. The command line logs warnings on stderr
too, except llama.cpp's, ALSA's and PortAudio's (unless -v), which go to the file only.
`install_exception_hooks` routes uncaught exceptions of any thread to the log and to a callback
(the crash dialog).
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Callable
from logging.handlers import RotatingFileHandler
from pathlib import Path
from types import TracebackType

import platformdirs

LOG_FILE = "omnidesk.log"
MAX_BYTES = 2 * 1024 * 1024
BACKUPS = 5
FORMAT = "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"
LLAMA_LOGGER = "llama.cpp"  # model/llama_logs.py's
ALSA_LOGGER = "alsa"  # app/system/native_logs.py's
PORTAUDIO_LOGGER = "portaudio"  # app/system/native_logs.py's
QT_LOGGER = "qt"  # app/system/qt_messages.py's
FILE_ONLY_LOGGERS = (LLAMA_LOGGER, ALSA_LOGGER, PORTAUDIO_LOGGER, QT_LOGGER)  # on the terminal only with -v

log = logging.getLogger("omnidesk")

CrashReport = Callable[[str, Path | None], None]  # (the traceback, the log file)


def log_dir() -> Path:
    return Path(platformdirs.user_log_dir("Omnidesk", appauthor=False))


def setup_file_logging(folder: Path | None = None, level: int = logging.INFO) -> Path | None:
    """Log to a rotating file (opened at the first record, once per process however often this is
    called); returns its path, or None if the folder cannot be written."""
    folder = folder or log_dir()
    path = folder / LOG_FILE
    root = logging.getLogger()
    if any(getattr(h, "baseFilename", None) == str(path.absolute()) for h in root.handlers):
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(
            path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8", delay=True
        )
    except OSError as exc:
        logging.getLogger(__name__).warning("cannot write logs in %s: %s", folder, exc)
        return None
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(min(root.level or level, level))
    return path


def setup_terminal_logging(verbose: bool) -> None:
    """Warnings and errors (with `verbose`, details too) on stderr, and everything in the log file.
        llama.cpp's, ALSA's and PortAudio's own lines go to the terminal only with `verbose`: llama.cpp's
        warnings on every load are about ordinary details of the Qwen tokenizer, and its errors come before
        Omnidesk's one line, which says what they mean; ALSA's are mostly underruns, hundreds in a spoken
        reply; PortAudio's come when a device does not open, which Omnidesk's own notice says; Qt's are
    mostly font substitutions."""
    terminal = logging.StreamHandler()
    terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    terminal.setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        terminal.addFilter(lambda record: not record.name.startswith(FILE_ONLY_LOGGERS))
    logging.getLogger().addHandler(terminal)
    logging.getLogger(LLAMA_LOGGER).setLevel(logging.DEBUG if verbose else logging.WARNING)
    setup_file_logging()


def install_exception_hooks(report: CrashReport, log_file: Path | None) -> None:
    """Log every uncaught exception (main thread and others) and hand it to `report`."""

    def on_exception(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        text = "".join(traceback.format_exception(kind, value, tb))
        log.critical("unexpected error\n%s", text)
        report(text, log_file)

    def on_thread_exception(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            on_exception(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = on_exception
    threading.excepthook = on_thread_exception
