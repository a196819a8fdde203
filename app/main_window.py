"""The main window: a chat that streams the reply, an input row, a status bar.

The window never waits on the model: questions and bundle choices go to the
`ConversationWorker` (on its own thread) as signals, and its signals come back here.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

from PySide6.QtCore import QSettings, Qt, QThread, QTimer, Signal, Slot
from PySide6.QtGui import QActionGroup, QKeyEvent, QTextCursor
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.conversation_list import ConversationList
from app.history import History
from app.theme import THEMES, apply_theme
from app.worker import ConversationWorker

MODELS_FOLDER_KEY = "models/folder"
THEME_KEY = "appearance/theme"
VOICE_KEY = "speech/voice"
SPEECH_KEY = "speech/enabled"
RENDER_INTERVAL_MS = 50  # a streaming reply is re-rendered at most this often


@dataclass
class _Message:
    role: str  # "user" or "assistant"
    text: str
    note: str = ""  # e.g. "stopped"


class _QuestionBox(QPlainTextEdit):
    """Enter sends, Shift+Enter starts a new line."""

    submitted = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt override)
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not (
            event.modifiers() & Qt.KeyboardModifier.ShiftModifier
        ):
            self.submitted.emit()
            return
        super().keyPressEvent(event)


class MainWindow(QMainWindow):
    """Signals (all emitted on the GUI thread):
    load_requested(str): a bundle folder to load (to the worker).
    question_asked(str, str, bool): a question, the voice and whether to speak (to the worker).
    conversation_restored(object): the (question, reply) texts of a reopened conversation (to the worker).
    model_ready(str): a bundle is loaded; its description.
    model_unavailable(str): loading failed, or a turn could not run; the message shown.
    reply_progressed(str): a piece of the reply was received.
    reply_completed(str): the reply ended, with the reason.
    """

    load_requested = Signal(str)
    question_asked = Signal(str, str, bool)
    conversation_restored = Signal(object)
    model_ready = Signal(str)
    model_unavailable = Signal(str)
    reply_progressed = Signal(str)
    reply_completed = Signal(str)

    def __init__(
        self, settings: QSettings, worker: ConversationWorker | None = None, history: History | None = None
    ) -> None:
        super().__init__()
        self.setWindowTitle("Omnidesk")
        self.resize(1100, 720)
        self._settings = settings
        self.history = history or History()
        self._conversation: int | None = None
        self._reply_id: int | None = None
        self._messages: list[_Message] = []
        self._busy = False
        self._render_pending = False
        self._loading_folder = ""

        self._thread = QThread(self)
        self._thread.setObjectName("thinker")
        self.worker = worker or ConversationWorker()
        self.worker.moveToThread(self._thread)
        self.load_requested.connect(self.worker.load)
        self.question_asked.connect(self.worker.ask)
        self.conversation_restored.connect(self.worker.restore)
        self.worker.model_loaded.connect(self._on_model_loaded)
        self.worker.model_failed.connect(self._on_model_failed)
        self.worker.text_received.connect(self._on_text_received)
        self.worker.reply_finished.connect(self._on_reply_finished)
        self.worker.turn_failed.connect(self._on_turn_failed)
        self.worker.speech_unavailable.connect(self._on_speech_unavailable)
        self.worker.voices_known.connect(self._on_voices_known)
        self._thread.start()

        self._build()
        folder = str(settings.value(MODELS_FOLDER_KEY, "", type=str))
        if folder:
            self.load_bundle(folder)
        else:
            self._show_notice("No model yet: set one up (download it, or use files you already have).")

    # -- layout ------------------------------------------------------------------------

    def _build(self) -> None:
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.notice.setObjectName("notice")
        self.choose_button = QPushButton("Set up a model…")
        self.choose_button.clicked.connect(self._open_setup)
        notice_row = QHBoxLayout()
        notice_row.addWidget(self.notice, 1)
        notice_row.addWidget(self.choose_button)

        self.chat_view = QTextBrowser()
        self.chat_view.setOpenExternalLinks(True)

        self.question_box = _QuestionBox()
        self.question_box.setPlaceholderText("Ask anything (Enter sends, Shift+Enter for a new line)")
        self.question_box.setFixedHeight(70)
        self.question_box.submitted.connect(self._send)
        self.send_button = QPushButton("Send")
        self.send_button.clicked.connect(self._send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self._stop)
        self.voice_box = QComboBox()
        self.voice_box.setToolTip("The voice that speaks the replies")
        self.voice_box.currentTextChanged.connect(lambda voice: self._settings.setValue(VOICE_KEY, voice))
        self.speech_toggle = QCheckBox("Speak")
        self.speech_toggle.setChecked(str(self._settings.value(SPEECH_KEY, "true")) == "true")
        self.speech_toggle.toggled.connect(
            lambda on: self._settings.setValue(SPEECH_KEY, "true" if on else "false")
        )
        input_row = QHBoxLayout()
        input_row.addWidget(self.question_box, 1)
        input_row.addWidget(self.voice_box)
        input_row.addWidget(self.speech_toggle)
        input_row.addWidget(self.send_button)
        input_row.addWidget(self.stop_button)

        layout = QVBoxLayout()
        layout.addLayout(notice_row)
        layout.addWidget(self.chat_view, 1)
        layout.addLayout(input_row)
        chat = QWidget()
        chat.setLayout(layout)
        self.conversations = ConversationList(self.history)
        self.conversations.conversation_chosen.connect(self._on_conversation_chosen)
        self.conversations.new_requested.connect(self._on_new_requested)
        self.conversations.conversation_deleted.connect(self._on_conversation_deleted)
        splitter = QSplitter()
        splitter.addWidget(self.conversations)
        splitter.addWidget(chat)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([240, 860])
        self.setCentralWidget(splitter)

        self._build_menu()
        self.model_status = QLabel("No model")
        self.speed_status = QLabel("")
        self.statusBar().addWidget(self.model_status, 1)
        self.statusBar().addPermanentWidget(self.speed_status)
        self._update_controls()

    def _build_menu(self) -> None:
        view = self.menuBar().addMenu("&View")
        themes = view.addMenu("Theme")
        group = QActionGroup(self)
        current = str(self._settings.value(THEME_KEY, "system"))
        labels = {"system": "Follow the system", "light": "Light", "dark": "Dark"}
        for theme in THEMES:
            action = themes.addAction(labels[theme])
            action.setCheckable(True)
            action.setChecked(theme == current)
            action.triggered.connect(lambda _=False, t=theme: self.set_theme(t))
            group.addAction(action)
        self.set_theme(current)

    def set_theme(self, theme: str) -> None:
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, theme)
        self._settings.setValue(THEME_KEY, theme)
        self._render()

    def _show_notice(self, text: str) -> None:
        self.notice.setText(text)
        self.notice.setVisible(bool(text))

    def _update_controls(self) -> None:
        self.send_button.setEnabled(not self._busy)
        self.stop_button.setEnabled(self._busy)
        self.conversations.setEnabled(not self._busy)

    # -- actions -----------------------------------------------------------------------

    def load_bundle(self, folder: str) -> None:
        self._loading_folder = folder
        self.model_status.setText(f"Loading {folder}…")
        self.load_requested.emit(folder)

    @Slot()
    def _open_setup(self) -> None:
        from app.setup_dialog import SetupDialog
        from model.hardware import probe

        dialog = SetupDialog(probe(), parent=self)
        dialog.bundle_ready.connect(self.load_bundle)
        dialog.bundle_ready.connect(lambda _: dialog.accept())
        dialog.exec()

    @Slot()
    def _send(self) -> None:
        text = self.question_box.toPlainText().strip()
        if not text or self._busy:
            return
        self.question_box.clear()
        if self._conversation is None:
            self._conversation = self.history.new_conversation()
        self.history.add_message(self._conversation, "user", text)
        self._reply_id = self.history.add_message(self._conversation, "assistant", "")
        self.conversations.refresh()
        self.conversations.select(self._conversation)
        self._messages += [_Message("user", text), _Message("assistant", "")]
        self._busy = True
        self._update_controls()
        self._render()
        self.question_asked.emit(text, self.voice_box.currentText(), self.speech_toggle.isChecked())

    @Slot()
    def _stop(self) -> None:
        self.worker.cancel()

    # -- worker signals ------------------------------------------------------------------

    @Slot(str)
    def _on_model_loaded(self, description: str) -> None:
        self._settings.setValue(MODELS_FOLDER_KEY, self._loading_folder)
        self.model_status.setText(f"Model: {description}")
        self._show_notice("")
        self.model_ready.emit(description)

    @Slot(str)
    def _on_model_failed(self, message: str) -> None:
        self.model_status.setText("No model")
        self._show_notice(message)
        self.model_unavailable.emit(message)

    @Slot(str)
    def _on_text_received(self, text: str) -> None:
        if self._messages and self._messages[-1].role == "assistant":
            self._messages[-1].text += text
        if not self._render_pending:
            self._render_pending = True
            QTimer.singleShot(RENDER_INTERVAL_MS, self._render)
        self.reply_progressed.emit(text)

    @Slot(str, float, float, float)
    def _on_reply_finished(
        self, reason: str, first_text_s: float, first_audio_s: float, tokens_per_s: float
    ) -> None:
        self._busy = False
        if self._messages and reason in ("cancelled", "context_full"):
            self._messages[-1].note = (
                "interrupted" if reason == "cancelled" else "the conversation is too long"
            )
        parts = []
        if not math.isnan(first_audio_s):
            parts.append(f"first audio {first_audio_s * 1000:.0f} ms")
        if not math.isnan(first_text_s):
            parts.append(f"first token {first_text_s * 1000:.0f} ms")
        if not math.isnan(tokens_per_s):
            parts.append(f"{tokens_per_s:.1f} tokens/s")
        self.speed_status.setText(" · ".join(parts))
        self._update_controls()
        self._render()
        self._save_reply()
        self.reply_completed.emit(reason)

    @Slot(str)
    def _on_speech_unavailable(self, message: str) -> None:
        self.speech_toggle.setChecked(False)
        self._show_notice(message)

    @Slot(object)
    def _on_voices_known(self, voices: list[str]) -> None:
        remembered = str(self._settings.value(VOICE_KEY, ""))
        self.voice_box.blockSignals(True)
        self.voice_box.clear()
        self.voice_box.addItems(voices)
        self.voice_box.blockSignals(False)
        preferred = remembered if remembered in voices else ("Chelsie" if "Chelsie" in voices else "")
        if preferred:
            self.voice_box.setCurrentText(preferred)

    @Slot(str)
    def _on_turn_failed(self, message: str) -> None:
        if self._messages and self._messages[-1].role == "assistant" and not self._messages[-1].text:
            self._messages.pop()
            if self._reply_id is not None:
                self.history.update_message(self._reply_id, "", note=f"not answered: {message}")
                self._reply_id = None
        self._busy = False
        self._update_controls()
        self._render()
        self._show_notice(message)
        self.model_unavailable.emit(message)

    # -- rendering -----------------------------------------------------------------------

    def transcript(self) -> str:
        """The conversation as plain text (what the chat view shows, without formatting)."""
        return "\n\n".join(f"{m.role}: {m.text}" for m in self._messages)

    def _save_reply(self) -> None:
        if self._reply_id is not None and self._messages and self._messages[-1].role == "assistant":
            self.history.update_message(self._reply_id, self._messages[-1].text, self._messages[-1].note)

    @Slot(int)
    def _on_conversation_chosen(self, conversation: int) -> None:
        if self._busy or conversation == self._conversation:
            return
        stored = self.history.messages(conversation)
        self._conversation, self._reply_id = conversation, None
        self._messages = [_Message(m.role, m.text, m.note) for m in stored]
        questions = [m.text for m in stored if m.role == "user"]
        replies = [m.text for m in stored if m.role == "assistant"]
        self.conversation_restored.emit(list(zip(questions, replies, strict=False)))
        self._render()

    @Slot()
    def _on_new_requested(self) -> None:
        if self._busy:
            return
        self._conversation, self._reply_id, self._messages = None, None, []
        self.conversation_restored.emit([])
        self.conversations.select(None)
        self._render()

    @Slot(int)
    def _on_conversation_deleted(self, conversation: int) -> None:
        if conversation == self._conversation:
            self._on_new_requested()

    @Slot()
    def _render(self) -> None:
        self._render_pending = False
        if self._busy:
            self._save_reply()
        parts = []
        for message in self._messages:
            if message.role == "user":
                parts.append(f"<p><b>You</b></p><p>{html.escape(message.text).replace(chr(10), '<br>')}</p>")
            else:
                parts.append(
                    f"<p><b>Omnidesk</b>{' <i>(' + message.note + ')</i>' if message.note else ''}</p>"
                )
                parts.append(_markdown_html(message.text or "…"))
        self.chat_view.setHtml("".join(parts))
        self.chat_view.moveCursor(QTextCursor.MoveOperation.End)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        if self._thread.isRunning():
            self.worker.cancel()
            self._thread.quit()
            self._thread.wait(5000)
            self._save_reply()
            self.worker.close()
        super().closeEvent(event)


def _markdown_html(text: str) -> str:
    """A reply's Markdown (code blocks, lists, emphasis) as HTML for the chat view."""
    from PySide6.QtGui import QTextDocument

    document = QTextDocument()
    document.setMarkdown(text)
    body = document.toHtml()
    start, end = body.find("<body"), body.rfind("</body>")
    return body[body.find(">", start) + 1 : end] if start >= 0 else body
