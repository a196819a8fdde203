"""Qt's own lines (font substitutions, platform details: 21 to 42 a session were seen) go to the
log, under QT_LOGGER, which the terminal shows only with -v (app.system.logs)."""

from __future__ import annotations

import logging

from PySide6.QtCore import QMessageLogContext, QtMsgType, qInstallMessageHandler

from app.system.logs import QT_LOGGER

LEVELS = {
    QtMsgType.QtDebugMsg: logging.DEBUG,
    QtMsgType.QtInfoMsg: logging.INFO,
    QtMsgType.QtWarningMsg: logging.WARNING,
    QtMsgType.QtCriticalMsg: logging.ERROR,
    QtMsgType.QtFatalMsg: logging.CRITICAL,
}


def route_qt_messages() -> None:
    """From now on, Qt's messages are log records of QT_LOGGER (with their category), not stderr."""
    log = logging.getLogger(QT_LOGGER)

    def handle(kind: QtMsgType, context: QMessageLogContext, message: str) -> None:
        category = context.category or "default"
        log.log(LEVELS.get(kind, logging.WARNING), "%s: %s", category, message)

    qInstallMessageHandler(handle)
