"""The settings dialog: the engine (this computer or a server), model, speech, appearance, push-to-talk
key, hands-free and devices."""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import Slot
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QKeySequenceEdit,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.sound.devices import SoundDevice
from app.window.preferences import SILENCE_RANGE_S, Preferences
from model.hardware import Hardware

QUALITIES = {
    "auto": "Automatic (exact on a GPU, fast on the CPU)",
    "exact": "Exact (the reference's path)",
    "fast": "Fast (quantized Talker, fewer ODE steps, an earlier first sound)",
}
DETAILS = {
    "auto": "Automatic (as much as this computer reads while you ask)",
    "sharp": "Sharp (small text stays readable; slower on a CPU)",
    "quick": "Quick (a small picture, read at once)",
}
ENGINE_LABELS = {"local": "This computer", "server": "A server"}
KEY_KEPT = (
    "The key is kept in Omnidesk's settings file, which only your user account may read. "
    "Leave it empty if the server needs none (one on 127.0.0.1 through an SSH tunnel)."
)
THEME_LABELS = {"system": "Follow the system", "light": "Light", "dark": "Dark"}
DEFAULT_DEVICE = "System default"


def _combo(items: list[tuple[str, str]], current: str, missing: str = "{} (not connected)") -> QComboBox:
    """A combo box of (value, label) items with `current` selected (added, labelled `missing`, if absent)."""
    box = QComboBox()
    for value, label in items:
        box.addItem(label, value)
    if box.findData(current) < 0:
        box.addItem(missing.format(current), current)
    box.setCurrentIndex(box.findData(current))
    return box


def _labelled(devices: list[SoundDevice]) -> list[tuple[str, str]]:
    return [(device.id, device.label) for device in devices]


class SettingsDialog(QDialog):
    def __init__(
        self,
        preferences: Preferences,
        voices: list[str],
        inputs: list[SoundDevice],
        outputs: list[SoundDevice],
        cameras: list[tuple[int, str]],
        hardware: Hardware,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self._preferences = preferences

        self.engine = _combo(list(ENGINE_LABELS.items()), preferences.engine)
        self.server_url = QLineEdit(preferences.server_url)
        self.server_url.setPlaceholderText("http://127.0.0.1:8091/v1")
        self.api_key = QLineEdit(preferences.api_key)
        self.api_key.setEchoMode(QLineEdit.EchoMode.Password)
        key_kept = QLabel(KEY_KEPT)
        key_kept.setWordWrap(True)
        engine = QFormLayout()
        engine.addRow("The model runs on", self.engine)
        engine.addRow("Server address", self.server_url)
        engine.addRow("API key", self.api_key)
        engine.addRow("", key_kept)
        self.engine.currentIndexChanged.connect(self._show_engine)
        self._server_fields = (self.server_url, self.api_key, key_kept)
        self._show_engine()

        self.models_folder = QLineEdit(preferences.models_folder)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._on_browse_clicked)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.models_folder, 1)
        folder_row.addWidget(browse)
        self.gpu_layers = QSpinBox()
        self.gpu_layers.setRange(-1, 999)
        self.gpu_layers.setSpecialValueText("Auto (as many as fit)")
        self.gpu_layers.setValue(preferences.gpu_layers)
        self.detail = _combo(list(DETAILS.items()), preferences.detail)
        self.detail.setToolTip("How much of a picture or screenshot the model sees")
        model = QFormLayout()
        model.addRow("Model folder", folder_row)
        model.addRow("Detail", self.detail)
        if hardware.llama_backend != "CPU" and hardware.gpus:  # on a CPU build there is nothing to offload
            model.addRow("GPU layers", self.gpu_layers)

        self.quality = _combo(list(QUALITIES.items()), preferences.speech_quality)
        self.quick_start = QCheckBox("Start speaking sooner")
        self.quick_start.setChecked(preferences.quick_start)
        self.quick_start.setToolTip(
            "Fast speech only: the first sound needs half the speech codes, which on a CPU comes "
            "seconds sooner; its first quarter second is made without what follows it, so it can "
            "sound less smooth than the rest"
        )
        places = [("auto", "Automatic"), ("cpu", "CPU")]
        if hardware.torch_gpu is not None:
            places.insert(1, ("gpu", hardware.torch_gpu.name))
        self.speech_device = _combo(places, preferences.speech_device)
        voice = preferences.voice or (voices[0] if voices else "")
        self.voice = _combo([(v, v) for v in voices], voice, "{}") if voice else None
        self.persona = QPlainTextEdit(preferences.persona)
        self.persona.setPlaceholderText("Your instructions to the assistant (optional)")
        self.persona.setFixedHeight(70)
        speech = QFormLayout()
        speech.addRow("Speech quality", self.quality)
        speech.addRow("", self.quick_start)
        speech.addRow("Speech runs on", self.speech_device)
        if self.voice is not None:
            speech.addRow("Voice", self.voice)
        speech.addRow("Persona", self.persona)

        self.theme = _combo(list(THEME_LABELS.items()), preferences.theme)
        self.talk_key = QKeySequenceEdit(QKeySequence(preferences.talk_key))
        self.talk_key.setMaximumSequenceLength(1)
        self.talk_key.setToolTip("Hold it to talk while the question box does not have the focus")
        self.microphone = _combo([("", DEFAULT_DEVICE), *_labelled(inputs)], preferences.input_device)
        self.speakers = _combo([("", DEFAULT_DEVICE), *_labelled(outputs)], preferences.output_device)
        self.camera = _combo([("", DEFAULT_DEVICE), *((str(i), n) for i, n in cameras)], preferences.camera)
        self.silence = QDoubleSpinBox()
        self.silence.setRange(*SILENCE_RANGE_S)
        self.silence.setSingleStep(0.1)
        self.silence.setDecimals(1)
        self.silence.setSuffix(" s")
        self.silence.setValue(preferences.silence_s)
        self.silence.setToolTip("Hands-free sends what you said once you have been quiet this long")
        self.headphones = QCheckBox("I wear headphones: speaking over a reply interrupts it")
        self.headphones.setChecked(preferences.headphones)
        self.headphones.setToolTip(
            "Without headphones the microphone would hear Omnidesk's voice, so hands-free does not "
            "listen while Omnidesk speaks"
        )
        devices = QFormLayout()
        devices.addRow("Push-to-talk key", self.talk_key)
        devices.addRow("Hands-free sends after", self.silence)
        devices.addRow("", self.headphones)
        devices.addRow("Microphone", self.microphone)
        devices.addRow("Speakers", self.speakers)
        devices.addRow("Camera", self.camera)

        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        forms = [("Engine", engine), ("Model", model), ("Speech", speech), ("Input and devices", devices)]
        for title, form in forms:
            group = QGroupBox(title)
            group.setLayout(form)
            layout.addWidget(group)
        appearance = QFormLayout()
        appearance.addRow("Theme", self.theme)
        group = QGroupBox("Appearance")
        group.setLayout(appearance)
        layout.addWidget(group)
        layout.addWidget(buttons)

    @Slot()
    def _show_engine(self) -> None:
        """The server's fields are edited only when the model runs on a server."""
        for field in self._server_fields:
            field.setEnabled(self.engine.currentData() == "server")

    @Slot()
    def _on_browse_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder", self.models_folder.text())
        if folder:
            self.models_folder.setText(folder)

    def preferences(self) -> Preferences:
        """The preferences as edited (the ones given, where the dialog shows nothing)."""
        key = self.talk_key.keySequence().toString(QKeySequence.SequenceFormat.PortableText)
        return replace(
            self._preferences,
            models_folder=self.models_folder.text().strip(),
            gpu_layers=self.gpu_layers.value(),
            detail=str(self.detail.currentData()),
            speech_quality=str(self.quality.currentData()),
            quick_start=self.quick_start.isChecked(),
            speech_device=str(self.speech_device.currentData()),
            voice=str(self.voice.currentData()) if self.voice is not None else self._preferences.voice,
            persona=self.persona.toPlainText().strip(),
            theme=str(self.theme.currentData()),
            talk_key=key or self._preferences.talk_key,
            silence_s=round(self.silence.value(), 1),
            headphones=self.headphones.isChecked(),
            input_device=str(self.microphone.currentData()),
            output_device=str(self.speakers.currentData()),
            camera=str(self.camera.currentData()),
            engine=str(self.engine.currentData()),
            server_url=self.server_url.text().strip(),
            api_key=self.api_key.text().strip(),
        )
