"""Hands-free: while the toggle is on, the microphone listens and what the user says is sent when
they stop speaking; no key to hold.

Voice activity (app.sound.voice_activity, Silero VAD) finds where speech starts and ends. Speech starting
is told (`speech_started`) as a press of push-to-talk is, so that talking over a reply interrupts
it; speech ending sends its recording (`recording_finished`), as letting go of push-to-talk does.
While the user speaks, what is heard of the utterance (`heard`, from its pre-roll on) goes to the
worker, which encodes it in 2 s blocks as push-to-talk's does; the recording sent at the end leaves out
the trailing silence, and the worker's encoding of it is exact all the same.

The assistant's own voice must not start a turn. Without echo cancellation, what the microphone
hears while the assistant speaks is ignored (and for ECHO_TAIL_S after, the room's echo), so the
user cannot interrupt by voice; unless they wear headphones (a setting), when the microphone cannot
hear the speakers and speaking over a reply interrupts it (barge-in). The window tells when speech
plays with `set_assistant_speaking`.

Threads: everything here runs on the GUI thread. The microphone's PortAudio thread only fills its
queue; a timer empties it every MIC_POLL_MS and runs voice activity on what came (about 0.6 ms per
32 ms of sound), never blocking.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, QSettings, QTimer, Signal, Slot
from PySide6.QtWidgets import QProgressBar, QPushButton, QWidget

from app.sound.microphone import DeviceLost, Microphone, StreamFactory
from app.sound.voice_activity import (
    Probability,
    SileroVad,
    SpeechEnded,
    SpeechStarted,
    VoiceActivity,
    VoiceOptions,
)
from app.window.icons import set_icon
from app.window.preferences import HANDS_FREE_KEY, Preferences
from app.window.push_to_talk import MIC_POLL_MS, meter_percent
from model.audio_rates import INPUT_SAMPLE_RATE
from model.errors import OmnideskError
from model.media import Audio

ECHO_TAIL_S = 0.3  # after the assistant stops speaking, the room still sounds of it this long
STATES = {
    "off": "Hands-free: off. Turn it on to talk without holding a key",
    "listening": "Hands-free: listening. Speak, then pause to send",
    "hearing": "Hands-free: hearing you. Pause to send",
    "paused": "Hands-free: not listening while Omnidesk speaks (unless you wear headphones: Settings)",
}


class HandsFree(QObject):
    """The Hands-free toggle (the window lays out `button`; `level_meter` is shown and moved while it
    listens) and the microphone while it is on. The toggle's state is remembered.

    Signals:
    speech_started(): the user started to speak (a running reply is interrupted, as by push-to-talk).
    heard(object): the samples (n,) float32 at 16 kHz of the utterance heard since the last heard.
    sound(object, bool): everything heard since the last poll (but the assistant's own voice) and
        whether the user is speaking: what a call hears (app.window.call).
    recording_finished(object): the user stopped speaking; the Audio of what they said.
    speech_dropped(): listening stopped while the user spoke (turned off, device lost): nothing is sent.
    listening_changed(bool): the microphone opened (True) or closed (False).
    state_changed(str): "off", "listening", "hearing" or "paused" (see STATES).
    notice(str): something the user should read (no microphone, a device went away).
    """

    speech_started = Signal()
    heard = Signal(object)
    sound = Signal(object, bool)
    recording_finished = Signal(object)
    speech_dropped = Signal()
    listening_changed = Signal(bool)
    state_changed = Signal(str)
    notice = Signal(str)

    def __init__(
        self,
        settings: QSettings,
        stream_factory: StreamFactory | None,
        level_meter: QProgressBar,
        window: QWidget,
        probability: Callable[[], Probability] = SileroVad,
    ) -> None:
        """`probability` makes the voice activity model (tests give a simpler one)."""
        super().__init__(window)
        self._settings = settings
        self._stream_factory = stream_factory
        self._make_probability = probability
        self._probability: Probability | None = None
        self._level_meter = level_meter
        self.microphone: Microphone | None = None
        self._voice: VoiceActivity | None = None
        self._headphones = False  # the preferences', read again at each poll between utterances
        self._assistant_speaking = False
        self._ignored_left = 0  # samples still to ignore: the room's echo of the assistant
        self._state = "off"
        self._told = 0  # samples of the utterance already told by `heard`

        self.button = QPushButton("Hands-free")
        set_icon(self.button, "hands-free")
        self.button.setCheckable(True)
        self.button.setToolTip(STATES["off"])
        self.button.toggled.connect(self._on_toggled)
        self._timer = QTimer(self)
        self._timer.setInterval(MIC_POLL_MS)
        self._timer.timeout.connect(self._on_poll_due)
        if Preferences.load(settings).hands_free:  # on again, once the window has connected its signals
            QTimer.singleShot(0, self._on_restore_due)

    @property
    def state(self) -> str:
        return self._state

    @Slot(bool)
    def set_assistant_speaking(self, speaking: bool) -> None:
        """The assistant's speech started (True) or stopped (False) playing."""
        if speaking == self._assistant_speaking:
            return
        self._refresh()
        if speaking and not self._headphones and self._voice is not None:
            self._on_poll_due()  # what the user said until the speakers began to sound in it
            ended = self._voice.interrupt()
            if ended is not None:
                self._send(ended)
        self._assistant_speaking = speaking
        self._ignored_left = 0 if speaking or self._headphones else round(ECHO_TAIL_S * INPUT_SAMPLE_RATE)
        self._show_state()

    def close(self) -> None:
        """Stop listening at once, keeping nothing (the window is closing)."""
        self._timer.stop()
        if self.microphone is not None:
            self.microphone.stop()
            self.microphone = None

    @Slot()
    def _on_restore_due(self) -> None:
        self.button.setChecked(True)

    @Slot(bool)
    def _on_toggled(self, on: bool) -> None:
        self._settings.setValue(HANDS_FREE_KEY, "true" if on else "false")
        if on:
            self._start()
        else:
            self._stop()

    def _start(self) -> None:
        preferences = Preferences.load(self._settings)
        try:
            if self._probability is None:
                self._probability = self._make_probability()
            self.microphone = Microphone(preferences.input_device or None, self._stream_factory)
        except OmnideskError as exc:
            self.notice.emit(f"{exc}. Type your question instead.")
            self.button.setChecked(False)
            return
        self._voice = VoiceActivity(self._probability)
        self._voice.reset()
        self._refresh()
        self._ignored_left = 0
        self._level_meter.setValue(0)
        self._timer.start()
        self._show_state()
        self.listening_changed.emit(True)

    def _stop(self) -> None:
        """Stop listening; what the user was saying is dropped (they turned it off mid-sentence)."""
        if self.microphone is None:
            return
        self.close()
        if self._voice is not None and self._voice.hearing:
            self.speech_dropped.emit()
        self._voice = None
        self._show_state()
        self.listening_changed.emit(False)

    @Slot()
    def _on_poll_due(self) -> None:
        microphone, voice = self.microphone, self._voice
        if microphone is None or voice is None:
            return
        try:
            notice = microphone.poll()
        except DeviceLost as exc:
            self.notice.emit(str(exc))
            self.button.setChecked(False)
            return
        if notice:
            self.notice.emit(notice)
        self._level_meter.setValue(meter_percent(microphone.level.peak))
        self._refresh()
        samples = microphone.take()
        if self._ignoring():  # the assistant's voice, or its echo in the room
            skipped = len(samples) if self._assistant_speaking else min(self._ignored_left, len(samples))
            self._ignored_left = max(0, self._ignored_left - skipped)
            samples = samples[skipped:]
        for event in voice.feed(samples):
            if isinstance(event, SpeechStarted):
                self._told = 0
                self.speech_started.emit()
            elif isinstance(event, SpeechEnded):
                self._send(event)
        if len(samples):
            self.sound.emit(samples, voice.hearing)
        if voice.hearing:
            fresh = voice.utterance_since(self._told)
            self._told += len(fresh)
            if len(fresh):
                self.heard.emit(fresh)
        self._show_state()

    def _ignoring(self) -> bool:
        """What the microphone hears now may be the assistant's own voice."""
        return not self._headphones and (self._assistant_speaking or self._ignored_left > 0)

    def _send(self, ended: SpeechEnded) -> None:
        self.recording_finished.emit(Audio(ended.samples))

    def _refresh(self) -> None:
        """Put the settings into effect, unless the user is speaking (they may change in Settings
        at any time; reading them takes about 20 µs)."""
        voice = self._voice
        if voice is None or voice.hearing:
            return
        preferences = Preferences.load(self._settings)
        self._headphones = preferences.headphones
        voice.options = VoiceOptions(silence_s=preferences.silence_s)

    def _show_state(self) -> None:
        if self.microphone is None:
            state = "off"
        elif self._voice is not None and self._voice.hearing:
            state = "hearing"
        elif self._ignoring():
            state = "paused"
        else:
            state = "listening"
        self._level_meter.setVisible(self.microphone is not None)
        if state != self._state:
            self._state = state
            # In words here; on the button, on shows as its checked look, which moves nothing.
            self.button.setToolTip(STATES[state])
            self.button.setAccessibleDescription(STATES[state])
            self.state_changed.emit(state)
