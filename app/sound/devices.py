"""The microphones and speakers a user can choose, and opening the chosen one.

PortAudio (through sounddevice) lists its host APIs' devices. On Linux with a sound server
(PulseAudio, or PipeWire's PulseAudio service) that is only ALSA's "pulse" and "default", not the
server's own microphones and speakers. So where PortAudio has "pulse" and `pactl` answers, the lists
are the server's sources (their monitors left out: a monitor is what a sink plays, not a microphone)
and sinks, kept as "pulse:<the server's name>" and shown by their descriptions. Opening one opens
PortAudio's "pulse" device with PULSE_SOURCE or PULSE_SINK naming it: ALSA's pulse plugin connects
while the stream opens, and libpulse takes its default device from them then; the variable is put
back right after. A device the server no longer has fails to open, as a missing PortAudio device does.

sounddevice is imported only through `sounddevice_module`, which first sends ALSA's error lines to the
log (app.system.native_logs): importing it starts PortAudio, whose probing of ALSA prints them.

Threads: the openers `server_stream` makes may run on any thread (the microphone opens on the GUI
thread, the speakers on the worker's); one stream opens at a time, so that no other opening reads
the environment while it is changed.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from app.system.native_logs import route_alsa_errors, stderr_to_log
from model.errors import OmnideskError

PULSE_DEVICE = "pulse"  # PortAudio's name for ALSA's PulseAudio plugin
SERVER_PREFIX = "pulse:"  # a device id naming one of the server's sources or sinks
SERVER_VARIABLES = {"input": "PULSE_SOURCE", "output": "PULSE_SINK"}  # libpulse's default device
PACTL_TIMEOUT_S = 3.0

Query = Callable[[], Any]  # sounddevice.query_devices
ServerList = Callable[[str], list[tuple[str, str]]]  # kind -> the server's (name, description)


@dataclass(frozen=True)
class SoundDevice:
    id: str  # what the preferences keep and a stream opens: PortAudio's name, or SERVER_PREFIX + a name
    label: str  # what the settings show


def sounddevice_module() -> Any:
    """sounddevice, imported with ALSA's and PortAudio's start-up lines sent to the log. Raises
    OSError when the PortAudio library is missing."""
    route_alsa_errors()
    with stderr_to_log():
        import sounddevice
    return sounddevice


def sound_devices(
    kind: str, query: Query | None = None, server: ServerList | None = None
) -> list[SoundDevice]:
    """The input ("input") or output ("output") devices to offer; [] when there are none."""
    try:
        devices = (query or sounddevice_module().query_devices)()
    except Exception:  # no PortAudio, or PortAudio failing to list: no devices to offer
        return []
    channels = f"max_{kind}_channels"
    names = [str(d["name"]) for d in devices if int(d.get(channels, 0)) > 0]
    served = (server or pulse_devices)(kind) if PULSE_DEVICE in names else []
    if served:
        return [SoundDevice(SERVER_PREFIX + name, description) for name, description in served]
    return [SoundDevice(name, name) for name in names]


def pulse_devices(kind: str, run: Callable[..., Any] = subprocess.run) -> list[tuple[str, str]]:
    """The sound server's sources ("input", monitors left out) or sinks ("output") as (name,
    description); [] when `pactl` is missing or fails."""
    command = ["pactl", "list", "sources" if kind == "input" else "sinks"]
    try:
        listed = run(
            command,
            capture_output=True,
            text=True,
            timeout=PACTL_TIMEOUT_S,
            env={**os.environ, "LC_ALL": "C"},  # the field names untranslated
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if listed.returncode != 0:
        return []
    found = []
    for fields in _blocks(listed.stdout):
        if "Name" in fields and fields.get("Monitor of Sink", "n/a") == "n/a":
            found.append((fields["Name"], fields.get("Description") or fields["Name"]))
    return found


def _blocks(text: str) -> Iterator[dict[str, str]]:
    """`pactl list`'s devices, each as its top-level fields (a tab in, "Field: value")."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line[0].isspace():  # "Source #3": the next device
            if fields:
                yield fields
            fields = {}
        elif line.startswith("\t") and not line.startswith("\t\t") and ": " in line:
            key, value = line[1:].split(": ", 1)
            fields[key] = value.strip()
    if fields:
        yield fields


_OPENING = threading.Lock()  # one stream opens at a time: the environment is the whole process's


def portaudio_streams(kind: str, missing: str) -> Callable[..., Any]:
    """sounddevice's InputStream ("input") or OutputStream ("output") opening the sound server's
    devices too, or an OmnideskError starting with `missing` where the PortAudio library is."""
    try:
        sounddevice = sounddevice_module()
    except OSError as exc:  # raised when the PortAudio library is missing
        raise OmnideskError(f"{missing} ({exc}): on Linux, install libportaudio2") from None
    return server_stream(sounddevice.InputStream if kind == "input" else sounddevice.OutputStream, kind)


def server_stream(factory: Callable[..., Any], kind: str) -> Callable[..., Any]:
    """`factory` (sounddevice.InputStream or OutputStream, keyword arguments) opening SERVER_PREFIX
    ids through PortAudio's "pulse" device, and any device with PortAudio's lines sent to the log."""
    variable = SERVER_VARIABLES[kind]

    def open_stream(*, device: Any = None, **settings: Any) -> Any:
        served = isinstance(device, str) and device.startswith(SERVER_PREFIX)
        with _OPENING, stderr_to_log():
            if not served:
                return factory(device=device, **settings)
            with _environment(variable, device.removeprefix(SERVER_PREFIX)):
                return factory(device=PULSE_DEVICE, **settings)

    return open_stream


@contextmanager
def _environment(variable: str, value: str) -> Iterator[None]:
    before = os.environ.get(variable)
    os.environ[variable] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[variable]
        else:
            os.environ[variable] = before
