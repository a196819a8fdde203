"""The next question, being written: its text, its attachments (files, the screen), how it is
answered (voice, spoken or not), and the Send and Stop buttons: Send while a model is there to
answer and no reply runs, Stop while a reply runs or its speech still plays. The question box grows
with its text, from MIN_LINES to MAX_LINES, then scrolls; the buttons are icons, named in their
tooltips and for screen readers.

Threads: the GUI thread only.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QSettings, Qt, Signal, Slot
from PySide6.QtGui import QKeyEvent, QPalette
from PySide6.QtWidgets import (
    QAbstractButton,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from app.capture.screen import grab_screen_without
from app.window.chat.attachment_strip import AttachmentStrip
from app.window.chat.attachments import FILE_FILTER, load_attachment
from app.window.icons import tool_button
from app.window.preferences import SPEECH_KEY, VOICE_KEY, Preferences
from model.errors import OmnideskError
from model.media import Audio, Image

DEFAULT_VOICE = "Chelsie"  # chosen when the remembered voice is not in the bundle
SEND_TIP = "Send the question (Enter)"
STOP_TIP = "Stop the reply and its speech"
# One shot for the question being written; a spoken question's is the Share screen toggle's (press_shots).
SCREEN_TIP = "Attach a shot of the screen, without Omnidesk's window, to the question you type"
MIN_LINES, MAX_LINES = 1, 10  # the question box's height, in lines of text: it grows, then scrolls


class QuestionBox(QPlainTextEdit):
    """Enter sends, Shift+Enter starts a new line. Its height follows its text's lines (wrapped lines
    count), between MIN_LINES and MAX_LINES.

    Signals:
    submitted(): Enter.
    """

    submitted = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.document().documentLayout().documentSizeChanged.connect(self._fit)
        self._fit()

    def height_for(self, lines: int) -> int:
        """The box's height, in pixels, to show `lines` lines of text."""
        lines = max(MIN_LINES, min(MAX_LINES, lines))
        margins = self.contentsMargins().top() + self.contentsMargins().bottom()
        document = 2 * round(self.document().documentMargin())
        # Qt's plain text editor scrolls by a line unless 2 px more than the lines are there (measured).
        return lines * self.fontMetrics().lineSpacing() + document + margins + 2

    @Slot()
    def _fit(self) -> None:
        # A plain text document's size is counted in lines, wrapped lines included.
        self.setFixedHeight(self.height_for(round(self.document().size().height())))

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        super().resizeEvent(event)
        self._fit()  # narrower, the text wraps into more lines

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt override)
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not (
            event.modifiers() & Qt.KeyboardModifier.ShiftModifier
        ):
            self.submitted.emit()
            return
        super().keyPressEvent(event)


class Composer(QObject):
    """The input widgets, in the `card` the window shows; the voice and speech choices are remembered.

    Signals:
    send_requested(): Enter or Send.
    stop_requested(): Stop.
    notice(str): an attachment could not be had (a file that is not media, no screen shot).
    """

    send_requested = Signal()
    stop_requested = Signal()
    notice = Signal(str)

    def __init__(self, settings: QSettings, window: QWidget) -> None:
        super().__init__(window)
        self._settings = settings
        self._window = window
        self.attachments = AttachmentStrip()
        self.question_box = QuestionBox()
        self.question_box.setPlaceholderText("Ask anything (Enter sends, Shift+Enter for a new line)")
        self.question_box.submitted.connect(self.send_requested)
        # The style sheet's accent behind it, its arrow in the accent's text colour.
        self.send_button = tool_button("send", "Send", SEND_TIP, QPalette.ColorRole.HighlightedText)
        self.send_button.setObjectName("send")
        self.send_button.clicked.connect(self.send_requested)
        self.stop_button = tool_button("stop", "Stop", STOP_TIP)
        self.stop_button.clicked.connect(self.stop_requested)
        self.attach_button = tool_button("attach", "Attach…", "Attach an image or a recording")
        self.attach_button.clicked.connect(self._on_attach_clicked)
        self.screen_button = tool_button("screen", "Screen", SCREEN_TIP)
        self.screen_button.clicked.connect(self._on_screen_clicked)
        self.voice_box = QComboBox()
        self.voice_box.setToolTip("The voice that speaks the replies")
        self.voice_label = QLabel("&Voice:")
        self.voice_label.setBuddy(self.voice_box)
        self.voice_box.currentTextChanged.connect(lambda voice: self._settings.setValue(VOICE_KEY, voice))
        self.speech_toggle = QCheckBox("Speak")
        self.speech_toggle.setChecked(Preferences.load(settings).speak)
        self.speech_toggle.toggled.connect(
            lambda on: self._settings.setValue(SPEECH_KEY, "true" if on else "false")
        )
        self._busy = self._speaking = False
        self._missing = ""  # what the question needs before it can be sent ("": nothing)
        self._show_state()

    def card(self, *more_tools: QAbstractButton) -> QFrame:
        """The composer as the window shows it: a rounded card with the question box above a row of
        tools (attach, the screen, `more_tools`; the voice and speech; Stop and Send)."""
        tools = QHBoxLayout()
        tools.setSpacing(2)
        for button in (self.attach_button, self.screen_button, *more_tools):
            tools.addWidget(button)
        tools.addStretch(1)
        for widget in (self.voice_label, self.voice_box, self.speech_toggle):
            tools.addWidget(widget)
        tools.addSpacing(6)
        tools.addWidget(self.stop_button)
        tools.addWidget(self.send_button)
        card = QFrame()
        card.setObjectName("composer")
        layout = QVBoxLayout(card)
        layout.setContentsMargins(10, 8, 8, 6)
        layout.addWidget(self.question_box)
        layout.addLayout(tools)
        return card

    @property
    def empty(self) -> bool:
        """There is nothing to send: no text (but spaces) and no attachment."""
        return not self.question_box.toPlainText().strip() and not self.attachments.media

    def take(self) -> tuple[str, list[Image | Audio]] | None:
        """The question's text and media, leaving the row empty; None when there is nothing to send."""
        if self.empty:
            return None
        text = self.question_box.toPlainText().strip()
        self.question_box.clear()
        return text, self.attachments.take()

    def set_busy(self, busy: bool) -> None:
        """A reply is running: it can be stopped, and no question sent."""
        self._busy = busy
        self._show_state()

    def set_speaking(self, speaking: bool) -> None:
        """A reply's speech waits to play or plays: it can be stopped (a new question silences it too)."""
        self._speaking = speaking
        self._show_state()

    def set_missing(self, missing: str) -> None:
        """What must come before a question can be answered (e.g. "No model yet: …"); "" for nothing."""
        self._missing = missing
        self._show_state()

    @property
    def missing(self) -> str:
        return self._missing

    def _show_state(self) -> None:
        self.send_button.setEnabled(not self._busy and not self._missing)
        self.send_button.setToolTip(self._missing or SEND_TIP)
        self.stop_button.setEnabled(self._busy or self._speaking)

    @property
    def voice(self) -> str:
        return self.voice_box.currentText()

    @property
    def speak(self) -> bool:
        return self.speech_toggle.isChecked()

    def voices(self) -> list[str]:
        return [self.voice_box.itemText(i) for i in range(self.voice_box.count())]

    @Slot(object)
    def set_voices(self, voices: list[str]) -> None:
        """The bundle's voices; the remembered one is chosen if it is there, else DEFAULT_VOICE."""
        remembered = Preferences.load(self._settings).voice
        self.voice_box.blockSignals(True)
        self.voice_box.clear()
        self.voice_box.addItems(voices)
        self.voice_box.blockSignals(False)
        preferred = remembered if remembered in voices else (DEFAULT_VOICE if DEFAULT_VOICE in voices else "")
        if preferred:
            self.voice_box.setCurrentText(preferred)

    def choose_voice(self, voice: str) -> None:
        if voice and self.voice_box.findText(voice) >= 0:
            self.voice_box.setCurrentText(voice)

    def attach_file(self, path: Path) -> None:
        try:
            media = load_attachment(path)
        except OmnideskError as exc:
            self.notice.emit(str(exc))
            return
        self.attachments.add(media, path.name)

    @Slot()
    def _on_attach_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self._window, "Attach an image or a recording", "", FILE_FILTER)
        if path:
            self.attach_file(Path(path))

    @Slot()
    def _on_screen_clicked(self) -> None:
        """A shot of the screen without Omnidesk's window (hidden while it is taken)."""
        self.screen_button.setEnabled(False)
        grab_screen_without(self._window, self._on_screen_taken, self._on_screen_failed)

    def _on_screen_taken(self, image: Image) -> None:
        self.screen_button.setEnabled(True)
        self.attachments.add(image, "Screen")

    def _on_screen_failed(self, problem: OmnideskError) -> None:
        self.screen_button.setEnabled(True)
        self.notice.emit(f"{problem}.")
