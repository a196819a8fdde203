"""The status bar's label: a long text asks for little room, is cut with "…", and is whole in its
tooltip."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QLabel

from app.window.elided_label import MIN_CHARACTERS, ElidedLabel

LONG = "Model: a bundle with a long name (q4_k_m) on CPU, speech on CPU float32, int4 weights (fast)"


def test_a_long_text_asks_for_little_room_and_is_whole_in_its_tooltip(qtbot):
    label = ElidedLabel()
    qtbot.addWidget(label)
    label.setText(LONG)
    assert label.sizeHint().width() > label.fontMetrics().horizontalAdvance(LONG) * 0.9, "it asks for it all"
    assert label.minimumSizeHint().width() <= MIN_CHARACTERS * label.fontMetrics().averageCharWidth()
    assert label.toolTip() == LONG


def test_a_cut_text_ends_in_an_ellipsis(qtbot):
    """Drawn as a plain label draws the cut text, "…" and all."""
    label, plain = ElidedLabel(), QLabel()
    for widget in (label, plain):
        qtbot.addWidget(widget)
        widget.resize(120, label.sizeHint().height())
    label.setText(LONG)
    shown = label.fontMetrics().elidedText(LONG, Qt.TextElideMode.ElideRight, label.contentsRect().width())
    assert shown.endswith("…")
    plain.setText(shown)
    assert drawn(label) == drawn(plain)


def drawn(widget: QLabel) -> QImage:
    image = QImage(widget.size(), QImage.Format.Format_RGB32)
    image.fill(Qt.GlobalColor.white)
    widget.render(image)
    return image
