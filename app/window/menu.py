"""The window's menu bar: File (Settings…, Set up a model…, Quit) and View → Theme.

The menus only offer: what their actions do is connected by the window.

Threads: the GUI thread only.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMainWindow

from app.window.theme import THEMES

THEME_LABELS = {"system": "Follow the system", "light": "Light", "dark": "Dark"}


class WindowMenu(QObject):
    """The menus of `window`'s menu bar, and their actions `settings_action`, `setup_action` and
    `quit_action`.

    Signals:
    theme_chosen(str): one of THEMES was picked in View → Theme.
    """

    theme_chosen = Signal(str)

    def __init__(self, window: QMainWindow) -> None:
        super().__init__(window)
        file_menu = window.menuBar().addMenu("&File")
        self.settings_action = file_menu.addAction("Settings…")
        self.settings_action.setShortcut(QKeySequence.StandardKey.Preferences)
        self.setup_action = file_menu.addAction("Set up a model…")
        file_menu.addSeparator()
        self.quit_action = file_menu.addAction("&Quit")
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))  # Cmd+Q on macOS; not every platform has one
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        themes = window.menuBar().addMenu("&View").addMenu("Theme")
        self._theme_actions = QActionGroup(self)
        for theme in THEMES:
            action = themes.addAction(THEME_LABELS[theme])
            action.setCheckable(True)
            action.setData(theme)
            action.triggered.connect(lambda _=False, t=theme: self.theme_chosen.emit(t))
            self._theme_actions.addAction(action)

    def show_theme(self, theme: str) -> None:
        """Check `theme` in View → Theme."""
        for action in self._theme_actions.actions():
            action.setChecked(action.data() == theme)
