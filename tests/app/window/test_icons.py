"""The drawn icons: each draws something in its colour, greyed when disabled, and is drawn again in
the new theme's colour."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QSize
from PySide6.QtGui import QColor, QIcon, QImage
from PySide6.QtWidgets import QApplication, QPushButton, QWidget

from app.window.icons import DRAWINGS, icon, recolour, set_icon
from app.window.theme import apply_theme


def inked(image: QImage) -> set[int]:
    """The colours (RGB, without alpha) of the pixels drawn at full opacity."""
    image = image.convertToFormat(QImage.Format.Format_ARGB32)
    return {
        image.pixel(x, y) & 0xFFFFFF
        for x in range(image.width())
        for y in range(image.height())
        if image.pixel(x, y) >> 24 == 0xFF
    }


@pytest.mark.parametrize("name", sorted(DRAWINGS))
def test_each_icon_is_drawn_in_its_colour(qtbot, name):
    drawn = icon(name, QColor("#ff0000"))
    normal = drawn.pixmap(QSize(48, 48)).toImage()
    assert inked(normal) == {0xFF0000}, "strokes, in the colour asked for"
    disabled = drawn.pixmap(QSize(48, 48), QIcon.Mode.Disabled).toImage()
    assert not inked(disabled), "greyed: never drawn at full opacity"


def test_icons_follow_the_theme(qtbot):
    app = QApplication.instance()
    root = QWidget()
    qtbot.addWidget(root)
    button = QPushButton("Attach", root)
    try:
        apply_theme(app, "light")
        set_icon(button, "attach")
        light = max(QColor.fromRgb(c).lightness() for c in inked(button.icon().pixmap(48, 48).toImage()))
        apply_theme(app, "dark")
        recolour(root)
        dark = min(QColor.fromRgb(c).lightness() for c in inked(button.icon().pixmap(48, 48).toImage()))
    finally:
        app.setStyleSheet("")  # as the other tests expect it
        app.setPalette(app.style().standardPalette())
    assert light < 100 < dark, "dark strokes on the light theme, light ones on the dark"
