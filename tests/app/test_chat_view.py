"""The chat view: questions, Markdown replies and their notes, attachments, the transcript,
and replaying a recording from its link."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QUrl

from app.attachments import save_media
from app.chat_view import ChatView, Message, attachment_html, markdown_html
from app.history import Attachment
from app.main_window import Devices
from model.media import Audio
from tests.app.fakes import MicrophoneFactory
from tests.app.test_playback import FakeStream
from tests.app.windows import TIMEOUT_MS, open_window, talk

WAIT_MS = 5_000


def view_for(qtbot, settings, playback_stream=None) -> ChatView:
    view = ChatView(settings, playback_stream)
    qtbot.addWidget(view)
    return view


class TestRendering:
    def test_a_question_is_shown_as_written(self, qtbot, settings):
        view = view_for(qtbot, settings)
        view.add_exchange("Is <b>this</b> bold?\nSecond line", ())
        view.render()
        assert view.toPlainText() == "You\nIs <b>this</b> bold?\nSecond line\nOmnidesk\n…"

    def test_a_reply_is_rendered_from_markdown_with_its_note(self, qtbot, settings):
        view = view_for(qtbot, settings)
        view.show_messages(
            [Message("user", "Hi"), Message("assistant", "Some **bold** words", "interrupted")]
        )
        assert view.toPlainText() == "You\nHi\nOmnidesk (interrupted)\nSome bold words"

    def test_markdown_becomes_body_html(self):
        assert "font-weight:700" in markdown_html("Some **bold** words")
        listed = markdown_html("- one\n- two")
        assert listed.count("<li") == 2 and "<body" not in listed and "</html>" not in listed

    def test_images_are_thumbnails_and_recordings_links(self, tmp_path):
        photo, question = tmp_path / "a photo.png", tmp_path / "a question.wav"
        image = attachment_html(Attachment("image", photo))
        recording = attachment_html(Attachment("audio", question))
        assert image == f'<p><img src="{QUrl.fromLocalFile(str(photo)).toString()}" width="160"></p>'
        assert (
            recording
            == f'<p><a href="{QUrl.fromLocalFile(str(question)).toString()}">▶ Play the recording</a></p>'
        )


class TestMessages:
    def test_a_reply_streams_into_its_message(self, qtbot, settings):
        view = view_for(qtbot, settings)
        assert view.reply() is None
        view.add_exchange("Hi", ())
        view.extend_reply("Hel")
        view.extend_reply("lo")
        assert view.reply() == Message("assistant", "Hello")
        assert view.transcript() == "user: Hi\n\nassistant: Hello"

    def test_only_an_empty_reply_is_dropped(self, qtbot, settings):
        view = view_for(qtbot, settings)
        view.add_exchange("Hi", ())
        view.extend_reply("Hello")
        assert not view.drop_empty_reply()
        view.add_exchange("Again", ())
        assert view.drop_empty_reply() and view.reply() is None
        assert view.transcript() == "user: Hi\n\nassistant: Hello\n\nuser: Again"


class TestReplay:
    def test_a_recording_that_cannot_be_played_is_a_notice(self, qtbot, settings, tmp_path):
        def no_speakers(**settings):
            raise RuntimeError("Error querying device -1")

        view = view_for(qtbot, settings, no_speakers)
        path = save_media(Audio(np.zeros(1600, np.float32)), tmp_path, "question")
        with qtbot.waitSignal(view.notice, timeout=WAIT_MS) as notice:
            view.anchorClicked.emit(QUrl.fromLocalFile(str(path)))
        assert notice.args[0].startswith("Cannot play the recording: cannot open the sound output")
        with qtbot.waitSignal(view.notice, timeout=WAIT_MS) as notice:
            view.anchorClicked.emit(QUrl.fromLocalFile(str(tmp_path / "gone.wav")))
        assert notice.args[0].startswith("Cannot play the recording: ")

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
