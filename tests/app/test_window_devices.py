"""The window's devices on the tiny bundle: push-to-talk, camera, screen, files, device loss."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PySide6.QtCore import Qt, QUrl
from PySide6.QtWidgets import QToolButton

from app.main_window import Devices, MainWindow
from app.microphone import BLOCK
from app.preferences import CAMERA_KEY, INPUT_DEVICE_KEY
from model.files.bundle import Bundle
from model.media import Question
from model.pipeline import Conversation
from tests.app.fakes import FakeCapture, MicrophoneFactory
from tests.app.test_main_window import TIMEOUT_MS, RecordingSink, load, worker
from tests.app.test_playback import FakeStream


@pytest.fixture
def questions(monkeypatch) -> list[Question]:
    """The questions that reach the pipeline (and are answered by it)."""
    asked: list[Question] = []
    turn = Conversation.turn

    def spy(self, question, options):
        asked.append(question)
        return turn(self, question, options)

    monkeypatch.setattr(Conversation, "turn", spy)
    return asked


def open_window(qtbot, settings, history_store, devices: Devices, sink: RecordingSink | None = None):
    window = MainWindow(settings, worker(sink), history_store, devices)
    qtbot.addWidget(window)
    return window


def kept_recordings(window: MainWindow) -> list[float]:
    """Seconds of each recording the history keeps, oldest first."""
    from model.audio_features import load_audio

    return [
        len(load_audio(a.path)) / 16_000
        for chat in window.history.conversations()
        for message in window.history.messages(chat.id)
        for a in message.attachments
        if a.kind == "audio"
    ]


def talk(qtbot, window: MainWindow, stream_index: int = 0) -> None:
    """Hold the button until the fake microphone has said everything, then let go."""
    qtbot.mousePress(window.push_to_talk.button, Qt.MouseButton.LeftButton)
    assert window.push_to_talk.microphone is not None and window.in_use.text() == "● Microphone on"
    factory = window._devices.microphone_stream
    qtbot.waitUntil(lambda: factory.streams[stream_index].fed.is_set(), timeout=TIMEOUT_MS)
    qtbot.wait(100)  # a few polls of the queue
    qtbot.mouseRelease(window.push_to_talk.button, Qt.MouseButton.LeftButton)


class TestPushToTalk:
    def test_a_full_spoken_turn(
        self, qtbot, settings, history_store, tiny_bundle: Bundle, spoken_samples, questions
    ):
        sink = RecordingSink()
        devices = Devices(microphone_stream=MicrophoneFactory(spoken_samples))
        window = open_window(qtbot, settings, history_store, devices, sink)
        load(qtbot, window, tiny_bundle)
        levels: list[int] = []
        window.push_to_talk.level_meter.valueChanged.connect(levels.append)
        pieces: list[str] = []
        window.session.reply_progressed.connect(pieces.append)
        with qtbot.waitSignal(window.session.reply_completed, timeout=TIMEOUT_MS) as reply:
            talk(qtbot, window)
        assert reply.args[0] in ("end", "length"), "the pipeline answered the recording"
        assert max(levels) > 50, "the meter moved while the question was spoken"
        assert not window.in_use.isVisibleTo(window) and window.push_to_talk.microphone is None
        (question,) = questions
        (recording,) = question.audios
        assert np.array_equal(recording.samples, spoken_samples)
        assert pieces and "".join(pieces) in window.chat_view.transcript()
        assert sum(len(c) for c in sink.chunks) > 0, "the reply was spoken"
        (chat,) = window.history.conversations()
        (kept,) = window.history.messages(chat.id)[0].attachments
        assert (
            kept.kind == "audio"
            and kept.path.is_file()
            and kept.path.parent == window.history.media_dir(chat.id)
        )
        assert "Play the recording" in window.chat_view.toPlainText()
        window.close()

    def test_a_recording_in_the_chat_plays_back(self, qtbot, settings, history_store, spoken_samples):
        outputs: list[FakeStream] = []

        def speakers(**settings) -> FakeStream:
            outputs.append(FakeStream(**settings))
            return outputs[-1]

        devices = Devices(microphone_stream=MicrophoneFactory(spoken_samples), playback_stream=speakers)
        window = open_window(qtbot, settings, history_store, devices)
        with qtbot.waitSignal(window.model_unavailable, timeout=TIMEOUT_MS):  # no model: not answered
            talk(qtbot, window)
        (chat,) = window.history.conversations()
        (recording,) = window.history.messages(chat.id)[0].attachments
        assert QUrl.fromLocalFile(str(recording.path)).toString() in window.chat_view.toHtml()
        window.chat_view.anchorClicked.emit(QUrl.fromLocalFile(str(recording.path)))
        (stream,) = outputs
        assert stream.settings["samplerate"] == 16_000
        played = stream.pull(len(spoken_samples) // 480 + 1)
        assert np.max(np.abs(played[: len(spoken_samples)] - spoken_samples)) < 1e-4
        window.close()

    def test_a_slip_of_the_finger_is_not_sent(self, qtbot, settings, history_store):
        window = open_window(qtbot, settings, history_store, Devices(microphone_stream=MicrophoneFactory()))
        with qtbot.assertNotEmitted(window.session.question_asked):
            qtbot.mousePress(window.push_to_talk.button, Qt.MouseButton.LeftButton)
            qtbot.mouseRelease(window.push_to_talk.button, Qt.MouseButton.LeftButton)
        assert "too short (0.0 s)" in window.notice.text()
        assert window.composer.attachments.media == [] and not window.in_use.isVisibleTo(window)
        window.close()

    def test_without_a_microphone_the_window_says_so(self, qtbot, settings, history_store):
        window = open_window(
            qtbot, settings, history_store, Devices(microphone_stream=MicrophoneFactory(unplugged={None}))
        )
        qtbot.mousePress(window.push_to_talk.button, Qt.MouseButton.LeftButton)
        qtbot.mouseRelease(window.push_to_talk.button, Qt.MouseButton.LeftButton)
        assert (
            "cannot open the microphone" in window.notice.text()
            and "Type your question" in window.notice.text()
        )
        assert window.push_to_talk.microphone is None and not window.in_use.isVisibleTo(window)
        window.close()

    def test_the_key_talks_unless_the_question_box_has_the_focus(self, qtbot, settings, history_store):
        window = open_window(qtbot, settings, history_store, Devices(microphone_stream=MicrophoneFactory()))
        window.show()
        window.chat_view.setFocus()
        qtbot.keyPress(window.chat_view, Qt.Key.Key_Space)
        assert window.push_to_talk.microphone is not None
        qtbot.keyRelease(window.chat_view, Qt.Key.Key_Space)
        assert window.push_to_talk.microphone is None and "too short" in window.notice.text()
        window.composer.question_box.setFocus()
        qtbot.keyClick(window.composer.question_box, Qt.Key.Key_Space)
        assert window.push_to_talk.microphone is None and window.composer.question_box.toPlainText() == " "
        window.close()

    def test_talking_over_a_reply_interrupts_it_and_asks_next(
        self, qtbot, settings, history_store, tiny_bundle: Bundle, spoken_samples, questions
    ):
        devices = Devices(microphone_stream=MicrophoneFactory(spoken_samples))
        window = open_window(qtbot, settings, history_store, devices)
        load(qtbot, window, tiny_bundle)
        reasons: list[str] = []
        window.session.reply_completed.connect(reasons.append)
        window.session.reply_progressed.connect(
            lambda _: window.session.busy and not window.push_to_talk.talking and talk(qtbot, window)
        )
        window.composer.question_box.setPlainText("Tell me a long story")
        window.composer.send_button.click()
        qtbot.waitUntil(lambda: len(reasons) == 2, timeout=TIMEOUT_MS)
        assert reasons[0] == "cancelled" and "(interrupted)" in window.chat_view.toPlainText()
        assert [q.text for q in questions] == ["Tell me a long story", ""] and len(questions[1].audios) == 1
        window.close()


class TestDeviceLoss:
    def test_the_microphone_unplugged_mid_recording_falls_back_to_the_default(
        self, qtbot, settings, history_store, spoken_samples
    ):
        settings.setValue(INPUT_DEVICE_KEY, "USB mic")
        factory = MicrophoneFactory(spoken_samples, unplug_after=20)
        window = open_window(qtbot, settings, history_store, Devices(microphone_stream=factory))
        qtbot.mousePress(window.push_to_talk.button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "went away" in window.notice.text(), timeout=TIMEOUT_MS)
        assert "“USB mic” went away: recording goes on with the system default" in window.notice.text()
        assert factory.streams[1].settings["device"] is None and window.in_use.isVisibleTo(window)
        factory.streams[1].push(np.full(10 * BLOCK, 0.25, np.float32))  # the default microphone hears more
        with qtbot.waitSignal(window.push_to_talk.recording_finished, timeout=TIMEOUT_MS) as finished:
            qtbot.mouseRelease(window.push_to_talk.button, Qt.MouseButton.LeftButton)
        assert finished.args[0].seconds == pytest.approx(30 * BLOCK / 16_000)
        assert kept_recordings(window) == [pytest.approx(finished.args[0].seconds, abs=1e-4)]
        window.close()

    def test_losing_every_microphone_keeps_the_recording(
        self, qtbot, settings, history_store, spoken_samples
    ):
        settings.setValue(INPUT_DEVICE_KEY, "USB mic")
        factory = MicrophoneFactory(spoken_samples, unplug_after=20, unplugged={None})
        window = open_window(qtbot, settings, history_store, Devices(microphone_stream=factory))
        talk(qtbot, window)
        assert "what was recorded is kept" in window.notice.text()
        assert not window.in_use.isVisibleTo(window)
        qtbot.waitUntil(lambda: "No model" in window.notice.text(), timeout=TIMEOUT_MS)
        assert kept_recordings(window) == [pytest.approx(20 * BLOCK / 16_000, abs=1e-4)]
        window.close()

    def test_a_camera_unplugged_while_previewing_falls_back_to_the_default(
        self, qtbot, settings, history_store
    ):
        settings.setValue(CAMERA_KEY, "2")
        opened: list[int] = []

        def cameras(index: int) -> FakeCapture:
            opened.append(index)
            return FakeCapture(fail_after=3 if index == 2 else None)

        window = open_window(qtbot, settings, history_store, Devices(camera_source=cameras))
        window.camera_panel.button.click()
        qtbot.waitUntil(lambda: "showing the default camera" in window.notice.text(), timeout=TIMEOUT_MS)
        assert (
            opened == [2, 0]
            and window.camera_panel.camera is not None
            and window.in_use.text() == "● Camera on"
        )
        window.camera_panel.button.click()
        assert window.camera_panel.camera is None and not window.in_use.isVisibleTo(window)
        window.close()


class TestSeeing:
    def test_ask_about_the_camera_frame(self, qtbot, settings, history_store, tiny_bundle: Bundle, questions):
        window = open_window(
            qtbot, settings, history_store, Devices(camera_source=lambda index: FakeCapture())
        )
        load(qtbot, window, tiny_bundle)
        assert not window.camera_panel.snapshot_button.isEnabled()
        window.camera_panel.button.click()
        assert window.camera_panel.preview.isVisibleTo(window) and window.in_use.text() == "● Camera on"
        qtbot.waitUntil(lambda: not window.camera_panel.preview.pixmap().isNull(), timeout=TIMEOUT_MS)
        window.camera_panel.snapshot_button.click()
        assert window.composer.attachments.labels() == ["Camera"]
        window.composer.question_box.setPlainText("What am I holding?")
        with qtbot.waitSignal(window.session.reply_completed, timeout=TIMEOUT_MS) as reply:
            window.composer.send_button.click()
        assert reply.args[0] in ("end", "length"), "the pipeline answered the question with its image"
        (image,) = questions[0].images
        assert image.pixels.shape == (240, 320, 3) and tuple(image.pixels[200, 300]) == (200, 20, 40)
        assert window.composer.attachments.media == []
        assert "<img" in window.chat_view.toHtml()
        window.close()
        assert window.camera_panel.camera is None

    def test_a_screen_shot_is_shown_before_sending(self, qtbot, settings, history_store):
        window = open_window(qtbot, settings, history_store, Devices())
        window.composer.screen_button.click()
        assert window.composer.attachments.labels() == ["Screen"]
        (shot,) = window.composer.attachments.media
        size = window.screen().size()
        assert shot.pixels.shape == (size.height(), size.width(), 3)
        window.composer.attachments.findChild(QToolButton).click()  # the thumbnail removes it
        assert window.composer.attachments.media == [] and not window.composer.attachments.isVisibleTo(window)
        window.close()

    def test_attached_files(self, qtbot, settings, history_store, tmp_path, spoken_samples):
        window = open_window(qtbot, settings, history_store, Devices())
        cv2.imwrite(str(tmp_path / "photo.jpg"), np.full((30, 40, 3), 128, np.uint8))
        window.composer.attach_file(tmp_path / "photo.jpg")
        (tmp_path / "notes.txt").write_text("hello")
        window.composer.attach_file(tmp_path / "notes.txt")
        assert "attach an image or a recording" in window.notice.text()
        assert window.composer.attachments.labels() == ["photo.jpg"]
        window.close()
