"""Rounded bubbles behind the chat's messages and their code blocks. Qt's rich text draws a table
cell's background square, and its CSS has no border-radius: so the chat view lays each message out
as a table whose bubble cell has a background colour (app.window.chat.view.message_html), a code
block as a table in it whose one cell has its own; their colours are taken off the cells here, and
rounded rectangles of them painted behind the cells (outer first) before the text is drawn over.

Threads: the GUI thread only.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainter, QTextCursor, QTextDocument, QTextTable

RADII = (14.0, 8.0)  # the corners, in pixels, of a message's bubble and of a code block in it


@dataclass(frozen=True)
class Bubble:
    """A message's bubble (`depth` 0) or a code block in it (1): the cell `column` of a table's only
    row, painted in `colour`."""

    table: QTextTable
    column: int
    colour: QColor
    depth: int


def take_bubbles(document: QTextDocument) -> list[Bubble]:
    """The bubbles of the document's messages and code blocks (its tables' cells with a background,
    outer ones first), their backgrounds taken off the cells to be painted rounded by `paint_bubbles`.
    One edit: the document is laid out again once, not once a cell."""
    edit = QTextCursor(document)
    edit.beginEditBlock()
    bubbles = _take(document.rootFrame().childFrames(), 0)
    edit.endEditBlock()
    return bubbles


def _take(frames: list, depth: int) -> list[Bubble]:
    bubbles = []
    for frame in frames:
        if not isinstance(frame, QTextTable) or depth >= len(RADII):
            continue
        for column in range(frame.columns()):
            cell = frame.cellAt(0, column)
            cell_format = cell.format()
            brush = cell_format.background()
            if brush.style() == Qt.BrushStyle.NoBrush:
                continue
            bubbles.append(Bubble(frame, column, brush.color(), depth))
            cell_format.setBackground(QBrush(Qt.BrushStyle.NoBrush))
            cell.setFormat(cell_format)
        bubbles += _take(frame.childFrames(), depth + 1)
    return bubbles


def bubble_rect(document: QTextDocument, bubble: Bubble) -> QRectF:
    """The bubble's cell, padding included, in the document's coordinates (pixels): as wide as its
    first line (the sender's name: a block spans its cell), down to the bottom of its lowest
    paragraph or code block. Empty blocks are left out: Qt places the one after a nested table
    beside it, outside the cell."""
    cell = bubble.table.cellAt(0, bubble.column)
    layout = document.documentLayout()
    rects = []
    parts = cell.begin()
    while not parts.atEnd():
        block, frame = parts.currentBlock(), parts.currentFrame()
        if frame is not None:
            rects.append(layout.frameBoundingRect(frame))
        elif block.isValid() and block.length() > 1:
            rects.append(layout.blockBoundingRect(block))
        parts += 1
    if not rects:
        return QRectF()
    first = rects[0]
    bottom = max(rect.bottom() for rect in rects)
    padding = bubble.table.format().cellPadding()
    return QRectF(first.left(), first.top(), first.width(), bottom - first.top()).adjusted(
        -padding, -padding, padding, padding
    )


def laid_out(document: QTextDocument, bubbles: list[Bubble]) -> list[tuple[QRectF, Bubble]]:
    """Each bubble with its rectangle (`bubble_rect`), for as long as the document's layout holds."""
    return [(bubble_rect(document, bubble), bubble) for bubble in bubbles]


def paint_bubbles(painter: QPainter, shapes: list[tuple[QRectF, Bubble]], exposed: QRectF) -> None:
    """Each bubble that meets `exposed` as a rounded rectangle of its colour; `painter` and `exposed`
    are in the document's coordinates."""
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    for rect, bubble in shapes:
        if rect.intersects(exposed):
            painter.setBrush(bubble.colour)
            radius = RADII[bubble.depth]
            painter.drawRoundedRect(rect, radius, radius)
