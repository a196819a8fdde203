"""Light, dark, or the system's colour scheme, with Qt's Fusion style on every platform; the chat's
own colours (message bubbles, code, the activity chip) for each scheme; and the application's style
sheet: rounded, quiet controls (the composer a card, buttons that light up only when hovered or on).

The type scale is calm: one body size (the application's font), names and notes smaller, code a
little smaller still; the chat view sets its text in these (app.window.chat.view).
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

THEMES = ("system", "light", "dark")
READING_SCALE = 1.1  # the chat's text, against the controls' (the application's font)

_LIGHT = {
    QPalette.ColorRole.Window: "#f7f7f8",
    QPalette.ColorRole.WindowText: "#1f1f1f",
    QPalette.ColorRole.Base: "#ffffff",
    QPalette.ColorRole.AlternateBase: "#f0f0f2",
    QPalette.ColorRole.Text: "#1f1f1f",
    QPalette.ColorRole.Button: "#ffffff",
    QPalette.ColorRole.ButtonText: "#303134",
    QPalette.ColorRole.ToolTipBase: "#ffffff",
    QPalette.ColorRole.ToolTipText: "#1f1f1f",
    QPalette.ColorRole.PlaceholderText: "#80868b",
    QPalette.ColorRole.Highlight: "#1a73e8",
    QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.Link: "#1a73e8",
}
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
    border: str  # the lines around cards, fields and buttons
    hover: str  # a control under the pointer
    selected: str  # a checked button, the chosen conversation


LIGHT_CHAT = ChatColors(
    user="#dde8fb",
    user_text="#1f1f1f",
    assistant="#ffffff",
    text="#1f1f1f",
    code="#eef0f3",
    muted="#5f6368",
    listening="#d93025",
    thinking="#1a73e8",
    speaking="#188038",
    chip_text="#ffffff",
    border="#dadce0",
    hover="#ececef",
    selected="#e1e8f5",
)
DARK_CHAT = ChatColors(
    user="#2c3a52",
    user_text="#e8eaed",
    assistant="#2a2b2f",
    text="#e8eaed",
    code="#111214",
    muted="#9aa0a6",
    listening="#f28b82",
    thinking="#8ab4f8",
    speaking="#81c995",
    chip_text="#202124",
    border="#3c4043",
    hover="#303134",
    selected="#2b3a55",
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
    colours = _DARK if dark else _LIGHT
    window = QColor(colours[QPalette.ColorRole.Window])
    for role, color in colours.items():
        palette.setColor(role, QColor(color))
        palette.setColor(QPalette.ColorGroup.Disabled, role, _halfway(QColor(color), window))
    app.setPalette(palette)
    app.setStyleSheet(style_sheet(DARK_CHAT if dark else LIGHT_CHAT, palette))
    return "dark" if dark else "light"


def _halfway(colour: QColor, towards: QColor) -> QColor:
    """A disabled control's colour: halfway from its own to the window's, in either scheme."""
    return QColor(
        (colour.red() + towards.red()) // 2,
        (colour.green() + towards.green()) // 2,
        (colour.blue() + towards.blue()) // 2,
    )


def style_sheet(colours: ChatColors, palette: QPalette) -> str:
    """The application's style sheet for a scheme: only colours differ between schemes, never a size,
    so that a change of theme moves nothing."""
    base = palette.color(QPalette.ColorRole.Base).name()
    window = palette.color(QPalette.ColorRole.Window).name()
    accent = palette.color(QPalette.ColorRole.Highlight).name()
    return f"""
QPushButton {{ border: 1px solid {colours.border}; border-radius: 8px; padding: 5px 12px;
    background: {base}; }}
QPushButton:hover, QToolButton:hover {{ background: {colours.hover}; }}
QPushButton:checked, QToolButton:checked {{ background: {colours.selected}; border-color: {accent}; }}
QPushButton:disabled {{ color: {colours.muted}; }}
QToolButton {{ border: 1px solid transparent; border-radius: 8px; padding: 4px; }}
QToolButton#send {{ background: {accent}; border-radius: 15px; }}
QToolButton#send:disabled {{ background: {colours.border}; }}
QFrame#composer {{ background: {colours.assistant}; border: 1px solid {colours.border};
    border-radius: 16px; }}
QFrame#composer QPlainTextEdit {{ background: transparent; }}
QLineEdit {{ border: 1px solid {colours.border}; border-radius: 8px; padding: 4px 8px; background: {base}; }}
QListWidget {{ border: none; background: transparent; }}
QListWidget::item {{ padding: 6px 8px; border-radius: 8px; }}
QListWidget::item:hover {{ background: {colours.hover}; }}
QListWidget::item:selected {{ background: {colours.selected}; color: {colours.text}; }}
QTextBrowser {{ border: none; background: {window}; }}
QScrollBar:vertical {{ width: 10px; background: transparent; margin: 2px; }}
QScrollBar::handle:vertical {{ background: {colours.border}; border-radius: 3px; min-height: 32px; }}
QScrollBar::add-line, QScrollBar::sub-line {{ height: 0; width: 0; }}
QScrollBar::add-page, QScrollBar::sub-page {{ background: transparent; }}
QProgressBar {{ border: none; background: {colours.border}; border-radius: 4px; }}
QProgressBar::chunk {{ background: {colours.speaking}; border-radius: 4px; }}
QStatusBar {{ color: {colours.muted}; }}
QStatusBar::item {{ border: none; }}
"""
