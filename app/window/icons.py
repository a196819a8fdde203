"""The window's icons, drawn here with QPainter in one colour (the theme's text colour), so that they
follow the theme and stay sharp at any scale; no image files.

Each icon is a few strokes on a 24 × 24 grid (units: the grid's, scaled to the pixmap), round caps
and joins, 1.8 units wide, as in the outline icon sets of the ChatGPT and Claude apps.

Threads: the GUI thread only (QPixmap).
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QPainter, QPainterPath, QPalette, QPen, QPixmap
from PySide6.QtWidgets import QAbstractButton, QToolButton, QWidget

GRID = 24  # the drawing's units across
STROKE = 1.8  # the line width, in grid units
SIZES = (16, 20, 24, 32, 48)  # pixmap sizes drawn for each icon, in device pixels
ICON_SIZE = QSize(20, 20)  # the tool buttons' icons, in pixels
NAME_PROPERTY = "omnideskIcon"  # a button's icon name, kept on it to draw it again in another theme
ROLE_PROPERTY = "omnideskIconRole"  # ... and the palette role it is drawn in


def _microphone(p: QPainter) -> None:
    p.drawRoundedRect(QRectF(9, 3, 6, 11), 3, 3)
    path = QPainterPath(QPointF(5.5, 11))
    path.cubicTo(5.5, 19.5, 18.5, 19.5, 18.5, 11)
    p.drawPath(path)
    p.drawLine(QPointF(12, 17.5), QPointF(12, 21))


def _waves(p: QPainter) -> None:
    """Sound heard without a key: a waveform's bars."""
    for x, half in ((4, 2.5), (8, 6), (12, 8.5), (16, 5), (20, 2.5)):
        p.drawLine(QPointF(x, 12 - half), QPointF(x, 12 + half))


def _paperclip(p: QPainter) -> None:
    path = QPainterPath(QPointF(15.5, 7))
    path.lineTo(8.5, 14)
    path.cubicTo(6.5, 16, 9, 18.5, 11, 16.5)
    path.lineTo(18, 9.5)
    path.cubicTo(21.5, 6, 16.5, 1, 13, 4.5)
    path.lineTo(6, 11.5)
    path.cubicTo(1, 16.5, 8, 23.5, 13, 18.5)
    path.lineTo(18.5, 13)
    p.drawPath(path)


def _screen(p: QPainter) -> None:
    p.drawRoundedRect(QRectF(3, 4, 18, 12), 2, 2)
    p.drawLine(QPointF(12, 16), QPointF(12, 20))
    p.drawLine(QPointF(8, 20), QPointF(16, 20))


def _camera(p: QPainter) -> None:
    p.drawRoundedRect(QRectF(2.5, 7, 13, 10), 2, 2)
    path = QPainterPath(QPointF(15.5, 10.5))
    path.lineTo(21.5, 7.5)
    path.lineTo(21.5, 16.5)
    path.lineTo(15.5, 13.5)
    p.drawPath(path)


def _snapshot(p: QPainter) -> None:
    """A photo camera: take the frame."""
    path = QPainterPath(QPointF(3, 8.5))
    path.lineTo(7.5, 8.5)
    path.lineTo(9, 6)
    path.lineTo(15, 6)
    path.lineTo(16.5, 8.5)
    path.lineTo(21, 8.5)
    path.lineTo(21, 19)
    path.lineTo(3, 19)
    path.closeSubpath()
    p.drawPath(path)
    p.drawEllipse(QPointF(12, 13.5), 3.2, 3.2)


def _send(p: QPainter) -> None:
    p.drawLine(QPointF(12, 20), QPointF(12, 4.5))
    p.drawPolyline([QPointF(5.5, 11), QPointF(12, 4.5), QPointF(18.5, 11)])


def _stop(p: QPainter) -> None:
    p.setBrush(p.pen().color())
    p.drawRoundedRect(QRectF(6.5, 6.5, 11, 11), 2, 2)


def _plus(p: QPainter) -> None:
    p.drawLine(QPointF(12, 5), QPointF(12, 19))
    p.drawLine(QPointF(5, 12), QPointF(19, 12))


def _handset(p: QPainter) -> None:
    """A telephone's handset: a call."""
    path = QPainterPath(QPointF(6, 3.5))
    path.lineTo(9.5, 7.5)
    path.lineTo(8, 10)
    path.cubicTo(9.5, 13, 11, 14.5, 14, 16)
    path.lineTo(16.5, 14.5)
    path.lineTo(20.5, 18)
    path.lineTo(18.5, 20.5)
    path.cubicTo(11, 20.5, 3.5, 13, 3.5, 5.5)
    path.closeSubpath()
    p.drawPath(path)


DRAWINGS: dict[str, Callable[[QPainter], None]] = {
    "microphone": _microphone,
    "hands-free": _waves,
    "attach": _paperclip,
    "screen": _screen,
    "camera": _camera,
    "snapshot": _snapshot,
    "send": _send,
    "stop": _stop,
    "new": _plus,
    "call": _handset,
}


def icon(name: str, colour: QColor, disabled: QColor | None = None) -> QIcon:
    """The icon `name` (one of DRAWINGS) in `colour`; greyed in `disabled` (default: `colour` at 40 %
    opacity) when its button is disabled."""
    if disabled is None:
        disabled = QColor(colour)
        disabled.setAlphaF(0.4)
    result = QIcon()
    for size in SIZES:
        result.addPixmap(_pixmap(name, colour, size), QIcon.Mode.Normal)
        result.addPixmap(_pixmap(name, disabled, size), QIcon.Mode.Disabled)
    return result


def _pixmap(name: str, colour: QColor, size: int) -> QPixmap:
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.scale(size / GRID, size / GRID)
    pen = QPen(colour, STROKE, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin)
    painter.setPen(pen)
    painter.setBrush(Qt.BrushStyle.NoBrush)
    DRAWINGS[name](painter)
    painter.end()
    return pixmap


def set_icon(
    button: QAbstractButton, name: str, role: QPalette.ColorRole = QPalette.ColorRole.ButtonText
) -> None:
    """Give `button` the icon `name` in the application palette's `role` colour (a button's text,
    by default); `recolour` draws it again when the theme changes."""
    button.setProperty(NAME_PROPERTY, name)
    button.setProperty(ROLE_PROPERTY, role.value)
    button.setIcon(icon(name, _colour(role)))


def tool_button(
    icon_name: str, name: str, tip: str, role: QPalette.ColorRole = QPalette.ColorRole.ButtonText
) -> QToolButton:
    """An icon-only button of ICON_SIZE, its icon in the palette's `role` colour; `name` is what
    screen readers say, `tip` its tooltip."""
    button = QToolButton()
    set_icon(button, icon_name, role)
    button.setIconSize(ICON_SIZE)
    button.setAutoRaise(True)
    button.setText(name)
    button.setAccessibleName(name)
    button.setToolTip(tip)
    button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
    return button


def keep_width(button: QAbstractButton, texts: tuple[str, ...]) -> None:
    """Fix `button`'s width to fit the widest of the `texts` it shows (with its icon), so that
    changing its text moves nothing beside it."""
    shown = button.text()
    widths = []
    for text in texts:
        button.setText(text)
        widths.append(button.sizeHint().width())
    button.setText(shown)
    button.setFixedWidth(max(widths))


def recolour(root: QWidget) -> None:
    """Draw the icons of `root`'s buttons again in the application's (new) palette."""
    for button in root.findChildren(QAbstractButton):
        name = button.property(NAME_PROPERTY)
        if name:
            set_icon(button, name, QPalette.ColorRole(button.property(ROLE_PROPERTY)))


def _colour(role: QPalette.ColorRole) -> QColor:
    return QGuiApplication.palette().color(role)
