"""The main window: it builds the rooms, lays them out and connects their signals.

The rooms: the conversation list (the sidebar), the chat view, the composer (question,
attachments, voice), push-to-talk, the camera panel, the current conversation as the
history keeps it, the chat session that runs the turns, the speech watch (whether the reply's
speech still plays) and the activity chip. Wiring happens in one place, `_connect_signals`.

Notices are about now: they show (the last few, one a line) until the next question, another
conversation, or the user dismisses them; "No model yet" stays until a model is loaded, and
Send says it too.

Threads: the window never waits on the model: questions and bundle choices go to the
`ConversationWorker` on its own QThread ("thinker", which blocks in loads and turns) as
signals, and its signals come back here. Everything else runs on the GUI thread; devices
are polled there by timers that never block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from PySide6.QtCore import QSettings, Qt, QThread, Signal, Slot
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import camera as camera_module
from app.activity import ActivityChip, activity
from app.camera_panel import CameraPanel
from app.chat_session import ChatSession
from app.chat_view import ChatView
from app.composer import Composer
from app.conversation_list import ConversationList
from app.current_conversation import CurrentConversation
from app.hands_free import HandsFree
from app.history import History
from app.microphone import StreamFactory as MicrophoneStreamFactory
from app.playback import StreamFactory as OutputStreamFactory
from app.preferences import MODELS_FOLDER_KEY, THEME_KEY, Preferences
from app.push_to_talk import PushToTalk
from app.sound_devices import SoundDevice, sound_devices
from app.speech_watch import SpeechWatch
from app.theme import THEMES, apply_theme
from app.worker import ConversationWorker, ModelChoice, ReplyFinished
from model.hardware import Hardware, probe
from model.media import Image

__all__ = ["MODELS_FOLDER_KEY", "Devices", "MainWindow"]

NO_MODEL = "No model yet: set one up (download it, or use files you already have)."
LOADING = "The model is still loading: your question can wait here."
NOTICES_SHOWN = 3  # notices shown at once, the newest last
LISTENING_LABEL = "Listening… release to send"  # the talk button's longest label (app.push_to_talk)


@dataclass(frozen=True)
class Devices:
    """Where the window's devices come from: the real ones by default, fakes in tests."""

    microphone_stream: MicrophoneStreamFactory | None = None  # None: sounddevice's
    camera_source: camera_module.SourceFactory = camera_module.open_capture
    playback_stream: OutputStreamFactory | None = None  # for replaying recordings; None: sounddevice's
    inputs: Callable[[], list[SoundDevice]] = partial(sound_devices, "input")
    outputs: Callable[[], list[SoundDevice]] = partial(sound_devices, "output")
    cameras: Callable[[], list[tuple[int, str]]] = camera_module.camera_devices
    hardware: Callable[[], Hardware] = probe  # what the model may compute on (for the settings)


class MainWindow(QMainWindow):
    """Signals (all emitted on the GUI thread):
    load_requested(object): a ModelChoice to load (to the worker).
    output_device_chosen(str): the speakers to use, "" for the system default (to the worker).
    model_ready(str): a bundle is loaded; its description.
    model_unavailable(str): loading failed, or a turn could not run; the message shown.
    The turns' own signals are the `session`'s (a ChatSession); whether the assistant is speaking
    is the `speech`'s (a SpeechWatch: speaking_changed(bool)).
    """

    load_requested = Signal(object)
    output_device_chosen = Signal(str)
    model_ready = Signal(str)
    model_unavailable = Signal(str)

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
        self._loading_folder = ""
        self._thread = QThread(self)
        self._thread.setObjectName("thinker")
        self.worker = worker or ConversationWorker()
        self.worker.moveToThread(self._thread)
        self._speeds = ReplyFinished("", None, None, None)  # the last reply's, for the status bar
        self._first_sound_s: float | None = None  # the current reply's, once heard
        self._notices: list[str] = []

        self._build()
        self._connect_signals()
        preferences = self.preferences()
        if preferences.output_device:
            self.output_device_chosen.emit(preferences.output_device)
        if preferences.models_folder:
            self.load_bundle(preferences.models_folder)
        else:
            self.composer.set_missing(NO_MODEL)
            self._show_notice("")  # what is missing shows
        # Last: a running QThread whose window failed to build would abort the process when destroyed.
        self._thread.start()

    def preferences(self) -> Preferences:
        return Preferences.load(self._settings)

    # -- building and wiring -----------------------------------------------------------------

    def _build(self) -> None:
        devices = self._devices
        self.chat_view = ChatView(self._settings, devices.playback_stream)
        self.composer = Composer(self._settings, self)
        self.push_to_talk = PushToTalk(self._settings, devices.microphone_stream, self)
        self.hands_free = HandsFree(
            self._settings, devices.microphone_stream, self.push_to_talk.level_meter, self
        )
        self.camera_panel = CameraPanel(self._settings, devices.camera_source, self)
        self.conversations = ConversationList(self.history)
        self.current = CurrentConversation(self.history, self)
        self.session = ChatSession(
            self._settings, self.chat_view, self.composer, self.conversations, self.current, self
        )
        self.speech = SpeechWatch(self.worker.speech_state, self)
        self.activity_chip = ActivityChip()
        splitter = QSplitter()
        splitter.addWidget(self.conversations)
        splitter.addWidget(self._chat_column())
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([240, 860])
        self.setCentralWidget(splitter)
        self._build_menu()
        self._build_status_bar()

    def _chat_column(self) -> QWidget:
        """The activity chip, the notice, the chat beside the camera preview, the attachments, the
        question, the tools."""
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.notice.setObjectName("notice")
        self.dismiss_button = QToolButton()
        self.dismiss_button.setText("✕")
        self.dismiss_button.setToolTip("Dismiss this notice")
        self.dismiss_button.setAutoRaise(True)
        self.choose_button = QPushButton("Set up a model…")
        composer, talk, camera = self.composer, self.push_to_talk, self.camera_panel
        layout = QVBoxLayout()
        header = _row(self.notice, self.dismiss_button, self.choose_button)
        header.addWidget(self.activity_chip, 0, Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignRight)
        layout.addLayout(header)
        view_row = _row(self.chat_view)
        view_row.addWidget(camera.preview, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(view_row, 1)
        layout.addWidget(composer.attachments)
        layout.addLayout(_row(composer.question_box, composer.send_button, composer.stop_button))
        # The level meter shows only while listening, and the talk button then says more: the room
        # of both is kept from the start, so that nothing moves sideways.
        meter_policy = talk.level_meter.sizePolicy()
        meter_policy.setRetainSizeWhenHidden(True)
        talk.level_meter.setSizePolicy(meter_policy)
        metrics, hint = talk.button.fontMetrics(), talk.button.sizeHint().width()
        wider = metrics.horizontalAdvance(LISTENING_LABEL) - metrics.horizontalAdvance(talk.button.text())
        talk.button.setMinimumWidth(hint + max(0, wider))
        tools_row = QHBoxLayout()
        for widget in (talk.button, self.hands_free.button, talk.level_meter, composer.attach_button):
            tools_row.addWidget(widget)
        tools_row.addWidget(composer.screen_button)
        tools_row.addWidget(camera.button)
        tools_row.addWidget(camera.snapshot_button)
        tools_row.addStretch(1)
        tools_row.addWidget(composer.voice_label)
        tools_row.addWidget(composer.voice_box)
        tools_row.addWidget(composer.speech_toggle)
        layout.addLayout(tools_row)
        column = QWidget()
        column.setLayout(layout)
        return column

    def _build_menu(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        settings = file_menu.addAction("Settings…")
        settings.setShortcut(QKeySequence.StandardKey.Preferences)
        settings.triggered.connect(self._open_settings)
        file_menu.addAction("Set up a model…").triggered.connect(self._open_setup)
        file_menu.addSeparator()
        self.quit_action = file_menu.addAction("&Quit")
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))  # Cmd+Q on macOS; not every platform has one
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        self.quit_action.triggered.connect(self.close)
        themes = self.menuBar().addMenu("&View").addMenu("Theme")
        self._theme_actions = QActionGroup(self)
        labels = {"system": "Follow the system", "light": "Light", "dark": "Dark"}
        for theme in THEMES:
            action = themes.addAction(labels[theme])
            action.setCheckable(True)
            action.setData(theme)
            action.triggered.connect(lambda _=False, t=theme: self.set_theme(t))
            self._theme_actions.addAction(action)
        self.set_theme(self.preferences().theme)

    def _build_status_bar(self) -> None:
        self.model_status = QLabel("No model")
        self.in_use = QLabel()
        self.in_use.setStyleSheet("color: #d93025; font-weight: bold")
        self.in_use.setVisible(False)
        self.speed_status = QLabel("")
        self.statusBar().addWidget(self.model_status, 1)
        self.statusBar().addPermanentWidget(self.in_use)
        self.statusBar().addPermanentWidget(self.speed_status)

    def _connect_signals(self) -> None:
        worker = self.worker
        session = self.session
        self.load_requested.connect(worker.load)
        self.output_device_chosen.connect(worker.set_output_device)
        session.question_asked.connect(worker.ask)
        session.conversation_restored.connect(worker.restore)
        worker.model_loaded.connect(self._on_model_loaded)
        worker.model_failed.connect(self._on_model_failed)
        worker.text_received.connect(session.on_text_received)
        worker.text_received.connect(self._show_activity)
        worker.reply_finished.connect(self._on_reply_finished)
        worker.turn_failed.connect(session.on_turn_failed)
        worker.speech_unavailable.connect(self._on_speech_unavailable)
        worker.speakers_changed.connect(self._show_notice)
        worker.plan_noted.connect(self._show_notice)
        worker.recording_cut.connect(self._show_notice)
        worker.voices_known.connect(self.composer.set_voices)
        rooms = (self.current, self.chat_view, self.composer, self.push_to_talk, self.camera_panel, session)
        for room in rooms:
            room.notice.connect(self._show_notice)
        session.question_asked.connect(self._on_question_asked)
        session.conversation_restored.connect(lambda _: self._show_notice(""))
        session.turn_failed.connect(self._show_notice)
        session.turn_failed.connect(self.model_unavailable)
        self.speech.speaking_changed.connect(session.on_speaking_changed)
        self.speech.speaking_changed.connect(self._show_activity)
        self.speech.speaking_changed.connect(self.hands_free.set_assistant_speaking)  # not its own voice
        self.speech.first_sound.connect(self._on_first_sound)
        self.dismiss_button.clicked.connect(lambda: self._show_notice(""))
        self.choose_button.clicked.connect(self._open_setup)
        self.composer.send_requested.connect(session.send)
        self.composer.stop_requested.connect(self._on_stop_requested)
        self.push_to_talk.talk_pressed.connect(self._on_talk_pressed)
        self.push_to_talk.listening_changed.connect(self._show_devices_in_use)
        self.push_to_talk.listening_changed.connect(self._show_activity)
        self.push_to_talk.recording_finished.connect(session.on_recording_finished)
        self.hands_free.notice.connect(self._show_notice)
        self.hands_free.button.toggled.connect(self.push_to_talk.set_hands_free)
        self.hands_free.speech_started.connect(self._on_talk_pressed)  # speaking over a reply interrupts it
        self.hands_free.listening_changed.connect(self._show_devices_in_use)
        self.hands_free.recording_finished.connect(session.on_recording_finished)
        self.camera_panel.camera_changed.connect(self._show_devices_in_use)
        self.camera_panel.frame_attached.connect(self._on_frame_attached)
        self.conversations.conversation_chosen.connect(session.on_conversation_chosen)
        self.conversations.new_requested.connect(session.on_new_requested)
        self.conversations.conversation_deleted.connect(session.on_conversation_deleted)

    # -- what the window shows ---------------------------------------------------------------

    def set_theme(self, theme: str) -> None:
        app = QApplication.instance()
        if isinstance(app, QApplication):
            apply_theme(app, theme)
        self._settings.setValue(THEME_KEY, theme)
        for action in self._theme_actions.actions():
            action.setChecked(action.data() == theme)
        self.activity_chip.restyle()
        self.session.render()

    @Slot(str)
    def _show_notice(self, text: str) -> None:
        """Add a notice to those shown ("": clear them); the last few show, one a line."""
        if not text:
            self._notices = []
        elif text not in self._notices:
            self._notices = [*self._notices, text][-NOTICES_SHOWN:]
        shown = "\n".join(self._notices) or self.composer.missing  # what stops a question stays said
        self.notice.setText(shown)
        self.notice.setVisible(bool(shown))
        self.dismiss_button.setVisible(bool(self._notices))

    @Slot()
    def _show_activity(self) -> None:
        speaking = self.speech.speaking and (self._first_sound_s is not None or not self.session.busy)
        listening = self.push_to_talk.microphone is not None
        self.activity_chip.show_activity(activity(listening, self.session.busy, speaking))

    @Slot()
    def _show_devices_in_use(self) -> None:
        microphone = self.push_to_talk.microphone or self.hands_free.microphone
        devices = (("Microphone", microphone), ("Camera", self.camera_panel.camera))
        in_use = [name for name, device in devices if device is not None]
        self.in_use.setText("  ".join(f"● {name} on" for name in in_use))
        self.in_use.setVisible(bool(in_use))

    # -- the model and the settings ----------------------------------------------------------

    def load_bundle(self, folder: str) -> None:
        self._loading_folder = folder
        self.model_status.setText(f"Loading {folder}…")
        self.composer.set_missing(LOADING)
        p = self.preferences()
        voice = (p.voice or self.composer.voice) if p.speak else ""
        self.load_requested.emit(
            ModelChoice(folder, p.gpu_layers, p.persona, p.speech_device, p.speech_quality, voice)
        )

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

        devices = self._devices
        return SettingsDialog(
            self.preferences(),
            self.composer.voices(),
            devices.inputs(),
            devices.outputs(),
            devices.cameras(),
            devices.hardware(),
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
        self.composer.choose_voice(new.voice)
        if new.output_device != old.output_device:
            self.output_device_chosen.emit(new.output_device)
        self.push_to_talk.set_talk_key(new.talk_key)
        loaded_with = ("models_folder", "gpu_layers", "persona", "speech_device", "speech_quality")
        reload = any(getattr(new, name) != getattr(old, name) for name in loaded_with)
        if reload and new.models_folder and not self.session.busy:
            self.load_bundle(new.models_folder)

    # -- asking -------------------------------------------------------------------------------

    @Slot()
    def _on_stop_requested(self) -> None:
        # Called here, on the GUI thread: a queued slot would wait for the turn. It stops the
        # question asked last even if the worker has not begun it yet, and silences its speech.
        self.worker.cancel(self.session.asked)

    @Slot()
    def _on_talk_pressed(self) -> None:
        if self.session.busy or self.speech.speaking:  # talking over the reply interrupts it
            self.worker.cancel(self.session.asked)

    @Slot(object)
    def _on_question_asked(self, _ask: object) -> None:
        self._show_notice("")  # notices were about the last question
        self._first_sound_s = None
        self._show_activity()

    @Slot(object)
    def _on_frame_attached(self, image: Image) -> None:
        self.composer.attachments.add(image, "Camera")

    # -- worker signals --------------------------------------------------------------------------

    @Slot(str)
    def _on_model_loaded(self, description: str) -> None:
        self._settings.setValue(MODELS_FOLDER_KEY, self._loading_folder)
        self.model_status.setText(f"Model: {description}")
        self.choose_button.setVisible(False)  # still in the File menu
        self.composer.set_missing("")
        self._show_notice("")
        self.model_ready.emit(description)

    @Slot(str)
    def _on_model_failed(self, message: str) -> None:
        self.model_status.setText("No model")
        self.choose_button.setVisible(True)
        self.composer.set_missing(NO_MODEL)
        self._show_notice(message)
        self.model_unavailable.emit(message)

    @Slot(object)
    def _on_reply_finished(self, finished: ReplyFinished) -> None:
        if finished.first_audio_s is None:  # heard before the turn ended, or heard later
            finished = replace(finished, first_audio_s=self._first_sound_s)
        self._speeds = finished
        self.speed_status.setText(finished.speeds)
        self.session.on_reply_finished(finished)
        self._show_activity()

    @Slot(float)
    def _on_first_sound(self, seconds: float) -> None:
        """The reply was heard: the status bar's first audio is when sound came out."""
        self._first_sound_s = seconds
        if not self.session.busy and self._speeds.reason:
            self._speeds = replace(self._speeds, first_audio_s=seconds)
            self.speed_status.setText(self._speeds.speeds)
        self._show_activity()

    @Slot(str)
    def _on_speech_unavailable(self, message: str) -> None:
        self.composer.speech_toggle.setChecked(False)
        self._show_notice(message)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        self.push_to_talk.close()
        self.hands_free.close()
        self.camera_panel.close()
        self.chat_view.stop_replay()
        self.speech.stop()
        if self._thread.isRunning():
            self.worker.cancel(self.session.asked)
            self._thread.quit()
            self._thread.wait(5000)
            self.session.save_reply()
            self.worker.close()
        super().closeEvent(event)


def _row(*widgets: QWidget) -> QHBoxLayout:
    """A row of widgets; the first takes the room left."""
    row = QHBoxLayout()
    for n, widget in enumerate(widgets):
        row.addWidget(widget, 1 if n == 0 else 0)
    return row
