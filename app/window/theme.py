"""Light, dark, or the system's colour scheme, with Qt's Fusion style on every platform; and the
chat's own colours (message bubbles, code, the activity chip) for each scheme."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

THEMES = ("system", "light", "dark")

_DARK = {
    QPalette.ColorRole.Window: "#202124",
    QPalette.ColorRole.WindowText: "#e8eaed",
    QPalette.ColorRole.Base: "#17181a",
    QPalette.ColorRole.AlternateBase: "#26272a",
    QPalette.ColorRole.Text: "#e8eaed",
    QPalette.ColorRole.Button: "#2d2e31",
    QPalette.ColorRole.ButtonText: "#e8eaed",
    QPalette.ColorRole.ToolTipBase: "#2d2e31",
    QPalette.ColorRole.ToolTipText: "#e8eaed",
    QPalette.ColorRole.PlaceholderText: "#9aa0a6",
    QPalette.ColorRole.Highlight: "#8ab4f8",
    QPalette.ColorRole.HighlightedText: "#202124",
    QPalette.ColorRole.Link: "#8ab4f8",
}


@dataclass(frozen=True)
class ChatColors:
    """The chat's colours in one scheme (CSS colours)."""

    user: str  # the user's bubbles
    user_text: str
    assistant: str  # the assistant's bubbles
    text: str
    code: str  # code blocks and inline code, inside a bubble
    muted: str  # names, notes, hints
    listening: str  # the activity chip's background in each state; its text is `chip_text`
    thinking: str
    speaking: str
    chip_text: str


LIGHT_CHAT = ChatColors(
    user="#d3e3fd",
    user_text="#041e49",
    assistant="#f0f4f9",
    text="#1f1f1f",
    code="#dde3ea",
    muted="#5f6368",
    listening="#d93025",
    thinking="#1a73e8",
    speaking="#188038",
    chip_text="#ffffff",
)
DARK_CHAT = ChatColors(
    user="#0842a0",
    user_text="#d3e3fd",
    assistant="#26282c",
    text="#e8eaed",
    code="#111214",
    muted="#9aa0a6",
    listening="#f28b82",
    thinking="#8ab4f8",
    speaking="#81c995",
    chip_text="#202124",
)


def is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def chat_colors(palette: QPalette) -> ChatColors:
    """The chat's colours for the scheme `palette` is in."""
    return DARK_CHAT if is_dark(palette) else LIGHT_CHAT


def system_is_dark() -> bool:
    return QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Dark


def apply_theme(app: QApplication, theme: str) -> str:
    """Apply "light", "dark" or "system"; returns the scheme in effect ("light" or "dark")."""
    if theme not in THEMES:
        theme = "system"
    dark = theme == "dark" or (theme == "system" and system_is_dark())
    app.setStyle("Fusion")
    palette = app.style().standardPalette()
    if dark:
        for role, color in _DARK.items():
            palette.setColor(role, QColor(color))
            palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(color).darker(140))
    app.setPalette(palette)
    return "dark" if dark else "light"
