"""Look and listen while the user speaks, in the window on the tiny bundle: a picture attached is encoded
at once, the question's 2 s blocks are encoded and in the Thinker's cache before the release (through a
real PulseAudio microphone, and hands-free with Silero VAD), the result equals encoding at release, an
unchanged screen is not encoded twice, and a press with no question leaves nothing behind."""

from __future__ import annotations

import subprocess
import threading

import numpy as np
import pytest
from PySide6.QtCore import Qt, QTimer

from app.window.main_window import Devices, MainWindow
from app.window.preferences import INPUT_DEVICE_KEY
from model.audio_features import load_audio
from model.media import Image
from model.pipeline import Listening
from model.vision import FrameEncoder
from tests.app.fakes import REAL_TIME_S, MicrophoneFactory
from tests.app.windows import TIMEOUT_MS, RecordingSink, load, open_window
from tests.helpers import photo_like

BLOCK_S = 2.0  # the audio encoder's block


@pytest.fixture(scope="module")
def long_question(tmp_path_factory) -> np.ndarray:
    """A question of about 4 s spoken by espeak-ng (float32 at 16 kHz), 1 s of quiet after it."""
    path = tmp_path_factory.mktemp("speech") / "long_question.wav"
    words = "Please look at my screen and tell me what the window in the middle of it shows."
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), words], check=True)
    samples = load_audio(path)
    assert len(samples) > 2 * BLOCK_S * 16_000, "long enough for two whole blocks"
    return np.concatenate([samples, np.zeros(16_000, np.float32)])


class Spy:
    """What the worker did: pictures encoded (their shapes), and for each listened question, what was in
    the Thinker's cache at the release and the media it used (compared then with encoding at release)."""

    def __init__(self, monkeypatch) -> None:
        self.encoded: list[tuple[int, ...]] = []
        self.released: list[dict] = []
        encode, media = FrameEncoder.encode, Listening.media

        def encode_spy(encoder, image):
            self.encoded.append(image.pixels.shape)
            return encode(encoder, image)

        def media_spy(listening, question):
            blocks, cached = listening.blocks_encoded, listening._thinker.n_cached
            used = media(listening, question)
            self.released.append({"blocks": blocks, "cached": cached, "media": used, "question": question})
            return used

        monkeypatch.setattr(FrameEncoder, "encode", encode_spy)  # whichever encoder the plan picks
        monkeypatch.setattr(Listening, "media", media_spy)


@pytest.fixture
def spy(monkeypatch) -> Spy:
    return Spy(monkeypatch)


def conversation(window: MainWindow):
    return window.worker._conversation


def idle(qtbot, window: MainWindow) -> None:
    """Wait until the worker's thread has taken every queued call (a blocking no-op reaches it last)."""
    done = threading.Event()
    QTimer.singleShot(0, window.worker, done.set)  # runs on the worker's thread, after what is queued
    qtbot.waitUntil(done.is_set, timeout=TIMEOUT_MS)


def ready_window(qtbot, settings, history_store, bundle, samples: np.ndarray) -> MainWindow:
    """A window on `bundle` whose microphone says `samples` at real time, its model loaded and its system
    prompt decoded (which follows the loaded signal)."""
    factory = MicrophoneFactory(samples, pace_s=REAL_TIME_S)
    window = open_window(qtbot, settings, history_store, Devices(microphone_stream=factory))
    load(qtbot, window, bundle)
    idle(qtbot, window)
    return window


def cache_keys(window: MainWindow) -> tuple[object, ...]:
    """What the Thinker's cache holds, position by position (read while the worker is idle)."""
    thinker = conversation(window).thinker
    return thinker.states(0, thinker.n_cached).keys


def heard_a_block(window: MainWindow) -> bool:
    """The worker listens and has encoded a whole block (read here, set on the worker's thread)."""
    listening = window.worker._listening
    return listening is not None and listening[1].blocks_encoded >= 1


def assert_equal_to_encoding_at_release(window: MainWindow, released: dict) -> None:
    at_release = conversation(window).perception.encode(released["question"])
    for ours, theirs in zip(released["media"], at_release, strict=True):
        assert ours.grid == theirs.grid
        assert np.array_equal(ours.embeddings, theirs.embeddings), "bitwise the encoding at release"


class TestPushToTalk:
    def test_a_screen_question_is_encoded_while_it_is_spoken(
        self, qtbot, settings, history_store, tiny_bundle, long_question, sound_server, spy
    ):
        """Through PulseAudio's microphone: the screen shot is encoded when attached, and the recording's
        whole blocks are in the cache before the key is let go."""
        settings.setValue(INPUT_DEVICE_KEY, "pulse:virtmic")
        window = open_window(qtbot, settings, history_store, Devices(), RecordingSink())
        load(qtbot, window, tiny_bundle)
        screen = photo_like(300, 480, seed=1)
        window.composer.attachments.add(Image(screen), "Screen")
        idle(qtbot, window)
        assert spy.encoded == [screen.shape], "encoded when attached, before any question"
        before = conversation(window).thinker.n_cached

        qtbot.mousePress(window.push_to_talk.button, Qt.MouseButton.LeftButton)
        speaking = threading.Thread(target=sound_server.say, args=(long_question,))
        speaking.start()
        qtbot.waitUntil(lambda: not speaking.is_alive(), timeout=TIMEOUT_MS)
        qtbot.wait(300)  # the last polls
        with qtbot.waitSignal(window.session.reply_completed, timeout=TIMEOUT_MS) as reply:
            qtbot.mouseRelease(window.push_to_talk.button, Qt.MouseButton.LeftButton)
        assert reply.args[0] in ("end", "length")

        (released,) = spy.released
        (recording,) = released["question"].audios
        assert recording.seconds > 2 * BLOCK_S and np.max(np.abs(recording.samples)) > 0.1, "heard it"
        assert released["blocks"] >= 2, "whole blocks were encoded while the user spoke"
        picture_tokens = len(released["media"][0].embeddings)
        assert released["cached"] >= before + picture_tokens + released["blocks"] * 50
        assert spy.encoded == [screen.shape], "the picture was not encoded again at the release"
        assert_equal_to_encoding_at_release(window, released)
        window.close()

    def test_a_slip_of_the_finger_leaves_nothing_behind(
        self, qtbot, settings, history_store, tiny_bundle, spoken_samples
    ):
        window = ready_window(qtbot, settings, history_store, tiny_bundle, spoken_samples)
        window.composer.attachments.add(Image(photo_like(200, 300, seed=2)), "Screen")
        idle(qtbot, window)
        kept = cache_keys(window)
        with qtbot.assertNotEmitted(window.session.question_asked):
            qtbot.mousePress(window.push_to_talk.button, Qt.MouseButton.LeftButton)
            qtbot.wait(150)
            qtbot.mouseRelease(window.push_to_talk.button, Qt.MouseButton.LeftButton)
            idle(qtbot, window)
        assert "too short" in window.notices.label.text()
        assert window.worker._listening is None, "nothing heard or seen is kept"
        assert cache_keys(window) == kept, "the cache is as it was"
        window.close()

    def test_escape_while_talking_sends_nothing_and_leaves_nothing_behind(
        self, qtbot, settings, history_store, tiny_bundle, long_question
    ):
        window = ready_window(qtbot, settings, history_store, tiny_bundle, long_question)
        window.show()
        window.chat_view.setFocus()
        kept = cache_keys(window)
        with qtbot.assertNotEmitted(window.session.question_asked):
            qtbot.keyPress(window.chat_view, Qt.Key.Key_Space)
            qtbot.waitUntil(lambda: heard_a_block(window), timeout=TIMEOUT_MS)
            qtbot.keyPress(window.chat_view, Qt.Key.Key_Escape)
            qtbot.keyRelease(window.chat_view, Qt.Key.Key_Space)
            qtbot.wait(200)
            idle(qtbot, window)
        assert "cancelled" in window.notices.label.text() and window.push_to_talk.microphone is None
        assert window.worker._listening is None and window.composer.attachments.media == []
        assert cache_keys(window) == kept, "the cache is as it was"
        window.close()

    def test_an_unchanged_screen_is_not_encoded_twice(
        self, qtbot, settings, history_store, tiny_bundle, long_question, spy
    ):
        window = open_window(
            qtbot, settings, history_store, Devices(microphone_stream=MicrophoneFactory(long_question))
        )
        load(qtbot, window, tiny_bundle)
        screen = photo_like(300, 480, seed=3)
        for question in ("What is this?", "And now?"):
            window.composer.attachments.add(Image(screen.copy()), "Screen")  # shot again, same pixels
            window.composer.question_box.setPlainText(question)
            with qtbot.waitSignal(window.session.reply_completed, timeout=TIMEOUT_MS):
                window.composer.send_button.click()
        assert spy.encoded == [screen.shape]
        window.close()


class TestHandsFree:
    def test_the_utterance_is_encoded_while_it_is_spoken(
        self, qtbot, settings, history_store, tiny_bundle, long_question, spy
    ):
        """Silero VAD hears espeak-ng's question: its blocks are encoded from speech start on; the
        recording sent (without the trailing silence) is encoded exactly as at release."""
        heard = np.concatenate([np.zeros(8_000, np.float32), long_question, np.zeros(32_000, np.float32)])
        factory = MicrophoneFactory(heard, pace_s=REAL_TIME_S)
        window = open_window(qtbot, settings, history_store, Devices(microphone_stream=factory))
        load(qtbot, window, tiny_bundle)
        with qtbot.waitSignal(window.session.reply_completed, timeout=TIMEOUT_MS):
            window.hands_free.button.click()
        (released,) = spy.released
        assert released["blocks"] >= 2, "whole blocks were encoded while the user spoke"
        assert_equal_to_encoding_at_release(window, released)
        window.hands_free.button.click()
        window.close()
