"""Preferences, the settings dialog, and the window putting them into effect."""

from __future__ import annotations

import os
import stat
from dataclasses import replace

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QLineEdit

from app.sound import playback
from app.sound.devices import SoundDevice
from app.window.dialogs.settings import SettingsDialog
from app.window.main_window import Devices, MainWindow
from app.window.preferences import GPU_LAYERS_KEY, Preferences
from app.worker import ConversationWorker, ModelChoice
from model.files.bundle import Bundle
from model.vision_plan import QUICK_EMBEDDINGS
from tests.app.fakes import MicrophoneFactory
from tests.app.sound.test_playback import FakeStream
from tests.app.windows import MAX_TOKENS, SPEECH, TIMEOUT_MS, ask, load, worker
from tests.model.test_placement import CPU_ONLY, cuda_machine

CUDA = cuda_machine(12)
MIC, SPEAKERS = SoundDevice("Built-in mic", "Built-in mic"), SoundDevice("Speakers", "Speakers")


def test_preferences_round_trip_and_defaults(settings):
    assert Preferences.load(settings) == Preferences()
    chosen = Preferences(
        models_folder="/models/7b",
        gpu_layers=20,
        theme="dark",
        voice="Ethan",
        speak=False,
        speech_quality="fast",
        quick_start=True,
        speech_device="cpu",
        persona="Answer briefly.",
        detail="quick",
        talk_key="F2",
        input_device="USB mic",
        output_device="Headphones",
        camera="2",
    )
    chosen.save(settings)
    assert Preferences.load(settings) == chosen and chosen.camera_index == 2
    settings.setValue(GPU_LAYERS_KEY, "lots")
    assert Preferences.load(settings).gpu_layers == -1


@pytest.mark.parametrize("preset, quality", [("reference", "exact"), ("fast", "fast"), ("other", "auto")])
def test_an_older_speech_preset_is_read_as_a_quality(settings, preset, quality):
    settings.setValue("speech/preset", preset)
    assert Preferences.load(settings).speech_quality == quality


class TestDialog:
    def test_devices_each_with_the_system_default_and_a_missing_one_marked(self, qtbot):
        preferences = Preferences(input_device="USB mic", camera="2")
        dialog = SettingsDialog(preferences, ["Chelsie", "Ethan"], [MIC], [SPEAKERS], [(0, "Webcam")], CUDA)
        qtbot.addWidget(dialog)
        items = [dialog.microphone.itemText(i) for i in range(dialog.microphone.count())]
        assert items == ["System default", "Built-in mic", "USB mic (not connected)"]
        assert dialog.microphone.currentText() == "USB mic (not connected)"
        assert dialog.speakers.currentText() == "System default"
        assert dialog.camera.currentText() == "2 (not connected)"
        assert dialog.gpu_layers.text() == "Auto (as many as fit)"
        assert dialog.preferences() == replace(preferences, voice="Chelsie")

    def test_the_sound_servers_devices_show_their_descriptions_and_are_kept_by_name(self, qtbot):
        yeti = SoundDevice("pulse:alsa_input.usb-Blue_Yeti-00", "Yeti Stereo Microphone")
        headphones = SoundDevice("pulse:bluez_sink.a2dp", "Headphones")
        dialog = SettingsDialog(Preferences(), ["Chelsie"], [yeti], [headphones], [], CUDA)
        qtbot.addWidget(dialog)
        assert [dialog.microphone.itemText(i) for i in range(2)] == [
            "System default",
            "Yeti Stereo Microphone",
        ]
        dialog.microphone.setCurrentText("Yeti Stereo Microphone")
        dialog.speakers.setCurrentText("Headphones")
        chosen = dialog.preferences()
        assert (chosen.input_device, chosen.output_device) == (yeti.id, headphones.id)

    def test_hands_free_silence_and_headphones_are_edited(self, qtbot):
        dialog = SettingsDialog(Preferences(silence_s=1.2), ["Chelsie"], [], [], [], CUDA)
        qtbot.addWidget(dialog)
        assert dialog.silence.text() == "1.2 s" and not dialog.headphones.isChecked()
        assert (dialog.silence.minimum(), dialog.silence.maximum()) == (0.3, 3.0)
        dialog.silence.setValue(0.7)
        dialog.headphones.setChecked(True)
        chosen = dialog.preferences()
        assert (chosen.silence_s, chosen.headphones) == (0.7, True)

    def test_edits_come_back_as_preferences(self, qtbot):
        dialog = SettingsDialog(Preferences(), ["Chelsie", "Ethan"], [MIC], [SPEAKERS], [(0, "Webcam")], CUDA)
        qtbot.addWidget(dialog)
        dialog.models_folder.setText(" /models/3b ")
        dialog.gpu_layers.setValue(12)
        dialog.quality.setCurrentIndex(dialog.quality.findData("fast"))
        dialog.quick_start.setChecked(True)
        dialog.speech_device.setCurrentText("NVIDIA GeForce RTX 4070")
        dialog.voice.setCurrentText("Ethan")
        dialog.persona.setPlainText("Be brief.")
        dialog.theme.setCurrentIndex(dialog.theme.findData("dark"))
        dialog.talk_key.setKeySequence(QKeySequence("F2"))
        dialog.microphone.setCurrentText("Built-in mic")
        dialog.speakers.setCurrentText("Speakers")
        dialog.camera.setCurrentText("Webcam")
        assert dialog.preferences() == Preferences(
            models_folder="/models/3b",
            gpu_layers=12,
            theme="dark",
            voice="Ethan",
            speech_quality="fast",
            quick_start=True,
            speech_device="gpu",
            persona="Be brief.",
            talk_key="F2",
            input_device="Built-in mic",
            output_device="Speakers",
            camera="0",
        )

    def test_the_engine_page_saves_and_restores_a_server(self, qtbot, settings):
        dialog = SettingsDialog(Preferences(), ["Chelsie"], [], [], [], CPU_ONLY)
        qtbot.addWidget(dialog)
        assert dialog.engine.currentData() == "local" and not dialog.server_url.isEnabled()
        dialog.engine.setCurrentIndex(dialog.engine.findData("server"))
        assert dialog.server_url.isEnabled() and dialog.api_key.isEnabled()
        dialog.server_url.setText(" http://gpu-box:8091/v1 ")
        dialog.api_key.setText("s3cret")
        assert dialog.api_key.echoMode() == QLineEdit.EchoMode.Password
        edited = dialog.preferences()
        assert edited == Preferences(
            voice="Chelsie", engine="server", server_url="http://gpu-box:8091/v1", api_key="s3cret"
        )
        edited.save(settings)
        assert stat.S_IMODE(os.stat(settings.fileName()).st_mode) == 0o600, "the key is the user's alone"
        restored = Preferences.load(settings)
        assert restored == edited and restored.on_server
        again = SettingsDialog(restored, ["Chelsie"], [], [], [], CPU_ONLY)
        qtbot.addWidget(again)
        assert again.engine.currentData() == "server" and again.server_url.text() == "http://gpu-box:8091/v1"
        assert again.api_key.text() == "s3cret"
        settings.setValue("engine/runs_on", "moon")  # an unknown engine: this computer
        assert not Preferences.load(settings).on_server

    def test_detail_is_offered_and_edited(self, qtbot):
        dialog = SettingsDialog(Preferences(), ["Chelsie"], [], [], [], CPU_ONLY)
        qtbot.addWidget(dialog)
        assert [dialog.detail.itemData(i) for i in range(dialog.detail.count())] == ["auto", "sharp", "quick"]
        assert dialog.detail.currentData() == "auto"
        dialog.detail.setCurrentIndex(dialog.detail.findData("sharp"))
        assert dialog.preferences() == Preferences(voice="Chelsie", detail="sharp")

    def test_a_machine_without_a_gpu_offers_neither_gpu_layers_nor_gpu_speech(self, qtbot):
        dialog = SettingsDialog(Preferences(), ["Chelsie"], [], [], [], CPU_ONLY)
        qtbot.addWidget(dialog)
        places = [dialog.speech_device.itemData(i) for i in range(dialog.speech_device.count())]
        assert places == ["auto", "cpu"]
        assert not dialog.gpu_layers.isVisibleTo(dialog)
        assert dialog.speech_device.isVisibleTo(dialog) or not dialog.isVisible()


class TestApplied:
    def test_a_new_key_talks_and_the_theme_changes(self, qtbot, settings, history_store):
        window = MainWindow(settings, worker(), history_store, Devices(microphone_stream=MicrophoneFactory()))
        qtbot.addWidget(window)
        window.apply_preferences(replace(window.preferences(), talk_key="F2", theme="dark"))
        assert settings.value("appearance/theme") == "dark"
        qtbot.keyPress(window, Qt.Key.Key_Space)
        assert window.push_to_talk.microphone is None
        qtbot.keyPress(window, Qt.Key.Key_F2)
        assert window.push_to_talk.microphone is not None
        qtbot.keyRelease(window, Qt.Key.Key_F2)
        qtbot.waitUntil(lambda: window.push_to_talk.microphone is None, timeout=TIMEOUT_MS)
        window.set_theme("system")
        window.close()

    def test_model_choices_reload_the_bundle(self, qtbot, settings, history_store, tiny_bundle: Bundle):
        window = MainWindow(settings, worker(), history_store)
        choice = _reloaded(qtbot, window, tiny_bundle, gpu_layers=0, persona="Be brief.")
        assert choice == ModelChoice(str(tiny_bundle.root), 0, "Be brief.", voice="Chelsie")
        assert window.worker._conversation.persona == "Be brief."
        window.close()

    def test_starting_sooner_reloads_with_fast_speechs_first_chunk_without_look_ahead(
        self, qtbot, settings, history_store, tiny_bundle: Bundle
    ):
        window = MainWindow(settings, worker(), history_store)
        choice = _reloaded(qtbot, window, tiny_bundle, speech_quality="fast", quick_start=True)
        assert choice.plan_choice.quick_start
        assert window.worker._conversation.plan.stream.first_future_blocks == 0
        window.close()

    def test_a_detail_change_reloads_with_its_budget(
        self, qtbot, settings, history_store, tiny_bundle: Bundle
    ):
        window = MainWindow(settings, worker(), history_store)
        choice = _reloaded(qtbot, window, tiny_bundle, detail="quick")
        assert choice.detail == "quick" and choice.plan_choice.detail == "quick"
        vision = window.worker._conversation.plan.vision
        assert vision.embeddings == QUICK_EMBEDDINGS
        assert window.worker._conversation.perception.vision_options.max_pixels == QUICK_EMBEDDINGS * 28 * 28
        window.close()

    @pytest.mark.parametrize("remembered", [True, False])
    def test_missing_speakers_fall_back_to_the_default(
        self, qtbot, settings, history_store, tiny_bundle: Bundle, monkeypatch, remembered
    ):
        opened: list[object] = []

        def outputs(callback, device=None, **settings):
            if device is not None:
                raise RuntimeError(f"No such device {device!r}")
            opened.append(device)
            return FakeStream(callback, **settings)

        monkeypatch.setattr(playback, "default_stream_factory", lambda: outputs)
        if remembered:
            settings.setValue("devices/output", "USB speakers")
        speakers = ConversationWorker(max_tokens=MAX_TOKENS, speech=SPEECH)
        window = MainWindow(settings, speakers, history_store)
        qtbot.addWidget(window)
        load(qtbot, window, tiny_bundle)
        if not remembered:
            window.apply_preferences(replace(window.preferences(), output_device="USB speakers"))
        assert ask(qtbot, window, "Say something") in ("end", "length")
        assert opened == [None]
        assert "“USB speakers” is missing: the system default plays" in window.notices.label.text()
        assert window.composer.speech_toggle.isChecked()
        window.close()


def _reloaded(qtbot, window: MainWindow, bundle: Bundle, **changes: object) -> ModelChoice:
    """`window` with `bundle` loaded, then `changes` applied as the settings dialog applies them: the
    model choice the reload asked for, once the reloaded model is in."""
    qtbot.addWidget(window)
    load(qtbot, window, bundle)
    with qtbot.waitSignal(window.models.load_requested, timeout=TIMEOUT_MS) as request:
        window.apply_preferences(replace(window.preferences(), **changes))
    qtbot.waitUntil(lambda: window.models.status.text().startswith("Model:"), timeout=TIMEOUT_MS)
    return request.args[0]
