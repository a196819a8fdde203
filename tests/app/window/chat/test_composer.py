"""The composer: Enter and Shift+Enter, taking the question, Send and Stop, voices and speech
remembered; then in the window: a screen shot and attached files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QToolButton, QWidget

import app.capture.screen
from app.window.chat.composer import MAX_LINES, Composer
from app.window.main_window import Devices
from app.window.preferences import SPEECH_KEY, VOICE_KEY
from model.media import Image
from tests.app.windows import open_window

WAIT_MS = 5_000


@pytest.fixture
def composer(qtbot, settings):
    window = QWidget()  # the composer's parent: kept alive here
    qtbot.addWidget(window)
    yield Composer(settings, window)


class TestQuestion:
    def test_enter_sends_and_shift_enter_starts_a_new_line(self, qtbot, composer):
        box = composer.question_box
        with qtbot.waitSignal(composer.send_requested, timeout=WAIT_MS):
            qtbot.keyClick(box, Qt.Key.Key_Return)
        with qtbot.assertNotEmitted(composer.send_requested):
            qtbot.keyClicks(box, "a")
            qtbot.keyClick(box, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
            qtbot.keyClicks(box, "b")
        assert box.toPlainText() == "a\nb"

    def test_the_box_grows_with_its_text_then_scrolls(self, qtbot, composer):
        box = composer.question_box
        qtbot.addWidget(box)
        box.resize(300, box.height())
        box.show()
        heights = {}
        for lines in (1, 3, MAX_LINES, MAX_LINES + 5):
            box.setPlainText("\n".join(["a line"] * lines))
            qtbot.waitUntil(lambda n=lines: box.height() == box.height_for(n), timeout=WAIT_MS)
            qtbot.wait(50)  # the scroll bar's range follows in a queued event
            heights[lines] = box.height()
            scrolls = box.verticalScrollBar().maximum() > 0
            assert scrolls == (lines > MAX_LINES), f"{lines} lines: all shown, or scrolled past the limit"
        assert heights[1] < heights[3] < heights[MAX_LINES] == heights[MAX_LINES + 5]
        box.setPlainText("word " * 200)  # one paragraph, wrapped over many lines
        qtbot.waitUntil(lambda: box.height() == heights[MAX_LINES], timeout=WAIT_MS)
        box.clear()
        qtbot.waitUntil(lambda: box.height() == heights[1], timeout=WAIT_MS)

    def test_taking_the_question_empties_the_row(self, composer, tmp_path):
        assert composer.take() is None, "nothing to send"
        cv2.imwrite(str(tmp_path / "photo.png"), np.full((30, 40, 3), 128, np.uint8))
        composer.question_box.setPlainText("  What is this?\n")
        composer.attach_file(tmp_path / "photo.png")
        text, media = composer.take()
        assert text == "What is this?" and len(media) == 1 and isinstance(media[0], Image)
        assert composer.question_box.toPlainText() == "" and composer.attachments.media == []
        composer.question_box.setPlainText("   ")
        assert composer.take() is None

    def test_a_running_reply_can_be_stopped_not_added_to(self, composer):
        assert composer.send_button.isEnabled() and not composer.stop_button.isEnabled()
        composer.set_busy(True)
        assert not composer.send_button.isEnabled() and composer.stop_button.isEnabled()


class TestVoice:
    def test_the_remembered_voice_else_chelsie(self, composer, settings):
        composer.set_voices(["Chelsie", "Ethan"])
        assert composer.voice == "Chelsie" and composer.voices() == ["Chelsie", "Ethan"]
        composer.voice_box.setCurrentText("Ethan")
        assert settings.value(VOICE_KEY) == "Ethan"
        composer.set_voices(["Chelsie", "Ethan"])
        assert composer.voice == "Ethan"
        composer.set_voices(["Serena"])
        assert composer.voice == "Serena" and settings.value(VOICE_KEY) == "Ethan", "the choice is kept"
        composer.choose_voice("Nobody")
        assert composer.voice == "Serena"

    def test_speaking_or_not_is_remembered(self, qtbot, composer, settings):
        assert composer.speak
        composer.speech_toggle.setChecked(False)
        assert settings.value(SPEECH_KEY) == "false"
        assert not Composer(settings, composer.parent()).speak


class TestInTheWindow:
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

    def test_the_screen_shot_leaves_omnidesks_own_window_out(
        self, qtbot, settings, history_store, monkeypatch
    ):
        """The window is hidden while the screen is grabbed, and shown again. (What Qt's offscreen
        screen holds where no window is drawn is uninitialised memory: a grab is watched, not looked at.)"""
        window = open_window(qtbot, settings, history_store, Devices())
        window.show()
        qtbot.waitExposed(window)
        seen: list[bool] = []

        def grab(screen=None) -> Image:
            seen.append(window.isVisible())
            return Image(np.zeros((8, 8, 3), np.uint8))

        monkeypatch.setattr(app.capture.screen, "grab_screen", grab)
        window.composer.screen_button.click()
        assert not window.isVisible() and not window.composer.screen_button.isEnabled()
        qtbot.waitUntil(lambda: window.composer.attachments.labels() == ["Screen"], timeout=WAIT_MS)
        assert seen == [False], "grabbed while hidden"
        assert window.isVisible() and window.composer.screen_button.isEnabled(), "and shown again"
        window.close()

    def test_attached_files(self, qtbot, settings, history_store, tmp_path, spoken_samples):
        window = open_window(qtbot, settings, history_store, Devices())
        cv2.imwrite(str(tmp_path / "photo.jpg"), np.full((30, 40, 3), 128, np.uint8))
        window.composer.attach_file(tmp_path / "photo.jpg")
        (tmp_path / "notes.txt").write_text("hello")
        window.composer.attach_file(tmp_path / "notes.txt")
        assert "attach an image or a recording" in window.notices.label.text()
        assert window.composer.attachments.labels() == ["photo.jpg"]
        window.close()
