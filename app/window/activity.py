"""The assistant's state at a glance: a chip that says Listening, Thinking or Speaking (Ready or No
model when idle).

`activity` decides the state from what the window knows; `ActivityChip` shows it in the theme's
colours (it is styled again when the theme changes).

Threads: the GUI thread only.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

from app.window.theme import chat_colors

LABELS = {
    "no_model": "No model",
    "ready": "Ready",
    "listening": "● Listening",
    "thinking": "Thinking…",
    "speaking": "Speaking",
}
IDLE = ("no_model", "ready")  # shown plain: nothing is happening


def activity(listening: bool, thinking: bool, speaking: bool, model_loaded: bool = True) -> str:
    """One of LABELS: the microphone first (the user is talking), then sound, then a reply running;
    idle, Ready only once a model is loaded."""
    if listening:
        return "listening"
    if speaking:
        return "speaking"
    if thinking:
        return "thinking"
    return "ready" if model_loaded else "no_model"


class ActivityChip(QLabel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(self.fontMetrics().horizontalAdvance(max(LABELS.values(), key=len)) + 28)
        self.activity = ""
        self.show_activity("no_model")

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
        idle = self.activity in IDLE
        background = "transparent" if idle else background
        text = colours.muted if idle else colours.chip_text
        border = colours.muted if idle else background
        self.setStyleSheet(
            f"QLabel {{ background: {background}; color: {text}; border: 1px solid {border}; "
            "border-radius: 9px; padding: 2px 10px; font-weight: 600; }"  # at most half its height: round
        )
