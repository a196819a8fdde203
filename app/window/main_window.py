"""The main window: it builds the rooms, lays them out and connects their signals.

The rooms: the conversation list (the sidebar), the chat view, the composer (question,
attachments, voice), push-to-talk and hands-free, the camera panel, the current conversation as
the history keeps it, the chat session that runs the turns, the speech watch (whether the reply's
speech still plays), the activity chip, the notices, the model loader (which bundle, and what is
said while there is none), the menus and the status line. Wiring happens in one place,
`_connect_signals`.

Threads: the window never waits on the model: questions and bundle choices go to the
`ConversationWorker` on its own QThread ("thinker", which blocks in loads and turns) as
signals, and its signals come back here. Everything else runs on the GUI thread; devices
are polled there by timers that never block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from PySide6.QtCore import QSettings, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import QApplication, QHBoxLayout, QMainWindow, QSplitter, QVBoxLayout, QWidget

from app.capture import camera as camera_module
from app.history.store import History
from app.sound.devices import SoundDevice, sound_devices
from app.sound.microphone import StreamFactory as MicrophoneStreamFactory
from app.sound.playback import StreamFactory as OutputStreamFactory
from app.window.activity import ActivityChip, activity
from app.window.call import CallControl
from app.window.camera_panel import CameraPanel
from app.window.chat.composer import Composer
from app.window.chat.conversation_list import ConversationList
from app.window.chat.current_conversation import CurrentConversation
from app.window.chat.session import ChatSession
from app.window.chat.view import ChatView
from app.window.hands_free import HandsFree
from app.window.icons import recolour
from app.window.menu import WindowMenu
from app.window.model_loader import ModelLoader
from app.window.notices import Notices
from app.window.preferences import THEME_KEY, Preferences
from app.window.press_shots import PressShots
from app.window.push_to_talk import PushToTalk
from app.window.speech_watch import SpeechWatch
from app.window.status_line import StatusLine
from app.window.theme import apply_theme
from app.worker import ConversationWorker, Look, ReplyFinished
from model.hardware import Hardware, probe
from model.media import Audio, Image

__all__ = ["Devices", "MainWindow"]

# How long Quit waits for the model's thread to end its turn or load (a CPU's Token2Wav window, or a
# multi-GB load, takes seconds): it ends before the model is freed and before Python finalizes.
SHUTDOWN_WAIT_MS = 120_000

log = logging.getLogger(__name__)


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
    output_device_chosen(str): the speakers to use, "" for the system default (to the worker).
    listening_begun(object): the user began to ask by voice: a Look (to the worker, which encodes the
        question's pictures and, from the rooms' `heard`, its sound while the user speaks).
    model_ready(str): a bundle is loaded; its description.
    model_unavailable(str): loading failed, or a turn could not run; the message shown.
    Loading a bundle is the `models`' (a ModelLoader: load_requested(object)); the turns' own
    signals are the `session`'s (a ChatSession); whether the assistant is speaking is the `speech`'s
    (a SpeechWatch: speaking_changed(bool)).
    """

    output_device_chosen = Signal(str)
    listening_begun = Signal(object)
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
        self._thread = QThread(self)
        self._thread.setObjectName("thinker")
        self.worker = worker or ConversationWorker()
        self.worker.moveToThread(self._thread)
        self._first_sound_s: float | None = None  # the current reply's, once heard
        self._looks = 0  # questions begun by voice (each Look's number)

        app = QApplication.instance()
        if isinstance(app, QApplication):  # first: the style sheet sets the controls' sizes
            apply_theme(app, self.preferences().theme)
        self._build()
        self._connect_signals()
        self._show_devices_in_use()  # a screen shared since the last run
        preferences = self.preferences()
        if preferences.output_device:
            self.output_device_chosen.emit(preferences.output_device)
        self.models.start()
        # Last: a running QThread whose window failed to build would abort the process when destroyed.
        self._thread.start()

    def preferences(self) -> Preferences:
        return Preferences.load(self._settings)

    # -- building and wiring -----------------------------------------------------------------

    def _build(self) -> None:
        devices = self._devices
        self.chat_view = ChatView(self._settings, devices.playback_stream)
        self.composer = Composer(self._settings, self)
        self.notices = Notices(lambda: self.composer.missing, self)
        self.models = ModelLoader(self._settings, self.composer, self.notices, self)
        self.push_to_talk = PushToTalk(self._settings, devices.microphone_stream, self)
        self.hands_free = HandsFree(
            self._settings, devices.microphone_stream, self.push_to_talk.level_meter, self
        )
        self.camera_panel = CameraPanel(self._settings, devices.camera_source, self)
        self.press_shots = PressShots(self._settings, self.camera_panel, self.composer.attachments, self)
        self.call = CallControl(self._settings, self.camera_panel, self.hands_free, self)
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
        splitter.setSizes([220, 880])
        self.setCentralWidget(splitter)
        self.menu = WindowMenu(self)
        self.set_theme(self.preferences().theme)
        self.statusBar().addWidget(
            self.models.status, 1
        )  # a long description is cut, not widening the window
        self.status_line = StatusLine(self.statusBar())

    def _chat_column(self) -> QWidget:
        """The notice and the activity chip, the camera's preview (or a screen call's thumbnail), the
        chat, the attachments, the composer's card (the question above its tools), the voice row
        (push-to-talk, hands-free, Share screen, the level meter), the call row (Call, its source, its
        bar). Every control keeps its size whatever it shows, so that nothing moves when a toggle
        changes; the column fits beside the sidebar in half a 1440 px screen."""
        composer, talk, camera = self.composer, self.push_to_talk, self.camera_panel
        layout = QVBoxLayout()
        header = _row(self.notices.label, self.notices.dismiss_button, self.models.choose_button)
        header.addWidget(self.activity_chip, 0, Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignRight)
        layout.addLayout(header)
        layout.addWidget(camera.preview, 0, Qt.AlignmentFlag.AlignRight)  # above the chat: no width taken
        layout.addWidget(self.call.thumbnail, 0, Qt.AlignmentFlag.AlignRight)  # a screen call's self-view
        layout.addWidget(self.chat_view, 1)
        layout.addWidget(composer.attachments)
        layout.addWidget(composer.card(camera.button, camera.snapshot_button))
        voice_row = QHBoxLayout()
        for widget in (talk.button, self.hands_free.button, self.press_shots.share_button, talk.level_meter):
            voice_row.addWidget(widget)
        voice_row.addStretch(1)
        layout.addLayout(voice_row)
        call_row = QHBoxLayout()  # the call's button, its source and its bar (what the model sees)
        call_row.addWidget(self.call.button)
        call_row.addWidget(self.call.source)
        call_row.addWidget(self.call.bar, 1)
        layout.addLayout(call_row)
        column = QWidget()
        column.setLayout(layout)
        return column

    def _connect_signals(self) -> None:
        worker, session, models, notices = self.worker, self.session, self.models, self.notices
        models.load_requested.connect(worker.load)
        self.output_device_chosen.connect(worker.set_output_device)
        session.question_asked.connect(worker.ask)
        session.conversation_restored.connect(worker.restore)
        worker.model_loaded.connect(models.on_model_loaded)
        worker.model_failed.connect(models.on_model_failed)
        models.ready.connect(self.model_ready)
        models.failed.connect(self.model_unavailable)
        models.ready.connect(self._show_activity)
        models.failed.connect(self._show_activity)
        worker.text_received.connect(session.on_text_received)
        worker.text_received.connect(self._show_activity)
        worker.reply_finished.connect(self._on_reply_finished)
        worker.turn_failed.connect(session.on_turn_failed)
        worker.speech_unavailable.connect(self._on_speech_unavailable)
        worker.speakers_changed.connect(notices.show)
        worker.plan_noted.connect(notices.show)
        worker.recording_cut.connect(notices.show)
        worker.voices_known.connect(self.composer.set_voices)
        self.call.call_started.connect(worker.begin_call)
        self.call.call_ended.connect(worker.end_call)
        self.call.sound.connect(worker.call_hear)
        worker.call_started.connect(self.call.show_started)
        worker.call_failed.connect(self.call.fail)
        rooms = (self.current, self.chat_view, self.composer, self.push_to_talk, self.camera_panel, session)
        for room in (*rooms, self.press_shots, self.call):
            room.notice.connect(notices.show)
        session.question_asked.connect(self._on_question_asked)
        session.conversation_restored.connect(lambda _: notices.clear())
        session.turn_failed.connect(notices.show)
        session.turn_failed.connect(self.model_unavailable)
        self.speech.speaking_changed.connect(session.on_speaking_changed)
        self.speech.speaking_changed.connect(self._show_activity)
        self.speech.speaking_changed.connect(self.hands_free.set_assistant_speaking)  # not its own voice
        self.speech.first_sound.connect(self._on_first_sound)
        self.menu.settings_action.triggered.connect(self._open_settings)
        self.menu.setup_action.triggered.connect(models.open_setup)
        self.menu.quit_action.triggered.connect(self.close)
        self.menu.theme_chosen.connect(self.set_theme)
        self.composer.send_requested.connect(session.send)
        session.typed_question_sending.connect(self.press_shots.take_screen)
        self.composer.stop_requested.connect(self._on_stop_requested)
        self.push_to_talk.talk_pressed.connect(self._on_talk_pressed)
        self.push_to_talk.listening_changed.connect(self._show_devices_in_use)
        self.push_to_talk.listening_changed.connect(self._show_activity)
        self.push_to_talk.listening_changed.connect(self._on_push_to_talk_listening)
        self.push_to_talk.heard.connect(worker.hear)
        self.push_to_talk.recording_finished.connect(self._on_recording_finished)
        self.push_to_talk.recording_dropped.connect(self.press_shots.withdraw)
        self.push_to_talk.recording_dropped.connect(worker.drop_listening)
        self.listening_begun.connect(worker.begin_listening)
        self.composer.attachments.image_added.connect(worker.look)
        self.hands_free.notice.connect(notices.show)
        self.hands_free.button.toggled.connect(self.push_to_talk.set_hands_free)
        self.hands_free.speech_started.connect(self._on_talk_pressed)  # speaking over a reply interrupts it
        self.hands_free.listening_changed.connect(self._show_devices_in_use)
        self.hands_free.state_changed.connect(self._show_activity)  # Listening while it hears the user
        self.hands_free.state_changed.connect(self._show_devices_in_use)  # paused while the reply speaks
        self.hands_free.speech_started.connect(self._begin_listening)
        self.hands_free.heard.connect(worker.hear)
        self.hands_free.recording_finished.connect(self._on_recording_finished)
        self.hands_free.speech_dropped.connect(self.press_shots.withdraw)
        self.hands_free.speech_dropped.connect(worker.drop_listening)
        self.camera_panel.camera_changed.connect(self._show_devices_in_use)
        self.press_shots.share_button.toggled.connect(self._show_devices_in_use)
        self.call.call_started.connect(self._show_devices_in_use)
        self.call.call_ended.connect(self._show_devices_in_use)
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
        self.menu.show_theme(theme)
        self.activity_chip.restyle()
        recolour(self)
        self.session.render()

    @Slot()
    def _show_activity(self) -> None:
        speaking = self.speech.speaking and (self._first_sound_s is not None or not self.session.busy)
        listening = self.push_to_talk.microphone is not None or self.hands_free.state == "hearing"
        self.activity_chip.show_activity(activity(listening, self.session.busy, speaking, self.models.loaded))

    @Slot()
    def _show_devices_in_use(self) -> None:
        microphone = self.push_to_talk.microphone or self.hands_free.microphone
        devices = (("Microphone", microphone), ("Camera", self.camera_panel.camera))
        # Hands-free does not hear the user while the reply speaks (no headphones): not "on" then.
        deaf = self.push_to_talk.microphone is None and self.hands_free.state == "paused"
        paused = ("Microphone",) if deaf else ()
        shared = ("Screen",) if self.press_shots.sharing or self.call.shares_screen else ()
        self.status_line.show_in_use([name for name, device in devices if device is not None], paused, shared)

    # -- the settings -------------------------------------------------------------------------

    def settings_dialog(self):  # -> SettingsDialog
        """The settings dialog for the current preferences and devices (not yet shown)."""
        from app.window.dialogs.settings import SettingsDialog

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
        loaded_with = (
            *("models_folder", "gpu_layers", "persona", "speech_device", "speech_quality", "quick_start"),
            "detail",
            *("engine", "server_url", "api_key"),
        )
        reload = any(getattr(new, name) != getattr(old, name) for name in loaded_with)
        if reload and not self.session.busy:
            self.models.use_preferred()

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

    @Slot(bool)
    def _on_push_to_talk_listening(self, on: bool) -> None:
        if on:
            self._begin_listening()

    @Slot()
    def _begin_listening(self) -> None:
        """The user began to ask by voice: the pictures of the press (the screen, the camera) are
        attached, and the worker listens, with every picture attached so far (on a call, the call
        itself listens and looks)."""
        if self.call.active:
            return
        self.press_shots.take()
        self._looks += 1
        images = tuple(m for m in self.composer.attachments.media if isinstance(m, Image))
        self.listening_begun.emit(Look(self._looks, images))

    @Slot(object)
    def _on_recording_finished(self, audio: Audio) -> None:
        if self.call.active:  # the call's turn: the history keeps its recording and its last frame
            frame = self.call.latest
            if frame is not None:
                self.composer.attachments.add(frame, f"Call, {self.call.source.currentText().lower()}")
            self.session.on_recording_finished(audio, call=True)
            return
        self.press_shots.keep()
        self.session.on_recording_finished(audio, listened=self._looks)

    @Slot(object)
    def _on_question_asked(self, _ask: object) -> None:
        self.notices.clear()  # notices were about the last question
        self._first_sound_s = None
        self._show_activity()

    @Slot(object)
    def _on_frame_attached(self, image: Image) -> None:
        self.composer.attachments.add(image, "Camera")

    # -- worker signals --------------------------------------------------------------------------

    @Slot(object)
    def _on_reply_finished(self, finished: ReplyFinished) -> None:
        if finished.first_audio_s is None:  # heard before the turn ended, or heard later
            finished = replace(finished, first_audio_s=self._first_sound_s)
        self.status_line.show_speeds(finished)
        self.session.on_reply_finished(finished)
        self._show_activity()

    @Slot(float)
    def _on_first_sound(self, seconds: float) -> None:
        """The reply was heard: the status bar's first audio is when sound came out."""
        self._first_sound_s = seconds
        if not self.session.busy:
            self.status_line.show_first_sound(seconds)
        self._show_activity()

    @Slot(str)
    def _on_speech_unavailable(self, message: str) -> None:
        self.composer.speech_toggle.setChecked(False)
        self.notices.show(message)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        self.call.close()  # first: it turns off the hands-free and the camera it turned on
        self.push_to_talk.close()
        self.hands_free.close()
        self.camera_panel.close()
        self.chat_view.stop_replay()
        self.speech.stop()
        if self._thread.isRunning():
            self.worker.cancel(self.session.asked)
            self._thread.quit()
            # Until the turn (and its stage threads) or a load has ended: a 5 s bound had let the
            # window free the model under a running turn, and Python finalize while stage threads
            # still ran (Fatal Python error: bool_dealloc).
            if not self._thread.wait(SHUTDOWN_WAIT_MS):
                log.error("the model's thread did not end within %d s of Quit", SHUTDOWN_WAIT_MS // 1000)
                super().closeEvent(event)
                return
            self.session.save_reply()
        self.worker.close()  # the model and the speakers' stream, before the interpreter finalizes
        super().closeEvent(event)


def _row(*widgets: QWidget) -> QHBoxLayout:
    """A row of widgets; the first takes the room left."""
    row = QHBoxLayout()
    for n, widget in enumerate(widgets):
        row.addWidget(widget, 1 if n == 0 else 0)
    return row
