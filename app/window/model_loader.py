"""Which model the window uses: loading a bundle (the remembered one at start, one the setup
dialog made or found, or again when the settings change how it loads) or connecting to the server the
settings name (Settings → Engine), and what the window says meanwhile (the status bar's model, "Set up
a model…", why a question cannot be sent yet).

Threads: the GUI thread only; loads go to the worker's thread as `load_requested`, and its answers
come back to `on_model_loaded` and `on_model_failed`.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QSettings, Signal, Slot
from PySide6.QtWidgets import QPushButton, QWidget

from app.window.chat.composer import Composer
from app.window.elided_label import ElidedLabel
from app.window.notices import Notices
from app.window.preferences import MODELS_FOLDER_KEY, Preferences
from app.worker import ModelChoice

NO_MODEL = "No model yet: set one up (download it, or use files you already have)."
LOADING = "The model is still loading: your question can wait here."
NO_SERVER = "The server cannot be used: check its address and key in Settings → Engine."


class ModelLoader(QObject):
    """The model's `status` label (for the status bar) and the `choose_button` ("Set up a model…",
    shown while there is no model).

    Signals:
    load_requested(object): a ModelChoice to load (to the worker).
    ready(str): a bundle is loaded; its description.
    failed(str): loading failed; the message shown.
    """

    load_requested = Signal(object)
    ready = Signal(str)
    failed = Signal(str)

    def __init__(self, settings: QSettings, composer: Composer, notices: Notices, window: QWidget) -> None:
        super().__init__(window)
        self._settings = settings
        self._composer = composer
        self._notices = notices
        self._window = window
        self._loading_folder = ""
        self.loaded = False  # a bundle is loaded and answers
        self.status = ElidedLabel("No model")
        self.choose_button = QPushButton("Set up a model…")
        self.choose_button.clicked.connect(self.open_setup)

    def start(self) -> None:
        """At the window's start: use the model the preferences name, or say there is none."""
        if not self.use_preferred():
            self._composer.set_missing(NO_MODEL)
            self._notices.clear()  # what is missing shows

    def use_preferred(self) -> bool:
        """Connect to the preferences' server, or load their bundle; False if they name neither."""
        p = Preferences.load(self._settings)
        if p.on_server:
            self.connect_to(p.server_url)
        elif p.models_folder:
            self.load(p.models_folder)
        else:
            return False
        return True

    def load(self, folder: str) -> None:
        """Load the bundle in `folder` on this computer."""
        self._request(folder, f"Loading {folder}…", "")

    def connect_to(self, url: str) -> None:
        """Use the model on the server at `url` (the preferences' key goes with it)."""
        self._request("", f"Connecting to {url}…", url)

    def _request(self, folder: str, status: str, server: str) -> None:
        self._loading_folder = folder
        self.loaded = False
        self.status.setText(status)
        self._composer.set_missing(LOADING)
        p = Preferences.load(self._settings)
        voice = (p.voice or self._composer.voice) if p.speak else ""
        self.load_requested.emit(
            ModelChoice(
                folder,
                p.gpu_layers,
                p.persona,
                p.speech_device,
                p.speech_quality,
                voice,
                p.detail,
                p.quick_start,
                server=server,
                api_key=p.api_key if server else "",
            )
        )

    @Slot()
    def open_setup(self) -> None:
        from app.window.dialogs.model_setup import SetupDialog
        from model.hardware import probe

        dialog = SetupDialog(probe(), parent=self._window)
        dialog.bundle_ready.connect(self.load)
        dialog.bundle_ready.connect(lambda _: dialog.accept())
        dialog.exec()

    @Slot(str)
    def on_model_loaded(self, description: str) -> None:
        if self._loading_folder:  # not a server's model
            self._settings.setValue(MODELS_FOLDER_KEY, self._loading_folder)
        self.loaded = True
        self.status.setText(f"Model: {description}")
        self.choose_button.setVisible(False)  # still in the File menu
        self._composer.set_missing("")
        self._notices.clear()
        self.ready.emit(description)

    @Slot(str)
    def on_model_failed(self, message: str) -> None:
        self.loaded = False
        self.status.setText("No model")
        self.choose_button.setVisible(True)
        self._composer.set_missing(NO_MODEL if self._loading_folder else NO_SERVER)
        self._notices.show(message)
        self.failed.emit(message)
