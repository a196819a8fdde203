"""The main window: a chat that streams the reply, an input row with devices, a status bar.

The window never waits on the model: questions and bundle choices go to the
`ConversationWorker` (on its own thread) as signals, and its signals come back here.
Devices are polled from the GUI thread by timers: the microphone's queue every
MIC_POLL_MS, the camera's latest frame every PREVIEW_MS; neither ever blocks.
"""

from __future__ import annotations

import html
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QSettings, Qt, QThread, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QActionGroup, QDesktopServices, QKeyEvent, QKeySequence, QPixmap, QTextCursor
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from app import camera as camera_module
from app.attachment_strip import AttachmentStrip
from app.attachments import FILE_FILTER, load_attachment, save_media
from app.camera import Camera
from app.conversation_list import ConversationList
from app.history import Attachment, History
from app.microphone import MIN_SECONDS, DeviceLost, Microphone, sound_devices
from app.microphone import StreamFactory as MicrophoneStreamFactory
from app.playback import Playback
from app.playback import StreamFactory as OutputStreamFactory
from app.preferences import MODELS_FOLDER_KEY, SPEECH_KEY, THEME_KEY, VOICE_KEY, Preferences
from app.screen import grab_screen, qimage
from app.theme import THEMES, apply_theme
from app.worker import Ask, ConversationWorker, ModelChoice
from model.audio_rates import INPUT_SAMPLE_RATE
from model.errors import OmnideskError
from model.media import Audio, Image, Question

__all__ = ["MODELS_FOLDER_KEY", "Devices", "MainWindow"]

RENDER_INTERVAL_MS = 50  # a streaming reply is re-rendered at most this often
MIC_POLL_MS = 30  # the microphone's queue is emptied (and the meter updated) this often
PREVIEW_MS = 66  # the camera preview shows about 15 frames per second
PREVIEW_WIDTH = 320
THUMBNAIL_WIDTH = 160  # images in the chat view
METER_FLOOR_DB = -60.0  # the level meter's empty end
# The model's threads (worker, Thinker, Talker, Token2Wav) share the GIL with the GUI thread. Python
# hands it over every 5 ms by default, so with four busy threads the GUI thread waited up to 60 ms
# for it (measured here); every 1 ms it never waited more than 15 ms (tests/app/test_responsiveness.py).
GIL_SWITCH_S = 0.001


@dataclass(frozen=True)
class Devices:
    """Where the window's devices come from: the real ones by default, fakes in tests."""

    microphone_stream: MicrophoneStreamFactory | None = None  # None: sounddevice's
    camera_source: camera_module.SourceFactory = camera_module.open_capture
    playback_stream: OutputStreamFactory | None = None  # for replaying recordings; None: sounddevice's
    inputs: Callable[[], list[str]] = partial(sound_devices, "input")
    outputs: Callable[[], list[str]] = partial(sound_devices, "output")
    cameras: Callable[[], list[tuple[int, str]]] = camera_module.camera_devices


@dataclass
class _Message:
    role: str  # "user" or "assistant"
    text: str
    note: str = ""  # e.g. "stopped"
    attachments: tuple[Attachment, ...] = ()


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
    load_requested(object): a ModelChoice to load (to the worker).
    question_asked(object): an Ask: the question with its media, voice and speech (to the worker).
    conversation_restored(object): the (question, reply) texts of a reopened conversation (to the worker).
    output_device_chosen(str): the speakers to use, "" for the system default (to the worker).
    model_ready(str): a bundle is loaded; its description.
    model_unavailable(str): loading failed, or a turn could not run; the message shown.
    reply_progressed(str): a piece of the reply was received.
    reply_completed(str): the reply ended, with the reason.
    recording_finished(float): push-to-talk was released; the seconds recorded.
    """

    load_requested = Signal(object)
    question_asked = Signal(object)
    conversation_restored = Signal(object)
    output_device_chosen = Signal(str)
    model_ready = Signal(str)
    model_unavailable = Signal(str)
    reply_progressed = Signal(str)
    reply_completed = Signal(str)
    recording_finished = Signal(float)

    def __init__(
        self,
        settings: QSettings,
        worker: ConversationWorker | None = None,
        history: History | None = None,
        devices: Devices | None = None,
    ) -> None:
        super().__init__()
        self.setWindowTitle("Omnidesk")
        self.resize(1100, 720)
        self._settings = settings
        self._devices = devices or Devices()
        self.history = history or History()
        self._conversation: int | None = None
        self._reply_id: int | None = None
        self._messages: list[_Message] = []
        self._busy = False
        self._send_when_free = False
        self._render_pending = False
        self._loading_folder = ""
        self.microphone: Microphone | None = None
        self._recorded_before_loss: Audio | None = None
        self._talking = False
        self.camera: Camera | None = None
        self._replay: Playback | None = None

        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_S))
        self._thread = QThread(self)
        self._thread.setObjectName("thinker")
        self.worker = worker or ConversationWorker()
        self.worker.moveToThread(self._thread)
        self.load_requested.connect(self.worker.load)
        self.question_asked.connect(self.worker.ask)
        self.conversation_restored.connect(self.worker.restore)
        self.output_device_chosen.connect(self.worker.set_output_device)
        self.worker.model_loaded.connect(self._on_model_loaded)
        self.worker.model_failed.connect(self._on_model_failed)
        self.worker.text_received.connect(self._on_text_received)
        self.worker.reply_finished.connect(self._on_reply_finished)
        self.worker.turn_failed.connect(self._on_turn_failed)
        self.worker.speech_unavailable.connect(self._on_speech_unavailable)
        self.worker.speakers_changed.connect(self._show_notice)
        self.worker.voices_known.connect(self._on_voices_known)

        self._build()
        preferences = self.preferences()
        if preferences.output_device:
            self.output_device_chosen.emit(preferences.output_device)
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)  # the push-to-talk key, wherever the focus is in this window
        if preferences.models_folder:
            self.load_bundle(preferences.models_folder)
        else:
            self._show_notice("No model yet: set one up (download it, or use files you already have).")
        # Last: a running QThread whose window failed to build would abort the process when destroyed.
        self._thread.start()

    def preferences(self) -> Preferences:
        return Preferences.load(self._settings)

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
        self.chat_view.setOpenLinks(False)
        self.chat_view.anchorClicked.connect(self._on_link_clicked)
        self.camera_preview = QLabel("Starting the camera…")
        self.camera_preview.setFixedWidth(PREVIEW_WIDTH)
        self.camera_preview.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.camera_preview.setVisible(False)
        self._preview_timer = QTimer(self)
        self._preview_timer.setInterval(PREVIEW_MS)
        self._preview_timer.timeout.connect(self._on_preview_due)
        view_row = QHBoxLayout()
        view_row.addWidget(self.chat_view, 1)
        view_row.addWidget(self.camera_preview, 0, Qt.AlignmentFlag.AlignTop)

        self.attachments = AttachmentStrip()
        self.question_box = _QuestionBox()
        self.question_box.setPlaceholderText("Ask anything (Enter sends, Shift+Enter for a new line)")
        self.question_box.setFixedHeight(70)
        self.question_box.submitted.connect(self._send)
        self.send_button = QPushButton("Send")
        self.send_button.clicked.connect(self._send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self._stop)
        question_row = QHBoxLayout()
        question_row.addWidget(self.question_box, 1)
        question_row.addWidget(self.send_button)
        question_row.addWidget(self.stop_button)

        self.talk_button = QPushButton("Hold to talk")
        self.talk_button.setToolTip(_talk_tip(self.preferences().talk_key))
        self.talk_button.pressed.connect(self._start_talking)
        self.talk_button.released.connect(self._stop_talking)
        self.level_meter = QProgressBar()
        self.level_meter.setRange(0, 100)
        self.level_meter.setTextVisible(False)
        self.level_meter.setFixedWidth(100)
        self.level_meter.setToolTip("Microphone level")
        self.level_meter.setVisible(False)
        self._mic_timer = QTimer(self)
        self._mic_timer.setInterval(MIC_POLL_MS)
        self._mic_timer.timeout.connect(self._on_microphone_due)
        self.attach_button = QPushButton("Attach…")
        self.attach_button.setToolTip("Attach an image or a recording")
        self.attach_button.clicked.connect(self._attach_file)
        self.screen_button = QPushButton("Screen")
        self.screen_button.setToolTip("Attach a shot of the screen")
        self.screen_button.clicked.connect(self._attach_screen)
        self.camera_button = QPushButton("Camera")
        self.camera_button.setCheckable(True)
        self.camera_button.setToolTip("Show the camera's preview")
        self.camera_button.toggled.connect(self._on_camera_toggled)
        self.snapshot_button = QPushButton("Ask about this")
        self.snapshot_button.setToolTip("Attach the camera's current frame")
        self.snapshot_button.clicked.connect(self._attach_frame)
        self.voice_box = QComboBox()
        self.voice_box.setToolTip("The voice that speaks the replies")
        self.voice_box.currentTextChanged.connect(lambda voice: self._settings.setValue(VOICE_KEY, voice))
        self.speech_toggle = QCheckBox("Speak")
        self.speech_toggle.setChecked(self.preferences().speak)
        self.speech_toggle.toggled.connect(
            lambda on: self._settings.setValue(SPEECH_KEY, "true" if on else "false")
        )
        tools_row = QHBoxLayout()
        for widget in (self.talk_button, self.level_meter, self.attach_button, self.screen_button):
            tools_row.addWidget(widget)
        tools_row.addWidget(self.camera_button)
        tools_row.addWidget(self.snapshot_button)
        tools_row.addStretch(1)
        tools_row.addWidget(self.voice_box)
        tools_row.addWidget(self.speech_toggle)

        layout = QVBoxLayout()
        layout.addLayout(notice_row)
        layout.addLayout(view_row, 1)
        layout.addWidget(self.attachments)
        layout.addLayout(question_row)
        layout.addLayout(tools_row)
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
        self.in_use = QLabel()
        self.in_use.setStyleSheet("color: #d93025; font-weight: bold")
        self.in_use.setVisible(False)
        self.speed_status = QLabel("")
        self.statusBar().addWidget(self.model_status, 1)
        self.statusBar().addPermanentWidget(self.in_use)
        self.statusBar().addPermanentWidget(self.speed_status)
        self._update_controls()

    def _build_menu(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        settings = file_menu.addAction("Settings…")
        settings.setShortcut(QKeySequence.StandardKey.Preferences)
        settings.triggered.connect(self._open_settings)
        file_menu.addAction("Set up a model…").triggered.connect(self._open_setup)
        view = self.menuBar().addMenu("&View")
        themes = view.addMenu("Theme")
        self._theme_actions = QActionGroup(self)
        current = self.preferences().theme
        labels = {"system": "Follow the system", "light": "Light", "dark": "Dark"}
        for theme in THEMES:
            action = themes.addAction(labels[theme])
            action.setCheckable(True)
            action.setData(theme)
            action.triggered.connect(lambda _=False, t=theme: self.set_theme(t))
            self._theme_actions.addAction(action)
        self.set_theme(current)

    def set_theme(self, theme: str) -> None:
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, theme)
        self._settings.setValue(THEME_KEY, theme)
        for action in self._theme_actions.actions():
            action.setChecked(action.data() == theme)
        self._render()

    def _show_notice(self, text: str) -> None:
        self.notice.setText(text)
        self.notice.setVisible(bool(text))

    def _update_controls(self) -> None:
        self.send_button.setEnabled(not self._busy)
        self.stop_button.setEnabled(self._busy)
        self.conversations.setEnabled(not self._busy)
        self.snapshot_button.setEnabled(self.camera is not None)
        self.level_meter.setVisible(self.microphone is not None)
        self.talk_button.setText("Listening… release to send" if self._talking else "Hold to talk")
        in_use = [name for name, on in (("Microphone", self.microphone), ("Camera", self.camera)) if on]
        self.in_use.setText("  ".join(f"● {name} on" for name in in_use))
        self.in_use.setVisible(bool(in_use))

    # -- actions -----------------------------------------------------------------------

    def load_bundle(self, folder: str) -> None:
        self._loading_folder = folder
        self.model_status.setText(f"Loading {folder}…")
        preferences = self.preferences()
        self.load_requested.emit(ModelChoice(folder, preferences.gpu_layers, preferences.persona))

    @Slot()
    def _open_setup(self) -> None:
        from app.setup_dialog import SetupDialog
        from model.hardware import probe

        dialog = SetupDialog(probe(), parent=self)
        dialog.bundle_ready.connect(self.load_bundle)
        dialog.bundle_ready.connect(lambda _: dialog.accept())
        dialog.exec()

    def settings_dialog(self):  # -> SettingsDialog
        """The settings dialog for the current preferences and devices (not yet shown)."""
        from app.settings_dialog import SettingsDialog

        voices = [self.voice_box.itemText(i) for i in range(self.voice_box.count())]
        return SettingsDialog(
            self.preferences(),
            voices,
            self._devices.inputs(),
            self._devices.outputs(),
            self._devices.cameras(),
            parent=self,
        )

    @Slot()
    def _open_settings(self) -> None:
        dialog = self.settings_dialog()
        if dialog.exec():
            self.apply_preferences(dialog.preferences())

    def apply_preferences(self, new: Preferences) -> None:
        """Remember `new` and put into effect what changed."""
        old = self.preferences()
        new.save(self._settings)
        if new.theme != old.theme:
            self.set_theme(new.theme)
        if new.voice and self.voice_box.findText(new.voice) >= 0:
            self.voice_box.setCurrentText(new.voice)
        if new.output_device != old.output_device:
            self.output_device_chosen.emit(new.output_device)
        self.talk_button.setToolTip(_talk_tip(new.talk_key))
        reload = (new.models_folder, new.gpu_layers, new.persona) != (
            old.models_folder,
            old.gpu_layers,
            old.persona,
        )
        if reload and new.models_folder and not self._busy:
            self.load_bundle(new.models_folder)

    @Slot()
    def _send(self) -> None:
        text = self.question_box.toPlainText().strip()
        if self._busy or (not text and not self.attachments.media):
            return
        self.question_box.clear()
        media = self.attachments.take()
        images = tuple(m for m in media if isinstance(m, Image))
        audios = tuple(m for m in media if isinstance(m, Audio))
        if self._conversation is None:
            self._conversation = self.history.new_conversation()
        question_id = self.history.add_message(self._conversation, "user", text)
        attached = self._keep_media(question_id, media)
        self._reply_id = self.history.add_message(self._conversation, "assistant", "")
        self.conversations.refresh()
        self.conversations.select(self._conversation)
        self._messages += [_Message("user", text, attachments=attached), _Message("assistant", "")]
        self._busy = True
        self._update_controls()
        self._render()
        preferences = self.preferences()
        question = Question(text, images=images, audios=audios)
        self.question_asked.emit(
            Ask(question, self.voice_box.currentText(), self.speech_toggle.isChecked(), preferences.preset)
        )

    def _keep_media(self, message: int, media: list[Image | Audio]) -> tuple[Attachment, ...]:
        """Save a question's media beside the history, so that nothing the user made is lost."""
        assert self._conversation is not None
        folder = self.history.media_dir(self._conversation)
        kept = []
        for n, item in enumerate(media, 1):
            kind = "image" if isinstance(item, Image) else "audio"
            try:
                path = save_media(item, folder, f"{message}-{n}-{kind}")
            except (OSError, OmnideskError) as exc:
                self._show_notice(f"Could not keep an attachment in the history: {exc}")
                continue
            self.history.attach(message, kind, path)
            kept.append(Attachment(kind, path))
        return tuple(kept)

    @Slot()
    def _stop(self) -> None:
        self.worker.cancel()

    # -- push to talk --------------------------------------------------------------------

    @Slot()
    def _start_talking(self) -> None:
        if self._talking:
            return
        if self._busy:  # talking over the reply interrupts it
            self.worker.cancel()
        device = self.preferences().input_device or None
        try:
            self.microphone = Microphone(device, self._devices.microphone_stream)
        except OmnideskError as exc:
            self._show_notice(f"{exc}. Type your question instead.")
            return
        self._talking = True
        self._recorded_before_loss = None
        self.level_meter.setValue(0)
        self._mic_timer.start()
        self._update_controls()

    @Slot()
    def _on_microphone_due(self) -> None:
        if self.microphone is None:
            return
        try:
            notice = self.microphone.poll()
        except DeviceLost as exc:
            self._show_notice(str(exc))
            self._recorded_before_loss = self.microphone.stop()
            self.microphone = None
            self._mic_timer.stop()
            self._update_controls()
            return
        if notice:
            self._show_notice(notice)
        peak = self.microphone.level.peak
        decibels = 20 * math.log10(peak) if peak > 0 else METER_FLOOR_DB
        self.level_meter.setValue(round(100 * max(0.0, 1 - decibels / METER_FLOOR_DB)))

    @Slot()
    def _stop_talking(self) -> None:
        if not self._talking:
            return
        self._talking = False
        self._mic_timer.stop()
        if self.microphone is not None:
            audio = self.microphone.stop()
            self.microphone = None
        else:  # the device went away while talking: what it recorded until then
            assert self._recorded_before_loss is not None
            audio, self._recorded_before_loss = self._recorded_before_loss, None
        self._update_controls()
        self.recording_finished.emit(audio.seconds)
        if audio.seconds < MIN_SECONDS:
            self._show_notice(
                f"The recording was too short ({audio.seconds:.1f} s): hold the button, or the "
                f"{self.preferences().talk_key} key, while you speak."
            )
            return
        self.attachments.add(audio, f"Recording, {audio.seconds:.1f} s")
        if self._busy:
            self._send_when_free = True
        else:
            self._send()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt override)
        kind = event.type()
        if kind not in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
            return False
        assert isinstance(event, QKeyEvent)
        if event.isAutoRepeat() or not self._is_talk_key(event) or not self._owns(watched):
            return False
        focus = self.focusWidget()
        typing = isinstance(focus, QLineEdit | QPlainTextEdit | QAbstractSpinBox) or (
            isinstance(focus, QTextEdit) and not focus.isReadOnly()
        )
        if typing:
            return False
        if kind == QEvent.Type.KeyPress:
            self._start_talking()
        else:
            self._stop_talking()
        return True

    def _is_talk_key(self, event: QKeyEvent) -> bool:
        sequence = QKeySequence(self.preferences().talk_key)
        return not sequence.isEmpty() and sequence[0] == event.keyCombination()

    def _owns(self, watched: QObject) -> bool:
        return watched is self or (isinstance(watched, QWidget) and self.isAncestorOf(watched))

    # -- camera, screen and files -----------------------------------------------------------

    @Slot(bool)
    def _on_camera_toggled(self, on: bool) -> None:
        if on and self.camera is None:
            self._open_camera(self.preferences().camera_index)
        elif not on and self.camera is not None:
            self._close_camera()

    def _open_camera(self, index: int) -> bool:
        try:
            self.camera = Camera(index, self._devices.camera_source)
        except OmnideskError as exc:
            self._show_notice(f"{exc}.")
            self.camera_button.setChecked(False)
            return False
        self.camera_preview.setText("Starting the camera…")
        self.camera_preview.setVisible(True)
        self._preview_timer.start()
        self._update_controls()
        return True

    def _close_camera(self) -> None:
        self._preview_timer.stop()
        if self.camera is not None:
            self.camera.close()
            self.camera = None
        self.camera_preview.setVisible(False)
        self._update_controls()

    @Slot()
    def _on_preview_due(self) -> None:
        camera = self.camera
        if camera is None:
            return
        if camera.lost:
            index = camera.index
            self._close_camera()
            if index != 0 and self._open_camera(0):
                self._show_notice(f"Camera {index} went away: showing the default camera instead.")
            else:
                self._show_notice(f"Camera {index} went away. Plug it in again and turn the camera on.")
                self.camera_button.setChecked(False)
            return
        frame = camera.frame()
        if frame is not None:
            pixmap = QPixmap.fromImage(qimage(frame))
            self.camera_preview.setPixmap(
                pixmap.scaledToWidth(PREVIEW_WIDTH, Qt.TransformationMode.SmoothTransformation)
            )

    @Slot()
    def _attach_frame(self) -> None:
        image = self.camera.image() if self.camera is not None else None
        if image is None:
            self._show_notice("The camera has not given a picture yet: try again in a moment.")
            return
        self.attachments.add(image, "Camera")

    @Slot()
    def _attach_screen(self) -> None:
        try:
            image = grab_screen(self.screen())
        except OmnideskError as exc:
            self._show_notice(f"{exc}.")
            return
        self.attachments.add(image, "Screen")

    @Slot()
    def _attach_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Attach an image or a recording", "", FILE_FILTER)
        if path:
            self.attach_file(Path(path))

    def attach_file(self, path: Path) -> None:
        try:
            media = load_attachment(path)
        except OmnideskError as exc:
            self._show_notice(str(exc))
            return
        self.attachments.add(media, path.name)

    @Slot(QUrl)
    def _on_link_clicked(self, url: QUrl) -> None:
        if not (url.isLocalFile() and url.toLocalFile().endswith(".wav")):
            QDesktopServices.openUrl(url)
            return
        try:
            samples = load_attachment(Path(url.toLocalFile()))
            assert isinstance(samples, Audio)
            if self._replay is not None:
                self._replay.close()
            device = self.preferences().output_device or None
            self._replay = Playback(INPUT_SAMPLE_RATE, device, stream_factory=self._devices.playback_stream)
        except OmnideskError as exc:
            self._show_notice(f"Cannot play the recording: {exc}")
            return
        self._replay.write(samples.samples)
        self._replay.finish()

    # -- worker signals ------------------------------------------------------------------

    @Slot(str)
    def _on_model_loaded(self, description: str) -> None:
        self._settings.setValue(MODELS_FOLDER_KEY, self._loading_folder)
        self.model_status.setText(f"Model: {description}")
        self.choose_button.setVisible(False)  # still in the File menu
        self._show_notice("")
        self.model_ready.emit(description)

    @Slot(str)
    def _on_model_failed(self, message: str) -> None:
        self.model_status.setText("No model")
        self.choose_button.setVisible(True)
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
        self._send_waiting()

    def _send_waiting(self) -> None:
        """A recording made while the reply was still running goes now."""
        if self._send_when_free:
            self._send_when_free = False
            QTimer.singleShot(0, self._send)

    @Slot(str)
    def _on_speech_unavailable(self, message: str) -> None:
        self.speech_toggle.setChecked(False)
        self._show_notice(message)

    @Slot(object)
    def _on_voices_known(self, voices: list[str]) -> None:
        remembered = self.preferences().voice
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
        self._send_waiting()

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
        self._messages = [_Message(m.role, m.text, m.note, m.attachments) for m in stored]
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
                parts.append("<p><b>You</b></p>")
                parts += [_attachment_html(a) for a in message.attachments]
                if message.text:
                    parts.append(f"<p>{html.escape(message.text).replace(chr(10), '<br>')}</p>")
            else:
                parts.append(
                    f"<p><b>Omnidesk</b>{' <i>(' + message.note + ')</i>' if message.note else ''}</p>"
                )
                parts.append(_markdown_html(message.text or "…"))
        self.chat_view.setHtml("".join(parts))
        self.chat_view.moveCursor(QTextCursor.MoveOperation.End)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self)
        self._mic_timer.stop()
        if self.microphone is not None:
            self.microphone.stop()
            self.microphone = None
        self._close_camera()
        if self._replay is not None:
            self._replay.close()
            self._replay = None
        if self._thread.isRunning():
            self.worker.cancel()
            self._thread.quit()
            self._thread.wait(5000)
            self._save_reply()
            self.worker.close()
        super().closeEvent(event)


def _talk_tip(key: str) -> str:
    return f"Hold to talk, then let go to send; or hold {key} when the question box does not have the focus"


def _attachment_html(attachment: Attachment) -> str:
    url = html.escape(QUrl.fromLocalFile(str(attachment.path)).toString(), quote=True)
    if attachment.kind == "image":
        return f'<p><img src="{url}" width="{THUMBNAIL_WIDTH}"></p>'
    return f'<p><a href="{url}">▶ Play the recording</a></p>'


def _markdown_html(text: str) -> str:
    """A reply's Markdown (code blocks, lists, emphasis) as HTML for the chat view."""
    from PySide6.QtGui import QTextDocument

    document = QTextDocument()
    document.setMarkdown(text)
    body = document.toHtml()
    start, end = body.find("<body"), body.rfind("</body>")
    return body[body.find(">", start) + 1 : end] if start >= 0 else body
