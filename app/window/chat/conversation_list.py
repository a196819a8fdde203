"""The sidebar: saved conversations with search, new, rename, delete and export, and above them
what the user must know about the history itself (a damaged one set aside, nothing being saved)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QFileDialog,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.history.store import History
from app.window.icons import set_icon


class ConversationList(QWidget):
    """Signals:
    conversation_chosen(int): the user opened a saved conversation.
    new_requested(): the user asked for a new, empty conversation.
    conversation_deleted(int): a conversation was deleted (after confirmation).
    """

    conversation_chosen = Signal(int)
    new_requested = Signal()
    conversation_deleted = Signal(int)

    def __init__(self, history: History, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._history = history
        self.notice = QLabel()
        self.notice.setObjectName("notice")
        self.notice.setWordWrap(True)
        self.notice.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)  # a path to copy
        self.notice.setVisible(False)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search conversations")
        self.search.textChanged.connect(self.refresh)
        self.new_button = QPushButton("New chat")
        set_icon(self.new_button, "new")
        self.new_button.clicked.connect(self.new_requested)
        self.items = QListWidget()
        self.items.itemActivated.connect(self._on_item_activated)
        self.items.itemClicked.connect(self._on_item_activated)
        self.items.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.items.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.items.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.items.customContextMenuRequested.connect(self._on_menu_requested)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.notice)
        layout.addWidget(self.new_button)
        layout.addWidget(self.search)
        layout.addWidget(self.items, 1)
        self.setMinimumWidth(200)
        history.listen(self._on_history_notice)
        self.refresh()

    @Slot(str)
    def _on_history_notice(self, text: str) -> None:
        self.notice.setText("\n".join(filter(None, (self.notice.text(), text))))
        self.notice.setVisible(True)

    @Slot()
    def refresh(self, *_: object) -> None:
        self.items.clear()
        for summary in self._history.conversations(self.search.text().strip()):
            item = QListWidgetItem(summary.title)
            item.setData(Qt.ItemDataRole.UserRole, summary.id)
            self.items.addItem(item)

    def select(self, conversation: int | None) -> None:
        for row in range(self.items.count()):
            item = self.items.item(row)
            item.setSelected(item.data(Qt.ItemDataRole.UserRole) == conversation)

    def rename(self, conversation: int, title: str) -> None:
        self._history.rename(conversation, title)
        self.refresh()

    def delete(self, conversation: int) -> None:
        self._history.delete(conversation)
        self.refresh()
        self.conversation_deleted.emit(conversation)

    def export(self, conversation: int, folder: Path) -> Path:
        return self._history.export_markdown(conversation, folder)

    @Slot(QListWidgetItem)
    def _on_item_activated(self, item: QListWidgetItem) -> None:
        self.conversation_chosen.emit(int(item.data(Qt.ItemDataRole.UserRole)))

    @Slot(QPoint)
    def _on_menu_requested(self, position: QPoint) -> None:
        item = self.items.itemAt(position)
        if item is None:
            return
        conversation = int(item.data(Qt.ItemDataRole.UserRole))
        menu = QMenu(self)
        rename = menu.addAction("Rename…")
        export = menu.addAction("Export as Markdown…")
        delete = menu.addAction("Delete…")
        chosen = menu.exec(self.items.mapToGlobal(position))
        if chosen is rename:
            title, ok = QInputDialog.getText(self, "Rename", "Title:", text=item.text())
            if ok:
                self.rename(conversation, title)
        elif chosen is export:
            folder = QFileDialog.getExistingDirectory(self, "Export to folder")
            if folder:
                self.export(conversation, Path(folder))
        elif chosen is delete:
            answer = QMessageBox.question(self, "Delete", f"Delete “{item.text()}” and its recordings?")
            if answer == QMessageBox.StandardButton.Yes:
                self.delete(conversation)
