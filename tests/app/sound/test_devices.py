"""The devices offered (PortAudio's, or the sound server's), opening the chosen one; then with a real
PulseAudio daemon: its devices listed, a chosen microphone heard, chosen speakers played."""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np
import pytest

from app.sound import microphone, playback
from app.sound.devices import SoundDevice, pulse_devices, server_stream, sound_devices
from app.sound.microphone import Microphone
from app.sound.playback import Playback
from model.errors import OmnideskError

PORTAUDIO = [
    {"name": "Built-in mic", "max_input_channels": 2, "max_output_channels": 0},
    {"name": "Speakers", "max_input_channels": 0, "max_output_channels": 2},
]
WITH_PULSE = [
    {"name": "pulse", "max_input_channels": 32, "max_output_channels": 32},
    {"name": "default", "max_input_channels": 32, "max_output_channels": 32},
]
SOURCES = """Source #0
\tState: SUSPENDED
\tName: alsa_output.pci-0000_00_1f.3.analog-stereo.monitor
\tDescription: Monitor of Built-in Audio Analog Stereo
\tDriver: module-alsa-card.c
\tMonitor of Sink: alsa_output.pci-0000_00_1f.3.analog-stereo
\tProperties:
\t\tdevice.description = "Monitor of Built-in Audio Analog Stereo"
Source #1
\tState: RUNNING
\tName: alsa_input.usb-Blue_Yeti-00.analog-stereo
\tDescription: Yeti Stereo Microphone Analog Stereo
\tMonitor of Sink: n/a
\tProperties:
\t\tdevice.description = "Yeti Stereo Microphone Analog Stereo"
"""
SINKS = """Sink #0
\tState: SUSPENDED
\tName: alsa_output.pci-0000_00_1f.3.analog-stereo
\tDescription: Built-in Audio Analog Stereo
Sink #4
\tName: bluez_sink.00_1B_66.a2dp_sink
\tDescription: Headphones
"""


class FakePactl:
    def __init__(self, output: dict[str, str] | None = None, returncode: int = 0, error=None) -> None:
        self.output, self.returncode, self.error = output or {}, returncode, error
        self.calls: list[tuple[list[str], dict]] = []

    def __call__(self, command, **options):
        self.calls.append((command, options))
        if self.error is not None:
            raise self.error
        return subprocess.CompletedProcess(command, self.returncode, self.output.get(command[-1], ""), "")


class TestListing:
    def test_portaudio_devices_by_kind(self):
        assert sound_devices("input", lambda: PORTAUDIO) == [SoundDevice("Built-in mic", "Built-in mic")]
        assert sound_devices("output", lambda: PORTAUDIO) == [SoundDevice("Speakers", "Speakers")]

    def test_without_portaudio_there_is_nothing_to_offer(self):
        def broken():
            raise OSError("PortAudio library not found")

        assert sound_devices("input", broken) == []

    @pytest.mark.parametrize(
        ("opener", "missing"),
        [
            (microphone.default_stream_factory, "no microphone"),
            (playback.default_stream_factory, "no sound output"),
        ],
    )
    def test_without_portaudio_opening_says_what_to_install(self, monkeypatch, opener, missing):
        def broken():
            raise OSError("PortAudio library not found")

        monkeypatch.setattr("app.sound.devices.sounddevice_module", broken)
        said = rf"^{missing} \(PortAudio library not found\): on Linux, install libportaudio2$"
        with pytest.raises(OmnideskError, match=said):
            opener()

    def test_with_a_sound_server_its_microphones_and_speakers_are_offered_monitors_left_out(self):
        def server(kind):
            return pulse_devices(kind, FakePactl({"sources": SOURCES, "sinks": SINKS}))

        assert sound_devices("input", lambda: WITH_PULSE, server) == [
            SoundDevice(
                "pulse:alsa_input.usb-Blue_Yeti-00.analog-stereo", "Yeti Stereo Microphone Analog Stereo"
            )
        ]
        assert sound_devices("output", lambda: WITH_PULSE, server) == [
            SoundDevice("pulse:alsa_output.pci-0000_00_1f.3.analog-stereo", "Built-in Audio Analog Stereo"),
            SoundDevice("pulse:bluez_sink.00_1B_66.a2dp_sink", "Headphones"),
        ]

    def test_pactl_is_asked_in_english_and_only_where_portaudio_reaches_the_server(self):
        pactl = FakePactl({"sources": SOURCES})
        assert pulse_devices("input", pactl) and pactl.calls[0][0] == ["pactl", "list", "sources"]
        assert pactl.calls[0][1]["env"]["LC_ALL"] == "C", "field names are translated otherwise"
        asked: list[str] = []
        assert sound_devices("input", lambda: PORTAUDIO, lambda kind: asked.append(kind) or []) == [
            SoundDevice("Built-in mic", "Built-in mic")
        ]
        assert asked == [], "without PortAudio's pulse device, a server device could not be opened"

    @pytest.mark.parametrize(
        "pactl",
        [
            FakePactl(error=FileNotFoundError("pactl")),
            FakePactl(returncode=1),
            FakePactl(error=subprocess.TimeoutExpired("pactl", 3)),
        ],
        ids=["missing", "failing", "hanging"],
    )
    def test_without_an_answer_from_the_server_portaudio_names_are_offered(self, pactl):
        assert pulse_devices("input", pactl) == []
        devices = sound_devices("input", lambda: WITH_PULSE, lambda kind: pulse_devices(kind, pactl))
        assert devices == [SoundDevice("pulse", "pulse"), SoundDevice("default", "default")]


class TestOpening:
    @pytest.fixture
    def opened(self, monkeypatch):
        """A stream factory that records each device it was asked for with PULSE_SOURCE and PULSE_SINK."""
        monkeypatch.delenv("PULSE_SOURCE", raising=False)
        monkeypatch.setenv("PULSE_SINK", "the user's own")
        calls: list[tuple] = []

        def factory(*, device=None, **settings):
            calls.append((device, os.environ.get("PULSE_SOURCE"), os.environ.get("PULSE_SINK"), settings))
            return "stream"

        return factory, calls

    def test_a_server_source_opens_portaudios_pulse_device_naming_it(self, opened):
        factory, calls = opened
        assert server_stream(factory, "input")(device="pulse:alsa_input.usb", samplerate=16_000) == "stream"
        assert calls == [("pulse", "alsa_input.usb", "the user's own", {"samplerate": 16_000})]
        assert "PULSE_SOURCE" not in os.environ, "put back at once"

    def test_a_server_sink_likewise_and_the_variable_set_before_is_put_back(self, opened):
        factory, calls = opened
        server_stream(factory, "output")(device="pulse:bluez_sink.a2dp")
        assert calls == [("pulse", None, "bluez_sink.a2dp", {})]
        assert os.environ["PULSE_SINK"] == "the user's own"

    @pytest.mark.parametrize("device", [None, "Built-in mic", 3])
    def test_other_devices_open_as_they_are(self, opened, device):
        factory, calls = opened
        server_stream(factory, "input")(device=device)
        assert calls == [(device, None, "the user's own", {})]

    def test_a_failure_to_open_is_raised_and_the_environment_put_back(self, opened):
        def failing(**settings):
            raise RuntimeError("Error opening InputStream")

        with pytest.raises(RuntimeError):
            server_stream(failing, "input")(device="pulse:gone")
        assert "PULSE_SOURCE" not in os.environ


def tone(seconds: float, rate: int, hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


class TestWithPulseAudio:
    def test_the_servers_devices_are_offered(self, sound_server):
        inputs = sound_devices("input")
        assert SoundDevice("pulse:virtmic", "Virtual_microphone") in inputs
        assert not any(d.id.endswith(".monitor") for d in inputs)
        assert SoundDevice("pulse:speakers", "Desk_speakers") in sound_devices("output")

    def test_the_chosen_microphone_hears_what_is_played_into_it(self, sound_server, capfd):
        microphone = Microphone("pulse:virtmic")
        sound_server.say(tone(1.0, 16_000))
        time.sleep(0.3)
        microphone.poll()
        heard = microphone.stop().samples
        assert heard.size > 8_000 and np.max(np.abs(heard)) > 0.3, "the tone came through the server"
        assert capfd.readouterr().err == ""

    def test_the_chosen_speakers_play(self, sound_server, capfd):
        recorder = sound_server.record_speakers()
        playback = Playback(24_000, device="pulse:speakers")
        playback.write(tone(1.0, 24_000))
        playback.finish()
        assert playback.wait(10)
        time.sleep(0.3)
        playback.close()
        recorded = sound_server.stop_recording(recorder)
        assert np.max(np.abs(recorded)) > 0.3, "the tone reached the chosen sink"
        assert capfd.readouterr().err == ""

    def test_a_device_the_server_no_longer_has_fails_to_open_in_one_line_nothing_on_the_terminal(
        self, sound_server, capfd
    ):
        with pytest.raises(OmnideskError, match="cannot open the microphone “pulse:unplugged”"):
            Microphone("pulse:unplugged")
        captured = capfd.readouterr()
        assert captured.err == "" and captured.out == "", "ALSA's and PortAudio's lines went to the log"
