"""What a question sees, in the window (offscreen, no model): the screen shot and the camera frame
attached at the press, the very pictures the worker's Look carries, withdrawn when no question comes
of the press; a typed question's shot taken at Send; the Share screen toggle remembered. Then on a
real X screen with a real sound server and the tiny bundle: the shot is the press's."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

import app.capture.screen
from app.window.main_window import Devices, MainWindow
from app.window.preferences import SHARE_SCREEN_KEY
from app.window.press_shots import SHARE_TIPS
from app.worker import Look
from model.media import Audio, Image
from tests.app.fakes import REAL_TIME_S, FakeCapture, MicrophoneFactory
from tests.app.window.look_at_the_press import SHOWN_AT_PRESS, SHOWN_AT_RELEASE
from tests.app.window.on_an_x_screen import run_on_an_x_screen
from tests.app.windows import TIMEOUT_MS, open_window
from tests.helpers import photo_like

SECOND = np.full(16_000, 0.3, np.float32)  # long enough to be sent


def window_with(qtbot, settings, history_store, sharing: bool, samples=None) -> MainWindow:
    settings.setValue(SHARE_SCREEN_KEY, "true" if sharing else "false")
    devices = Devices(microphone_stream=MicrophoneFactory(samples), camera_source=lambda index: FakeCapture())
    return open_window(qtbot, settings, history_store, devices)


def press(qtbot, window: MainWindow) -> Look:
    """Hold the talk button; the Look the worker is given."""
    with qtbot.waitSignal(window.listening_begun, timeout=TIMEOUT_MS) as begun:
        qtbot.mousePress(window.push_to_talk.button, Qt.MouseButton.LeftButton)
    return begun.args[0]


def release(qtbot, window: MainWindow) -> None:
    qtbot.mouseRelease(window.push_to_talk.button, Qt.MouseButton.LeftButton)


class TestTheToggle:
    def test_it_is_off_at_first_and_remembered(self, qtbot, settings, history_store):
        window = window_with(qtbot, settings, history_store, sharing=False)
        button = window.press_shots.share_button
        assert not button.isChecked() and button.toolTip() == SHARE_TIPS[False]
        assert not window.status_line.in_use.isVisibleTo(window)
        button.click()
        assert button.toolTip() == SHARE_TIPS[True] and settings.value(SHARE_SCREEN_KEY) == "true"
        assert window.status_line.in_use.text() == "● Screen shared", "said in red, as the camera is"
        window.close()
        again = open_window(qtbot, settings, history_store, Devices(microphone_stream=MicrophoneFactory()))
        assert again.press_shots.share_button.isChecked()
        assert again.status_line.in_use.text() == "● Screen shared"
        again.close()


class TestAPress:
    def test_sharing_the_screen_attaches_a_shot_that_the_look_carries(self, qtbot, settings, history_store):
        window = window_with(qtbot, settings, history_store, sharing=True)
        look = press(qtbot, window)
        (shot,) = window.composer.attachments.media
        assert isinstance(shot, Image) and window.composer.attachments.labels() == ["Screen"]
        screen = window.screen().size()
        assert shot.pixels.shape == (screen.height(), screen.width(), 3), "the whole screen"
        assert look.images[0] is shot, "the worker encodes the very picture the question will carry"
        release(qtbot, window)
        window.close()

    def test_not_sharing_it_attaches_nothing(self, qtbot, settings, history_store):
        window = window_with(qtbot, settings, history_store, sharing=False)
        look = press(qtbot, window)
        assert look.images == () and window.composer.attachments.media == []
        release(qtbot, window)
        window.close()

    def test_the_camera_showing_gives_its_frame_after_the_pictures_attached_before(
        self, qtbot, settings, history_store
    ):
        window = window_with(qtbot, settings, history_store, sharing=True)
        attached = Image(photo_like(60, 80, seed=1))
        window.composer.attachments.add(attached, "photo.png")
        window.camera_panel.button.click()
        qtbot.waitUntil(lambda: window.camera_panel.camera.image() is not None, timeout=TIMEOUT_MS)
        look = press(qtbot, window)
        assert window.composer.attachments.labels() == ["photo.png", "Screen", "Camera"]
        assert list(look.images) == window.composer.attachments.media
        assert look.images[2].pixels.shape == (240, 320, 3), "the camera's frame"
        release(qtbot, window)
        window.close()

    def test_a_screen_that_cannot_be_captured_is_told_and_the_question_goes_without_it(
        self, qtbot, settings, history_store, monkeypatch
    ):
        class Refusing:  # macOS without the Screen Recording permission
            def CGPreflightScreenCaptureAccess(self) -> bool:  # noqa: N802 (Apple's name)
                return False

            def CGRequestScreenCaptureAccess(self) -> bool:  # noqa: N802 (Apple's name)
                return False

        monkeypatch.setattr(app.capture.screen.sys, "platform", "darwin")
        monkeypatch.setattr(app.capture.screen, "core_graphics", Refusing)
        window = window_with(qtbot, settings, history_store, sharing=True)
        look = press(qtbot, window)
        assert look.images == () and "Screen Recording" in window.notices.label.text()
        assert window.push_to_talk.microphone is not None, "the question is heard all the same"
        release(qtbot, window)
        window.close()


class TestNoQuestion:
    """A press that ends with no question withdraws its pictures; the user's own stay."""

    @pytest.fixture
    def window(self, qtbot, settings, history_store):
        window = window_with(qtbot, settings, history_store, sharing=True)
        yield window
        window.close()

    def test_a_slip_of_the_finger(self, qtbot, window: MainWindow):
        attached = Image(photo_like(60, 80, seed=2))
        window.composer.attachments.add(attached, "photo.png")
        press(qtbot, window)
        assert len(window.composer.attachments.media) == 2
        with qtbot.waitSignal(window.push_to_talk.recording_dropped, timeout=TIMEOUT_MS):
            release(qtbot, window)
        assert window.composer.attachments.media == [attached]

    def test_escape_while_talking(self, qtbot, window: MainWindow):
        window.show()
        window.chat_view.setFocus()
        with qtbot.waitSignal(window.listening_begun, timeout=TIMEOUT_MS):
            qtbot.keyPress(window.chat_view, Qt.Key.Key_Space)
        assert window.composer.attachments.labels() == ["Screen"]
        qtbot.keyPress(window.chat_view, Qt.Key.Key_Escape)
        qtbot.keyRelease(window.chat_view, Qt.Key.Key_Space)
        assert window.composer.attachments.media == [] and "cancelled" in window.notices.label.text()

    def test_the_shot_removed_by_the_user_while_talking(self, qtbot, window: MainWindow):
        press(qtbot, window)
        (shot,) = window.composer.attachments.media
        window.composer.attachments.discard(shot)  # as a click on its thumbnail does
        release(qtbot, window)
        assert window.composer.attachments.media == []


class TestATypedQuestion:
    def ask(self, qtbot, window: MainWindow, text: str):
        """Send `text` as if a model could answer it; the Ask the worker is given."""
        window.composer.set_missing("")
        window.composer.question_box.setPlainText(text)
        with qtbot.waitSignal(window.session.question_asked, timeout=TIMEOUT_MS) as asked:
            window.composer.send_button.click()
        return asked.args[0]

    def test_sharing_the_screen_it_carries_a_shot_taken_at_send(self, qtbot, settings, history_store):
        window = window_with(qtbot, settings, history_store, sharing=True)
        ask = self.ask(qtbot, window, "What is this?")
        (shot,) = ask.question.images
        screen = window.screen().size()
        assert shot.pixels.shape == (screen.height(), screen.width(), 3)
        assert window.composer.attachments.media == [], "taken with the question"
        window.close()

    def test_not_sharing_it_carries_only_what_was_attached(self, qtbot, settings, history_store):
        window = window_with(qtbot, settings, history_store, sharing=False)
        attached = Image(photo_like(60, 80, seed=4))
        window.composer.attachments.add(attached, "photo.png")
        ask = self.ask(qtbot, window, "What is this?")
        assert ask.question.images == (attached,)
        window.close()

    def test_nothing_to_send_takes_no_shot(self, qtbot, settings, history_store):
        window = window_with(qtbot, settings, history_store, sharing=True)
        window.composer.set_missing("")
        with qtbot.assertNotEmitted(window.session.question_asked):
            window.composer.send_button.click()
        assert window.composer.attachments.media == [], "no shot waits for the next question"
        window.close()


class TestHandsFree:
    def test_speech_starting_attaches_the_shot_and_turning_it_off_mid_sentence_withdraws_it(
        self, qtbot, settings, history_store, spoken_samples
    ):
        """Silero VAD hears espeak-ng: the shot is taken as speech starts, and goes when the user turns
        hands-free off before they have finished (nothing is sent)."""
        settings.setValue(SHARE_SCREEN_KEY, "true")
        factory = MicrophoneFactory(spoken_samples, pace_s=REAL_TIME_S)
        window = open_window(qtbot, settings, history_store, Devices(microphone_stream=factory))
        with qtbot.waitSignal(window.listening_begun, timeout=TIMEOUT_MS) as begun:
            window.hands_free.button.click()
        (shot,) = begun.args[0].images
        assert window.composer.attachments.media == [shot] and window.hands_free.state == "hearing"
        with qtbot.waitSignal(window.hands_free.speech_dropped, timeout=TIMEOUT_MS):
            window.hands_free.button.click()
        assert window.composer.attachments.media == []
        window.close()


def test_a_question_keeps_its_shot_when_the_next_press_comes_to_nothing(qtbot, settings, history_store):
    """With no model to answer it, a recording waits among the attachments with the shot of its press;
    a slip of the finger after it withdraws only its own."""
    window = window_with(qtbot, settings, history_store, sharing=True, samples=SECOND)
    press(qtbot, window)
    factory = window._devices.microphone_stream
    qtbot.waitUntil(lambda: factory.streams[0].fed.is_set(), timeout=TIMEOUT_MS)
    qtbot.wait(100)  # a few polls of the queue
    release(qtbot, window)
    kept = list(window.composer.attachments.media)
    assert [type(m) for m in kept] == [Image, Audio]
    press(qtbot, window)
    release(qtbot, window)  # the factory's next stream says nothing: too short
    assert window.composer.attachments.media == kept
    window.close()


def test_on_a_real_x_screen_the_question_carries_the_screen_as_it_was_at_the_press(
    tiny_bundle, sound_server, spoken_samples, tmp_path
):
    """Xvfb and PulseAudio, the tiny bundle: the screen changes between the press and the release; the
    question carries the shot of the press, which the worker put in the cache while it listened and
    did not encode again; two presses that come to nothing leave nothing behind."""
    speech, report = tmp_path / "speech.npy", tmp_path / "report.json"
    np.save(speech, np.concatenate([spoken_samples, np.zeros(8_000, np.float32)]))
    module = "tests.app.window.look_at_the_press"
    seen = run_on_an_x_screen(module, str(tiny_bundle.root), str(speech), str(report))
    print(seen)
    assert seen["attached_at_press"] == ["Screen"], "attached as the button went down"
    assert seen["reply"] in ("end", "length") and seen["questions"] == 1
    assert seen["question_images"] == [[900, 1280, 3]], "the whole screen"
    assert seen["screen_strip_at_release"] == list(SHOWN_AT_RELEASE), "the screen had changed"
    assert seen["question_strip"] == list(SHOWN_AT_PRESS), "the question carried the press's shot"
    assert seen["look_carried_it"] == [True], "the worker's Look had that very Image"
    assert seen["looked_is_asked"] == [True], "the worker put it in the cache while it listened"
    assert seen["encoded"] == [[900, 1280, 3]], "encoded once: not again at the release"
    assert sorted(seen["stored"]) == ["audio", "image"], "the history kept the question's shot"
    assert seen["slip_attached"] == ["Screen"] and seen["escape_attached"] == ["Screen"]
    assert seen["looks"] == 3, "the worker listened (and looked) at each press"
    assert "cancelled" in seen["notice"]
    for after in ("after_slip", "after_escape"):
        left = seen[after]
        assert left["attached"] == [] and not left["listening"], f"{after}: nothing attached or heard"
        assert left["cached"] == seen["after_reply"]["cached"], f"{after}: the Thinker's cache as it was"
