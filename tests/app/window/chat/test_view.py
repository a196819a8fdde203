"""The chat view: questions and replies in bubbles, Markdown replies with code blocks and their
notes, what is shown sanitized, attachments, the transcript, and replaying a recording from its
link."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QImage

from app.history.store import Attachment
from app.window.chat.attachments import save_media
from app.window.chat.view import EMPTY_HINT, ChatView, Message, attachment_html, markdown_html, message_html
from app.window.main_window import Devices
from app.window.theme import DARK_CHAT, LIGHT_CHAT, apply_theme
from model.media import Audio
from tests.app.fakes import MicrophoneFactory
from tests.app.sound.test_playback import FakeStream
from tests.app.windows import TIMEOUT_MS, load, open_window, talk

WAIT_MS = 5_000


def view_for(qtbot, settings, playback_stream=None) -> ChatView:
    view = ChatView(settings, playback_stream)
    qtbot.addWidget(view)
    return view


def assert_round(image: QImage, colour: str) -> None:
    """Painted in `image`: the area of `colour` fills its edges' middles but not its corners."""
    from PySide6.QtGui import QColor

    rgb = QColor(colour).rgb()
    pixels = np.frombuffer(image.constBits(), np.uint32).reshape(image.height(), -1)[:, : image.width()]
    ys, xs = np.nonzero(pixels == rgb)
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    middle_x, middle_y = (left + right) // 2, (top + bottom) // 2
    assert bottom - top > 30 and right - left > 100, f"{colour} is there"
    for x, y in ((left, middle_y), (right, middle_y), (middle_x, top), (middle_x, bottom)):
        assert image.pixel(x, y) == rgb, f"a straight edge of {colour}"
    for x, y in ((left, top), (right, top), (left, bottom), (right, bottom)):
        assert image.pixel(x, y) != rgb, f"a round corner of {colour} at {x, y}"


def shown(view: ChatView) -> list[str]:
    """The lines the view shows, without the empty ones between bubbles."""
    return [line for line in view.toPlainText().split("\n") if line]


class TestRendering:
    def test_a_question_is_shown_as_written(self, qtbot, settings):
        view = view_for(qtbot, settings)
        view.add_exchange("Is <b>this</b> bold?\nSecond line", ())
        view.redraw()
        assert shown(view) == ["You", "Is <b>this</b> bold?", "Second line", "Omnidesk", "…"]

    def test_paints_into_an_image_as_any_widget_does(self, qtbot, settings):
        """QWidget.render(device) is how a widget is painted off screen (grabs, tools): the view's own
        redraw must not hide it."""
        view = view_for(qtbot, settings)
        view.resize(320, 200)
        view.add_exchange("Hi", ())
        image = QImage(view.size(), QImage.Format.Format_RGB32)
        image.fill(Qt.GlobalColor.black)
        view.render(image)
        assert len({image.pixel(x, y) for x in range(0, 320, 8) for y in range(0, 200, 8)}) > 1

    def test_a_reply_is_rendered_from_markdown_with_its_note(self, qtbot, settings):
        view = view_for(qtbot, settings)
        view.show_messages(
            [Message("user", "Hi"), Message("assistant", "Some **bold** words", "interrupted")]
        )
        assert shown(view) == ["You", "Hi", "Omnidesk (interrupted)", "Some bold words"]

    def test_the_user_speaks_from_the_right_the_assistant_from_the_left(self, qtbot, settings):
        view = view_for(qtbot, settings)
        view.show_messages([Message("user", "Hi"), Message("assistant", "Hello")])
        assert [bubble.colour.name() for bubble in view.bubbles] == [LIGHT_CHAT.user, LIGHT_CHAT.assistant]
        document = "".join(message_html(message, LIGHT_CHAT) for message in view.messages)
        mine, theirs = document.index(LIGHT_CHAT.user), document.index(LIGHT_CHAT.assistant)
        assert mine < theirs, "each bubble in its own colour, in order"
        aside = 'width="18%"'
        assert document.rfind(aside, 0, mine) > document.rfind("<table", 0, mine), "room left of the user's"
        assert document.find(aside, theirs) < document.find("</table>", theirs), "room right of the reply"

    def test_bubbles_take_the_dark_theme_colours(self, qtbot, settings):
        from PySide6.QtGui import QColor, QPalette

        view = view_for(qtbot, settings)
        palette = view.palette()
        palette.setColor(QPalette.ColorRole.Window, QColor("#202124"))
        view.setPalette(palette)
        view.show_messages([Message("user", "Hi"), Message("assistant", "Hello")])
        assert [bubble.colour.name() for bubble in view.bubbles] == [DARK_CHAT.user, DARK_CHAT.assistant]

    @pytest.mark.parametrize(("theme", "colours"), [("light", LIGHT_CHAT), ("dark", DARK_CHAT)])
    def test_bubbles_and_code_blocks_have_round_corners(self, qtbot, settings, theme, colours):
        from PySide6.QtWidgets import QApplication

        app = QApplication.instance()
        apply_theme(app, theme)
        view = view_for(qtbot, settings)
        view.resize(400, 400)
        code = "```\nfirst = 1\nsecond = 2\nthird = 3\n```"
        view.show_messages(
            [Message("user", "Hi there\nA second line\nAnd a third"), Message("assistant", code)]
        )
        image = QImage(view.size(), QImage.Format.Format_RGB32)
        view.render(image)
        app.setStyleSheet("")  # as the other tests expect it
        app.setPalette(app.style().standardPalette())
        assert [(bubble.colour.name(), bubble.depth) for bubble in view.bubbles] == [
            (colours.user, 0),
            (colours.assistant, 0),
            (colours.code, 1),
        ]
        assert_round(image, colours.user)
        assert_round(image, colours.code)

    def test_bubbles_are_found_again_only_when_the_layout_changes(self, qtbot, settings, monkeypatch):
        """Finding 200 bubbles took 40 ms: not at every paint (scrolling, the caret)."""
        import app.window.chat.view as view_module

        found = []
        laid_out = view_module.laid_out
        monkeypatch.setattr(view_module, "laid_out", lambda *args: found.append(1) or laid_out(*args))
        view = view_for(qtbot, settings)
        view.resize(400, 300)
        view.show_messages([Message("user", "Hi"), Message("assistant", "Hello")])
        for _ in range(3):
            view.grab()
        assert len(found) == 1
        view.show_messages([Message("user", "Hi"), Message("assistant", "Hello again")])
        view.grab()
        assert len(found) == 2, "another document"
        view.resize(300, 300)
        view.grab()
        assert len(found) == 3, "another width, another layout"

    def test_a_new_chat_says_how_to_start(self, qtbot, settings):
        view = view_for(qtbot, settings)
        view.show_messages([])
        assert view.toPlainText() == EMPTY_HINT and view.transcript() == ""

    def test_an_empty_reply_with_a_note_shows_only_the_note(self, qtbot, settings):
        view = view_for(qtbot, settings)
        view.show_messages([Message("user", "Hi"), Message("assistant", "", "interrupted")])
        assert shown(view) == ["You", "Hi", "Omnidesk (interrupted)"]

    def test_markdown_becomes_body_html(self):
        assert "font-weight:700" in markdown_html("Some **bold** words")
        listed = markdown_html("- one\n- two")
        assert listed.count("<li") == 2 and "<body" not in listed and "</html>" not in listed

    def test_code_blocks_are_set_apart_and_wrap(self):
        shown_html = markdown_html(
            "Try:\n\n```python\nprint('<hi>')  # " + "x" * 300 + "\n```\n\nDone `x`.", "#123456"
        )
        (block,) = shown_html.split('bgcolor="#123456"')[1:]
        assert "white-space:pre-wrap" in block and "font-family:monospace" in block, "wrapped monospace"
        assert "print(&#x27;&lt;hi&gt;&#x27;)" in block and "```" not in shown_html
        assert "Try:" in shown_html and "Done" in shown_html
        assert "background-color:#123456" in shown_html.split("Done")[1], "inline code too"

    def test_a_code_block_still_streaming_shows_as_code(self):
        assert "white-space:pre-wrap" in markdown_html("Here:\n```\nfor i in range(")

    def test_html_in_a_reply_is_shown_as_text(self, qtbot, settings):
        view = view_for(qtbot, settings)
        view.show_messages([Message("assistant", 'See <img src="file:///etc/passwd"> <b>here</b>')])
        assert "<img" not in view.toHtml().split("<body")[1]
        assert "<b>here</b>" in view.toPlainText()


class TestSanitizing:
    RAW = "A\x00B\x1b[31mred\x1b[0m\rC\x7fD\x9b\tE\ufffd"

    def test_control_characters_never_reach_the_renderer(self, qtbot, settings):
        view = view_for(qtbot, settings)
        view.show_messages([Message("user", self.RAW), Message("assistant", self.RAW, note="x\x1b")])
        document = view.toHtml() + view.toPlainText()
        assert not any(c in document for c in "\x00\x1b\x7f\x9b"), "no control character"
        assert view.messages[1].text == self.RAW, "the message keeps what came"

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

    def test_a_recording_in_the_chat_plays_back(
        self, qtbot, settings, history_store, spoken_samples, tiny_bundle
    ):
        outputs: list[FakeStream] = []

        def speakers(**settings) -> FakeStream:
            outputs.append(FakeStream(**settings))
            return outputs[-1]

        devices = Devices(microphone_stream=MicrophoneFactory(spoken_samples), playback_stream=speakers)
        window = open_window(qtbot, settings, history_store, devices)
        load(qtbot, window, tiny_bundle)
        window.composer.speech_toggle.setChecked(False)
        with qtbot.waitSignal(window.session.reply_completed, timeout=TIMEOUT_MS):
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
