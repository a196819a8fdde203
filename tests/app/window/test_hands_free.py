"""Hands-free on its own, with a fake microphone and a voice activity model that takes loud sound for
speech: the toggle, utterances sent, the assistant's own voice ignored (or, with headphones, heard and
interrupting), devices missing or lost; then in the window: push-to-talk resting while it listens."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QProgressBar, QVBoxLayout, QWidget

from app.sound.playback import PlaybackState
from app.sound.voice_activity import FRAME
from app.window.hands_free import ECHO_TAIL_S, HandsFree
from app.window.main_window import Devices, MainWindow
from app.window.preferences import HANDS_FREE_KEY, HEADPHONES_KEY, SILENCE_KEY, Preferences
from app.worker import ConversationWorker
from model.talker import SpeechOptions
from tests.app.fakes import REAL_TIME_S, FakeInputStream, MicrophoneFactory
from tests.app.windows import (
    MAX_TOKENS,
    SPEECH,
    TIMEOUT_MS,
    RecordingSink,
    kept_recordings,
    load,
    open_window,
)

WAIT_MS = 5_000
RATE = 16_000


def loud_is_speech(frame: np.ndarray) -> float:
    return 0.9 if np.max(np.abs(frame)) > 0.1 else 0.0


def loud(seconds: float) -> np.ndarray:
    return np.full(int(seconds * RATE), 0.3, np.float32)


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


@pytest.fixture
def alone(qtbot, settings):
    """A HandsFree in a window of its own, with a fake microphone; the signals it sent, in order."""

    def make(factory: MicrophoneFactory | None = None):
        window = QWidget()
        qtbot.addWidget(window)
        factory = factory or MicrophoneFactory()
        meter = QProgressBar()
        hands_free = HandsFree(settings, factory, meter, window, probability=lambda: loud_is_speech)
        layout = QVBoxLayout(window)
        layout.addWidget(hands_free.button)
        layout.addWidget(meter)
        told: list = []
        hands_free.speech_started.connect(lambda: told.append("started"))
        hands_free.recording_finished.connect(told.append)
        hands_free.listening_changed.connect(lambda on: told.append("open" if on else "closed"))
        hands_free.notice.connect(lambda text: told.append(f"notice: {text}"))
        made.append(hands_free)
        return hands_free, factory, told, window

    made: list[HandsFree] = []
    yield make
    for hands_free in made:
        if shiboken6.isValid(hands_free):
            hands_free.close()


def say(qtbot, factory: MicrophoneFactory, *pieces: np.ndarray) -> None:
    """What the microphone hears next, taken in by the next polls."""
    stream = factory.streams[-1]
    for piece in pieces:
        stream.push(piece)
        qtbot.wait(60)


class TestToggle:
    def test_on_it_listens_off_it_stops_and_the_choice_is_remembered(self, qtbot, alone, settings):
        hands_free, factory, told, window = alone()
        assert hands_free.state == "off" and hands_free.microphone is None
        hands_free.button.click()
        assert hands_free.microphone is not None and hands_free.state == "listening"
        assert settings.value(HANDS_FREE_KEY) == "true" and told == ["open"]
        hands_free.button.click()
        assert hands_free.microphone is None and factory.streams[0].closed and hands_free.state == "off"
        assert settings.value(HANDS_FREE_KEY) == "false" and told == ["open", "closed"]

    def test_remembered_on_it_listens_again_at_the_next_start(self, qtbot, alone, settings):
        settings.setValue(HANDS_FREE_KEY, "true")
        hands_free, factory, told, _ = alone()
        assert hands_free.microphone is None, "not before the window has connected its signals"
        qtbot.waitUntil(lambda: told == ["open"], timeout=WAIT_MS)
        assert hands_free.button.isChecked() and len(factory.streams) == 1

    def test_without_a_microphone_it_says_so_and_turns_off(self, qtbot, alone, settings):
        hands_free, _, told, _ = alone(MicrophoneFactory(unplugged={None}))
        hands_free.button.click()
        assert not hands_free.button.isChecked() and hands_free.microphone is None
        (notice,) = told
        assert notice.startswith("notice: cannot open the microphone") and notice.endswith(
            "Type your question instead."
        )
        assert settings.value(HANDS_FREE_KEY) == "false"

    def test_a_microphone_that_goes_away_turns_it_off(self, qtbot, alone):
        hands_free, _, told, _ = alone(MicrophoneFactory(np.zeros(40 * 320, np.float32), unplug_after=5))
        hands_free.button.click()
        qtbot.waitUntil(lambda: not hands_free.button.isChecked(), timeout=WAIT_MS)
        assert told[0] == "open" and told[1].startswith("notice: The microphone (the system default) stopped")
        assert told[2] == "closed" and hands_free.microphone is None


class TestUtterances:
    def test_speech_is_told_when_it_starts_and_sent_when_it_ends(self, qtbot, alone):
        hands_free, factory, told, _ = alone()
        hands_free.button.click()
        said = loud(0.6)
        say(qtbot, factory, quiet(0.5), said)
        qtbot.waitUntil(lambda: "started" in told, timeout=WAIT_MS)
        assert hands_free.state == "hearing"
        say(qtbot, factory, quiet(1.0))
        qtbot.waitUntil(lambda: len(told) == 3, timeout=WAIT_MS)
        opened, started, recording = told
        assert (opened, started) == ("open", "started")
        samples = recording.samples
        assert np.count_nonzero(samples) == len(said), "all of the speech"
        pre_roll = 10 * FRAME  # 0.3 s in whole frames; the speech began inside the next one
        assert pre_roll <= np.argmax(samples != 0) < pre_roll + FRAME, "with its pre-roll"
        assert hands_free.state == "listening" and hands_free.microphone is not None, "and it listens on"

    def test_the_silence_that_ends_speech_is_a_setting(self, qtbot, alone, settings):
        settings.setValue(SILENCE_KEY, "1.5")
        hands_free, factory, told, _ = alone()
        hands_free.button.click()
        say(qtbot, factory, loud(0.5), quiet(1.0), loud(0.5), quiet(1.7))
        qtbot.waitUntil(lambda: len(told) == 3, timeout=WAIT_MS)
        assert told[1] == "started" and np.count_nonzero(told[2].samples) == 2 * 8_000, "one utterance"
        settings.setValue(SILENCE_KEY, "0.8")  # changed in Settings: from the next utterance on
        say(qtbot, factory, loud(0.5), quiet(1.0), loud(0.5), quiet(1.0))
        qtbot.waitUntil(lambda: len(told) == 7, timeout=WAIT_MS)
        assert [t for t in told[3:] if isinstance(t, str)] == ["started", "started"], "two utterances"


class TestTheAssistantsVoice:
    def test_without_headphones_it_is_not_heard_nor_its_echo(self, qtbot, alone):
        hands_free, factory, told, _ = alone()
        hands_free.button.click()
        hands_free.set_assistant_speaking(True)
        assert hands_free.state == "paused"
        say(qtbot, factory, loud(1.0), quiet(1.0))
        hands_free.set_assistant_speaking(False)
        say(qtbot, factory, loud(ECHO_TAIL_S - 0.1), quiet(1.0))  # the room's echo, just after
        assert told == ["open"], "neither started a turn"
        assert hands_free.state == "listening"
        say(qtbot, factory, loud(0.5), quiet(1.0))
        qtbot.waitUntil(lambda: len(told) == 3, timeout=WAIT_MS)
        assert told[1] == "started" and np.count_nonzero(told[2].samples) == 8_000, "the user, heard again"

    def test_what_the_user_said_before_the_assistant_spoke_is_sent(self, qtbot, alone):
        hands_free, factory, told, _ = alone()
        hands_free.button.click()
        say(qtbot, factory, loud(0.5))
        qtbot.waitUntil(lambda: "started" in told, timeout=WAIT_MS)
        hands_free.set_assistant_speaking(True)
        assert told[2].samples.size and np.count_nonzero(told[2].samples) == 8_000

    def test_with_headphones_speaking_over_it_is_heard(self, qtbot, alone, settings):
        settings.setValue(HEADPHONES_KEY, "true")
        hands_free, factory, told, _ = alone()
        hands_free.button.click()
        hands_free.set_assistant_speaking(True)
        assert hands_free.state == "listening"
        say(qtbot, factory, loud(0.5))
        qtbot.waitUntil(lambda: "started" in told, timeout=WAIT_MS)
        say(qtbot, factory, quiet(1.0))
        qtbot.waitUntil(lambda: len(told) == 3, timeout=WAIT_MS)
        assert np.count_nonzero(told[2].samples) == 8_000


def test_the_window_says_the_microphone_is_paused_while_the_reply_speaks(qtbot, settings, history_store):
    """Without headphones the microphone is deaf while the reply speaks: the window had said
    "● Microphone on", and a follow-up asked then was dropped without a word."""
    window = open_window(qtbot, settings, history_store, Devices(microphone_stream=MicrophoneFactory()))
    window.hands_free.button.click()
    assert window.status_line.in_use.text() == "● Microphone on"
    window.hands_free.set_assistant_speaking(True)
    assert window.status_line.in_use.text() == "● Microphone paused"
    assert "not listening while Omnidesk speaks" in window.hands_free.button.toolTip()
    window.close()


def test_preferences_of_hands_free_round_trip_and_bad_values_fall_back(settings):
    chosen = Preferences(hands_free=True, silence_s=1.2, headphones=True)
    chosen.save(settings)
    assert Preferences.load(settings) == chosen
    for bad in ("soon", "0.05", "60", "nan"):
        settings.setValue(SILENCE_KEY, bad)
        assert Preferences.load(settings).silence_s == Preferences().silence_s


class TestInTheWindow:
    def test_push_to_talk_rests_while_hands_free_listens(self, qtbot, settings, history_store):
        window = open_window(qtbot, settings, history_store, Devices(microphone_stream=MicrophoneFactory()))
        window.show()
        talk, hands_free = window.push_to_talk, window.hands_free
        hands_free.button.click()
        assert hands_free.microphone is not None and window.status_line.in_use.text() == "● Microphone on"
        assert hands_free.button.isChecked() and hands_free.button.accessibleDescription().startswith(
            "Hands-free: listening"
        ), "on, in words (for screen readers and the tooltip) as well as the button's look"
        assert not talk.button.isEnabled()
        window.chat_view.setFocus()
        qtbot.keyPress(window.chat_view, Qt.Key.Key_Space)
        assert talk.microphone is None and not talk.talking, "the key is left to the window"
        qtbot.keyRelease(window.chat_view, Qt.Key.Key_Space)
        hands_free.button.click()
        assert talk.button.isEnabled() and not window.status_line.in_use.isVisibleTo(window)
        assert not hands_free.button.isChecked() and hands_free.button.text() == "Hands-free"
        qtbot.keyPress(window.chat_view, Qt.Key.Key_Space)
        assert talk.talking
        qtbot.keyRelease(window.chat_view, Qt.Key.Key_Space)
        qtbot.waitUntil(lambda: not talk.talking, timeout=WAIT_MS)
        window.close()


@pytest.fixture(scope="module")
def second_question(tmp_path_factory) -> np.ndarray:
    """Another question spoken by espeak-ng, as float32 samples at 16 kHz."""
    import subprocess

    from model.audio_features import load_audio

    path = tmp_path_factory.mktemp("speech") / "second.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "And what should I do about it?"], check=True)
    return load_audio(path)


class Speakers(RecordingSink):
    """Stands in for the speakers, whose sound the microphone hears: from the reply's first audio the
    microphone hears `echo` as fast as it is spoken, then silence, and the speakers say they play
    until that is over (the window learns it through its SpeechWatch, as from real speakers).
    Written from the worker's thread."""

    def __init__(self, echo: np.ndarray) -> None:
        super().__init__()
        self.echo = echo
        self.microphone: FakeInputStream | None = None
        self._speaking: threading.Thread | None = None

    def write(self, samples) -> None:
        super().write(samples)
        if self._speaking is None and self.microphone is not None:
            self._speaking = threading.Thread(target=self._speak, daemon=True)
            self._speaking.start()

    def _speak(self) -> None:
        assert self.microphone is not None
        self.microphone.speak(np.concatenate([self.echo, quiet(1.0)])).join()

    def state(self) -> PlaybackState:
        playing = self._speaking is not None and self._speaking.is_alive()
        return replace(super().state(), pending=playing, playing=playing)

    @property
    def done(self) -> bool:
        return self._speaking is not None and not self._speaking.is_alive()


# Speech that goes on for seconds after its first sound (the tiny model's 60 codes last 0.3 s here).
LONG_SPEECH = replace(SPEECH, max_codes=600, min_codes=500)


def spoken_window(
    qtbot, settings, history_store, factory: MicrophoneFactory, sink, speech: SpeechOptions = SPEECH
):
    worker = ConversationWorker(max_tokens=MAX_TOKENS, speech=speech, sink_factory=lambda rate: sink)
    window = MainWindow(settings, worker, history_store, Devices(microphone_stream=factory))
    qtbot.addWidget(window)
    return window


def nothing_wrong_reached_the_user(window: MainWindow, capfd) -> None:
    shown = window.notices.label.text() + window.chat_view.toPlainText() + capfd.readouterr().err
    for wrong in ("Traceback", "TypeError", "ALSA lib", "Expression '"):
        assert wrong not in shown


class TestConversations:
    """The window on the tiny bundle, hands-free, with Silero VAD hearing espeak-ng's questions."""

    def test_two_questions_with_a_pause_between_are_two_turns(
        self, qtbot, settings, history_store, tiny_bundle, spoken_samples, second_question, questions, capfd
    ):
        heard = np.concatenate([quiet(0.5), spoken_samples, quiet(2.0), second_question, quiet(1.5)])
        factory = MicrophoneFactory(heard, pace_s=REAL_TIME_S)
        window = spoken_window(qtbot, settings, history_store, factory, RecordingSink())
        load(qtbot, window, tiny_bundle)
        reasons: list[str] = []
        window.session.reply_completed.connect(reasons.append)
        chip_states: list[str] = []
        window.hands_free.state_changed.connect(lambda _: chip_states.append(window.activity_chip.activity))
        window.hands_free.button.click()
        qtbot.waitUntil(lambda: len(reasons) == 2, timeout=TIMEOUT_MS)
        assert reasons[1] in ("end", "length"), reasons  # the first may be cut by the second question
        assert "listening" in chip_states, "the chip says Listening while it hears the user"
        assert [q.text for q in questions] == ["", ""] and all(len(q.audios) == 1 for q in questions)
        for question, said in zip(questions, (spoken_samples, second_question), strict=True):
            spoken = np.flatnonzero(np.abs(said) > 0.02)
            speech_s = (spoken[-1] - spoken[0]) / 16_000
            assert speech_s < question.audios[0].seconds < speech_s + 1.0, "each question whole, once"
        assert len(kept_recordings(window)) == 2
        assert window.hands_free.microphone is not None, "it listens on"
        nothing_wrong_reached_the_user(window, capfd)
        window.close()

    @pytest.mark.parametrize("headphones", [False, True])
    def test_the_assistants_own_voice_starts_no_turn_unless_the_user_wears_headphones(
        self, qtbot, settings, history_store, tiny_bundle, second_question, questions, capfd, headphones
    ):
        """Without headphones, what the microphone hears while speech plays is the assistant's own voice
        and is ignored; with headphones it can only be the user, and speaking over the reply interrupts
        it and asks the next question."""
        settings.setValue(HEADPHONES_KEY, "true" if headphones else "false")
        speakers = Speakers(second_question)
        factory = MicrophoneFactory()
        window = spoken_window(qtbot, settings, history_store, factory, speakers, LONG_SPEECH)
        load(qtbot, window, tiny_bundle)
        window.hands_free.button.click()
        speakers.microphone = factory.streams[0]
        factory.streams[0].speak(quiet(60.0))  # the room, quiet, as long as the test runs
        told: list = []
        window.hands_free.speech_started.connect(lambda: told.append("started"))
        window.hands_free.state_changed.connect(told.append)
        reasons: list[str] = []
        window.session.reply_completed.connect(reasons.append)
        window.composer.question_box.setPlainText("Tell me a long story")
        window.composer.send_button.click()
        qtbot.waitUntil(lambda: speakers.done and len(reasons) == len(questions), timeout=TIMEOUT_MS)
        qtbot.wait(500)
        if headphones:
            assert (
                "started" in told
                and reasons[0] == "cancelled"
                and "(interrupted)" in window.chat_view.toPlainText()
            )
            assert [q.text for q in questions] == ["Tell me a long story", ""] and len(
                questions[1].audios
            ) == 1
        else:
            assert "paused" in told and "started" not in told, "the microphone was not listened to"
            assert reasons[0] in ("end", "length") and [q.text for q in questions] == ["Tell me a long story"]
        nothing_wrong_reached_the_user(window, capfd)
        window.close()
