"""The user's choices, kept in QSettings: what `SettingsDialog` edits and the window applies.

Values are stored as strings (QSettings' INI files return strings whatever was stored).
Empty device names mean the system default.

The server's API key is kept here too, in the user's settings file (on Linux
~/.config/Omnidesk/Omnidesk.conf), which is then made readable by the user alone; not in a system
keyring: see docs/serving.md for why.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from PySide6.QtCore import QSettings

MODELS_FOLDER_KEY = "models/folder"
GPU_LAYERS_KEY = "models/gpu_layers"  # -1: as many as fit
THEME_KEY = "appearance/theme"
VOICE_KEY = "speech/voice"
SPEECH_KEY = "speech/enabled"
QUALITY_KEY = "speech/quality"  # "auto", "exact" or "fast"
QUICK_START_KEY = "speech/quick_start"  # "true": Fast speech starts after 12 codes
LEGACY_PRESET_KEY = "speech/preset"  # before: "reference" or "fast"
SPEECH_DEVICE_KEY = "speech/device"  # "auto", "gpu" or "cpu"
PERSONA_KEY = "speech/persona"
DETAIL_KEY = "vision/detail"  # "auto", "sharp" or "quick": how many embeddings a picture gets
TALK_KEY = "input/push_to_talk_key"  # a QKeySequence in its portable text form
HANDS_FREE_KEY = "input/hands_free"  # "true": the microphone listens and speech starts a turn
SILENCE_KEY = "input/hands_free_silence_s"  # seconds of silence that end what the user says
HEADPHONES_KEY = "input/headphones"  # "true": the microphone does not hear the speakers
SHARE_SCREEN_KEY = "input/share_screen"  # "true": a spoken question carries a shot of the screen
SILENCE_RANGE_S = (0.3, 3.0)  # the silences that may end what the user says
INPUT_DEVICE_KEY = "devices/input"
OUTPUT_DEVICE_KEY = "devices/output"
CAMERA_KEY = "devices/camera"  # OpenCV's camera number, or empty for the default camera
ENGINE_KEY = "engine/runs_on"  # "local" (this computer) or "server"
SERVER_URL_KEY = "engine/server_url"  # the server's OpenAI base URL
API_KEY_KEY = "engine/api_key"  # the server's API key ("": none)
ENGINES = ("local", "server")


@dataclass(frozen=True)
class Preferences:
    models_folder: str = ""
    gpu_layers: int = -1
    theme: str = "system"
    voice: str = ""
    speak: bool = True
    speech_quality: str = "auto"
    quick_start: bool = False
    speech_device: str = "auto"
    persona: str = ""
    detail: str = "auto"
    talk_key: str = "Space"
    hands_free: bool = False
    silence_s: float = 0.8
    headphones: bool = False
    share_screen: bool = False
    input_device: str = ""
    output_device: str = ""
    camera: str = ""
    engine: str = "local"  # one of ENGINES: where the model runs
    server_url: str = ""
    api_key: str = ""

    @classmethod
    def load(cls, settings: QSettings) -> Preferences:
        default = cls()

        def text(key: str, fallback: str) -> str:
            return str(settings.value(key, fallback, type=str))

        layers = text(GPU_LAYERS_KEY, str(default.gpu_layers))
        silence = _seconds(text(SILENCE_KEY, ""))
        return cls(
            models_folder=text(MODELS_FOLDER_KEY, default.models_folder),
            gpu_layers=int(layers) if layers.lstrip("-").isdigit() else default.gpu_layers,
            theme=text(THEME_KEY, default.theme),
            voice=text(VOICE_KEY, default.voice),
            speak=text(SPEECH_KEY, "true") == "true",
            speech_quality=text(QUALITY_KEY, _legacy_quality(text(LEGACY_PRESET_KEY, ""))),
            quick_start=text(QUICK_START_KEY, "false") == "true",
            speech_device=text(SPEECH_DEVICE_KEY, default.speech_device),
            persona=text(PERSONA_KEY, default.persona),
            detail=text(DETAIL_KEY, default.detail),
            talk_key=text(TALK_KEY, default.talk_key) or default.talk_key,
            hands_free=text(HANDS_FREE_KEY, "false") == "true",
            silence_s=silence if silence is not None else default.silence_s,
            headphones=text(HEADPHONES_KEY, "false") == "true",
            share_screen=text(SHARE_SCREEN_KEY, "false") == "true",
            input_device=text(INPUT_DEVICE_KEY, default.input_device),
            output_device=text(OUTPUT_DEVICE_KEY, default.output_device),
            camera=text(CAMERA_KEY, default.camera),
            engine=engine if (engine := text(ENGINE_KEY, default.engine)) in ENGINES else default.engine,
            server_url=text(SERVER_URL_KEY, default.server_url),
            api_key=text(API_KEY_KEY, default.api_key),
        )

    def save(self, settings: QSettings) -> None:
        values = {
            MODELS_FOLDER_KEY: self.models_folder,
            GPU_LAYERS_KEY: str(self.gpu_layers),
            THEME_KEY: self.theme,
            VOICE_KEY: self.voice,
            SPEECH_KEY: "true" if self.speak else "false",
            QUALITY_KEY: self.speech_quality,
            QUICK_START_KEY: "true" if self.quick_start else "false",
            SPEECH_DEVICE_KEY: self.speech_device,
            PERSONA_KEY: self.persona,
            DETAIL_KEY: self.detail,
            TALK_KEY: self.talk_key,
            HANDS_FREE_KEY: "true" if self.hands_free else "false",
            SILENCE_KEY: str(self.silence_s),
            HEADPHONES_KEY: "true" if self.headphones else "false",
            SHARE_SCREEN_KEY: "true" if self.share_screen else "false",
            INPUT_DEVICE_KEY: self.input_device,
            OUTPUT_DEVICE_KEY: self.output_device,
            CAMERA_KEY: self.camera,
            ENGINE_KEY: self.engine,
            SERVER_URL_KEY: self.server_url,
            API_KEY_KEY: self.api_key,
        }
        for key, value in values.items():
            settings.setValue(key, value)
        if self.api_key:
            keep_private(settings)

    @property
    def on_server(self) -> bool:
        """The model runs on a server (one is named)."""
        return self.engine == "server" and bool(self.server_url)

    @property
    def camera_index(self) -> int:
        return int(self.camera) if self.camera.isdigit() else 0


def keep_private(settings: QSettings) -> None:
    """Write `settings` now, and make its file readable and writable by its owner alone (it holds a
    key). Settings kept elsewhere than in a file (the Windows registry) are the user's already."""
    settings.sync()
    path = settings.fileName()
    if os.path.isfile(path):
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


def _seconds(text: str) -> float | None:
    """A stored silence, if it is one in SILENCE_RANGE_S."""
    try:
        seconds = float(text)
    except ValueError:
        return None
    low, high = SILENCE_RANGE_S
    return seconds if low <= seconds <= high else None


def _legacy_quality(preset: str) -> str:
    """The quality an older version's speech preset meant ("reference" was the exact path)."""
    return {"reference": "exact", "fast": "fast"}.get(preset, "auto")
