"""The assistant's state at a glance: a chip that says Listening, Thinking or Speaking.

`activity` decides the state from what the window knows; `ActivityChip` shows it in the theme's
colours (it is styled again when the theme changes).

Threads: the GUI thread only.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

from app.window.theme import chat_colors

LABELS = {"ready": "Ready", "listening": "● Listening", "thinking": "Thinking…", "speaking": "Speaking"}


def activity(listening: bool, thinking: bool, speaking: bool) -> str:
    """One of LABELS: the microphone first (the user is talking), then sound, then a reply running."""
    if listening:
        return "listening"
    if speaking:
        return "speaking"
    return "thinking" if thinking else "ready"


class ActivityChip(QLabel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(self.fontMetrics().horizontalAdvance(max(LABELS.values(), key=len)) + 28)
        self.activity = ""
        self.show_activity("ready")

    def show_activity(self, state: str) -> None:
        if state == self.activity:
            return
        self.activity = state
        self.setText(LABELS[state])
        self.setAccessibleName(f"Assistant: {LABELS[state]}")
        self.restyle()

    def restyle(self) -> None:
        """Colours for the current state in the application's theme (its own palette is the style
        sheet's)."""
        colours = chat_colors(QGuiApplication.palette())
        background = getattr(colours, self.activity, "transparent")
        text = colours.chip_text if self.activity != "ready" else colours.muted
        border = colours.muted if self.activity == "ready" else background
        self.setStyleSheet(
            f"QLabel {{ background: {background}; color: {text}; border: 1px solid {border}; "
            "border-radius: 9px; padding: 2px 10px; font-weight: 600; }"  # at most half its height: round
        )
