"""The conversation as a user meets it in the window, on the tiny bundle: speech that plays on after
its turn and can still be stopped, stopping before the first word, notices that clear, failed turns
that stay, controls that say what is missing, the window's own controls, a long spoken conversation
with images, speakers paced by the production rate, and the activity chip. Whatever the window
says to the user is collected, and none of it may be a traceback, a TypeError or an ALSA line."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence

from app.sound.playback import Playback
from app.window.main_window import MainWindow
from app.window.model_loader import NO_MODEL
from app.worker import ConversationWorker
from model.files.bundle import Bundle
from model.media import Image
from model.pipeline import ContextTrimmed, Conversation, Mark, TextDelta, TurnFinished
from model.talker import SpeechOptions
from model.thinker_types import ThinkerOptions
from tests.app.fakes import MicrophoneFactory, Speakers
from tests.app.windows import MAX_TOKENS, SPEECH, TIMEOUT_MS, RecordingSink, ask, load, worker

LONG_SPEECH = SpeechOptions(max_codes=200, min_codes=150)  # about 3 s of sound from the tiny model
UNSAYABLE = ("Traceback", "TypeError", "ALSA", "\x1b", "\x00")


class Said:
    """Everything the window says to the user: notices, failures, the chat and the status bar."""

    def __init__(self, window: MainWindow) -> None:
        self.window = window
        self.messages: list[str] = []
        rooms = (window.current, window.chat_view, window.composer, window.push_to_talk, window.camera_panel)
        signals = [room.notice for room in rooms] + [window.session.notice, window.session.turn_failed]
        worker = window.worker
        signals += [worker.plan_noted, worker.model_failed, worker.speech_unavailable, worker.recording_cut]
        for signal in signals:
            signal.connect(self.messages.append)

    def check(self) -> None:
        w = self.window
        shown = [
            w.notices.label.text(),
            w.chat_view.toPlainText(),
            w.models.status.text(),
            w.status_line.speed_status.text(),
        ]
        for text in self.messages + shown:
            assert not any(bad in text for bad in UNSAYABLE), text


@pytest.fixture
def open_window(qtbot, settings, history_store):
    """Opens windows on a given worker; each is checked for what it said, and closed."""
    opened: list[tuple[MainWindow, Said]] = []

    def make(conversation_worker: ConversationWorker | None = None, devices=None) -> MainWindow:
        window = MainWindow(settings, conversation_worker or worker(), history_store, devices)
        qtbot.addWidget(window)
        opened.append((window, Said(window)))
        return window

    yield make
    for window, said in opened:
        said.check()
        window.close()


def speaking_worker(speakers: Speakers, speech: SpeechOptions = LONG_SPEECH, clock=time.perf_counter):
    """A worker whose speech plays through a real Playback on fake speakers pulled in real time."""
    return ConversationWorker(
        max_tokens=MAX_TOKENS,
        speech=speech,
        sink_factory=lambda rate: Playback(rate, stream_factory=speakers, clock=clock),
    )


def sound(samples: np.ndarray) -> int:
    return int(np.count_nonzero(samples))


class TestSpeechThatPlaysOn:
    """Issue 17, item 4: the turn ends when its audio is made; its speech plays on, and Stop (or a
    new question) still silences it."""

    def test_stop_silences_speech_after_the_turn_ended(self, qtbot, open_window, tiny_bundle: Bundle):
        speakers = Speakers()
        window = open_window(speaking_worker(speakers))
        load(qtbot, window, tiny_bundle)
        speaking: list[bool] = []
        window.speech.speaking_changed.connect(speaking.append)
        assert ask(qtbot, window, "Tell me a long story") in ("end", "length")
        qtbot.waitUntil(lambda: window.speech.speaking, timeout=TIMEOUT_MS)
        assert not window.session.busy, "the turn is over"
        assert window.composer.stop_button.isEnabled() and window.composer.send_button.isEnabled()
        qtbot.waitUntil(lambda: window.activity_chip.activity == "speaking", timeout=TIMEOUT_MS)
        window.composer.stop_button.click()
        (output,) = speakers.outputs
        stopped_at = len(output.played)
        qtbot.waitUntil(lambda: not window.speech.speaking, timeout=TIMEOUT_MS)
        qtbot.wait(200)
        after = output.heard()[stopped_at * output.block + output.block :]  # the block playing may finish
        assert sound(after) == 0, "silent at once"
        assert speaking == [True, False] and not window.composer.stop_button.isEnabled()
        assert window.activity_chip.activity == "ready"

    def test_a_new_question_silences_the_last_reply(self, qtbot, open_window, tiny_bundle: Bundle, questions):
        speakers = Speakers()
        window = open_window(speaking_worker(speakers))
        load(qtbot, window, tiny_bundle)
        ask(qtbot, window, "First")
        qtbot.waitUntil(lambda: window.speech.speaking, timeout=TIMEOUT_MS)
        state = window.worker.speech_state()
        window.composer.speech_toggle.setChecked(False)  # the next reply in text: only the first speaks
        ask(qtbot, window, "Second")
        assert window.worker.speech_state().reply != state.reply, "the first reply's speech was stopped"
        qtbot.waitUntil(lambda: not window.speech.speaking, timeout=TIMEOUT_MS)
        (output,) = speakers.outputs
        quiet_from = len(output.played)
        qtbot.wait(300)
        assert sound(output.heard()[quiet_from * output.block :]) == 0
        assert [q.text for q in questions] == ["First", "Second"]

    def test_talking_over_speech_that_plays_on_silences_it(self, qtbot, open_window, tiny_bundle: Bundle):
        from app.window.main_window import Devices

        speakers = Speakers()
        window = open_window(speaking_worker(speakers), Devices(microphone_stream=MicrophoneFactory()))
        load(qtbot, window, tiny_bundle)
        ask(qtbot, window, "Talk to me")
        qtbot.waitUntil(lambda: window.speech.speaking, timeout=TIMEOUT_MS)
        qtbot.mousePress(window.push_to_talk.button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not window.speech.speaking, timeout=TIMEOUT_MS)
        assert window.activity_chip.activity == "listening"
        qtbot.mouseRelease(window.push_to_talk.button, Qt.MouseButton.LeftButton)


class TestStopBeforeTheFirstToken:
    """Issue 17, item 3: stopped before any reply, a turn ends as interrupted, never as an error."""

    def test_stop_right_after_send(self, qtbot, open_window, tiny_bundle: Bundle):
        window = open_window()
        load(qtbot, window, tiny_bundle)
        pieces: list[str] = []
        window.session.reply_progressed.connect(pieces.append)
        window.composer.question_box.setPlainText("Never mind")
        with qtbot.waitSignal(window.session.reply_completed, timeout=TIMEOUT_MS) as completed:
            window.composer.send_button.click()
            window.composer.stop_button.click()  # before the worker has even begun
        assert completed.args == ["cancelled"] and pieces == []
        assert "Omnidesk (interrupted)" in window.chat_view.toPlainText()
        assert window.notices.label.text() == "" and window.composer.send_button.isEnabled()
        (chat,) = window.history.conversations()
        assert [(m.text, m.note) for m in window.history.messages(chat.id)][-1] == ("", "interrupted")

    def test_stop_after_the_turn_began_but_before_any_text(
        self, qtbot, open_window, tiny_bundle: Bundle, monkeypatch
    ):
        began, go_on = threading.Event(), threading.Event()
        turn = Conversation.turn

        def held(self, question, options, heard=None):
            for event in turn(self, question, options, heard):
                if isinstance(event, Mark) and event.name == "input_ready":
                    began.set()
                    go_on.wait(TIMEOUT_MS / 1000)
                yield event

        monkeypatch.setattr(Conversation, "turn", held)
        window = open_window(worker(RecordingSink()))
        load(qtbot, window, tiny_bundle)
        window.composer.question_box.setPlainText("Tell me everything")
        with qtbot.waitSignal(window.session.reply_completed, timeout=TIMEOUT_MS) as completed:
            window.composer.send_button.click()
            qtbot.waitUntil(began.is_set, timeout=TIMEOUT_MS)
            window.composer.stop_button.click()
            go_on.set()
        assert completed.args == ["cancelled"]
        assert (
            "Omnidesk (interrupted)" in window.chat_view.toPlainText() and window.notices.label.text() == ""
        )


def failing_turns(monkeypatch, failures: dict[str, tuple[str, ...]]) -> None:
    """Questions named in `failures` fail with that much text first; the others are answered."""
    turn = Conversation.turn

    def maybe_failing(self, question, options, heard=None):
        if question.text not in failures:
            yield from turn(self, question, options, heard)
            return
        for piece in failures[question.text]:
            yield TextDelta(piece)
        yield TurnFinished("error", "".join(failures[question.text]), (), (), "the model went away")

    monkeypatch.setattr(Conversation, "turn", maybe_failing)


class TestNoticesAndFailures:
    """Issue 17, item 6."""

    def test_a_stale_error_goes_after_a_later_question_and_in_a_new_chat(
        self, qtbot, open_window, tiny_bundle: Bundle, monkeypatch
    ):
        failing_turns(monkeypatch, {"Fail": ()})
        window = open_window()
        load(qtbot, window, tiny_bundle)
        assert ask(qtbot, window, "Fail") == "error"
        assert (
            window.notices.label.text() == "the model went away"
            and window.notices.dismiss_button.isVisibleTo(window)
        )
        assert ask(qtbot, window, "Now answer") in ("end", "length")
        assert window.notices.label.text() == "" and not window.notices.label.isVisibleTo(window)
        assert ask(qtbot, window, "Fail") == "error"
        window.conversations.new_button.click()
        assert window.notices.label.text() == ""
        assert ask(qtbot, window, "Fail") == "error"
        window.notices.dismiss_button.click()
        assert window.notices.label.text() == ""

    def test_failed_turns_stay_in_the_chat_with_the_reason(
        self, qtbot, open_window, tiny_bundle: Bundle, monkeypatch
    ):
        failing_turns(monkeypatch, {"Fail": (), "Fail later": ("Hal", "f")})
        window = open_window()
        load(qtbot, window, tiny_bundle)
        ask(qtbot, window, "Fail")
        ask(qtbot, window, "Fail later")
        plain = window.chat_view.toPlainText()
        assert "Omnidesk (not answered: the model went away)" in plain
        assert "Omnidesk (cut short: the model went away)" in plain and "Half" in plain
        assert "…" not in plain and "\ufffd" not in plain
        (chat,) = window.history.conversations()
        replies = [(m.text, m.note) for m in window.history.messages(chat.id) if m.role == "assistant"]
        assert replies == [
            ("", "not answered: the model went away"),
            ("Half", "cut short: the model went away"),
        ]

    def test_control_characters_of_a_reply_never_reach_the_renderer(
        self, qtbot, open_window, tiny_bundle: Bundle, monkeypatch
    ):
        raw = "Red \x1b[31malert\x1b[0m\x00 and a bell\x07."
        turn = Conversation.turn

        def raw_reply(self, question, options, heard=None):
            said = False
            for event in turn(self, question, options, heard):
                if isinstance(event, TextDelta):
                    if not said:
                        said = True
                        yield TextDelta(raw)
                    continue
                yield event

        monkeypatch.setattr(Conversation, "turn", raw_reply)
        window = open_window()
        load(qtbot, window, tiny_bundle)
        ask(qtbot, window, "Say it in colour")
        document = window.chat_view.toHtml() + window.chat_view.toPlainText()
        assert "Red alert and a bell." in window.chat_view.toPlainText()
        assert not any(c in document for c in "\x1b\x00\x07")
        (chat,) = window.history.conversations()
        assert raw in window.history.messages(chat.id)[-1].text, "the history keeps what the model said"

    def test_before_a_model_send_says_what_is_missing_and_nothing_is_stored(
        self, qtbot, open_window, tiny_bundle: Bundle
    ):
        window = open_window()
        send = window.composer.send_button
        assert not send.isEnabled() and send.toolTip() == NO_MODEL and window.notices.label.text() == NO_MODEL
        window.composer.question_box.setPlainText("Hello?")
        with qtbot.assertNotEmitted(window.session.question_asked):
            qtbot.keyClick(window.composer.question_box, Qt.Key.Key_Return)
        assert window.composer.question_box.toPlainText() == "Hello?" and window.history.conversations() == []
        assert window.notices.label.text() == NO_MODEL
        window.notices.dismiss_button.click()
        assert window.notices.label.text() == NO_MODEL, "what is missing stays said"
        window.models.load(str(tiny_bundle.root))
        assert not send.isEnabled() and "loading" in send.toolTip()
        qtbot.waitUntil(send.isEnabled, timeout=TIMEOUT_MS)
        assert window.notices.label.text() == ""
        with qtbot.waitSignal(window.session.reply_completed, timeout=TIMEOUT_MS):
            send.click()
        assert "Hello?" in window.chat_view.transcript()

    def test_a_bundle_that_fails_to_load_leaves_send_saying_why(self, qtbot, open_window, tmp_path):
        window = open_window()
        with qtbot.waitSignal(window.model_unavailable, timeout=TIMEOUT_MS):
            window.models.load(str(tmp_path / "missing"))
        assert "missing" in window.notices.label.text()
        send = window.composer.send_button
        assert not send.isEnabled() and send.toolTip() == NO_MODEL
        window.notices.dismiss_button.click()
        assert window.notices.label.text() == NO_MODEL


class TestControls:
    """Issue 17, item 7 (the window's part)."""

    def test_quit_in_the_file_menu(self, qtbot, open_window):
        window = open_window()
        window.show()
        file_menu = window.menuBar().actions()[0].menu()
        assert window.menu.quit_action in file_menu.actions()
        assert window.menu.quit_action.shortcut() == QKeySequence("Ctrl+Q")
        window.menu.quit_action.trigger()
        assert not window.isVisible()

    def test_the_voice_box_has_a_label(self, open_window):
        window = open_window()
        label = window.composer.voice_label
        assert label.buddy() is window.composer.voice_box and label.text().replace("&", "") == "Voice:"

    def test_the_buttons_stay_put_when_the_level_meter_shows(self, qtbot, open_window):
        from app.window.main_window import Devices

        window = open_window(devices=Devices(microphone_stream=MicrophoneFactory()))
        window.show()
        qtbot.waitExposed(window)
        buttons = [window.composer.attach_button, window.composer.screen_button, window.camera_panel.button]
        before = [b.mapTo(window, b.rect().topLeft()) for b in buttons]
        qtbot.mousePress(window.push_to_talk.button, Qt.MouseButton.LeftButton)
        assert window.push_to_talk.level_meter.isVisible()
        qtbot.wait(50)
        assert [b.mapTo(window, b.rect().topLeft()) for b in buttons] == before
        qtbot.mouseRelease(window.push_to_talk.button, Qt.MouseButton.LeftButton)


class TestLongConversation:
    """Issue 17, item 2: the window keeps speaking through 30 turns with images, past the point where
    the context is trimmed (a 1024-token context here)."""

    def test_thirty_spoken_turns_with_images(self, qtbot, open_window, tiny_bundle: Bundle, monkeypatch):
        questions, trimmed = [], []
        turn = Conversation.turn

        def spy(self, question, options, heard=None):
            questions.append(question)
            for event in turn(self, question, options, heard):
                if isinstance(event, ContextTrimmed):
                    trimmed.append(event)
                yield event

        monkeypatch.setattr(Conversation, "turn", spy)
        sink = RecordingSink()
        spoken = ConversationWorker(
            ThinkerOptions(n_ctx=1024), max_tokens=MAX_TOKENS, speech=SPEECH, sink_factory=lambda rate: sink
        )
        window = open_window(spoken)
        load(qtbot, window, tiny_bundle)
        rng = np.random.default_rng(0)
        samples_per_turn = []
        for n in range(30):
            if n % 3 == 0:
                window.composer.attachments.add(Image(rng.integers(0, 255, (56, 84, 3), np.uint8)), "photo")
            before = sum(len(c) for c in sink.chunks)
            assert ask(qtbot, window, f"Question {n}: what do you see?") in ("end", "length"), n
            samples_per_turn.append(sum(len(c) for c in sink.chunks) - before)
            assert window.notices.label.text() == "", (n, window.notices.label.text())
        print(f"seconds of speech per turn: {[round(s / 24_000, 2) for s in samples_per_turn]}")
        print(f"context trimmed {len(trimmed)} times, the last kept {trimmed[-1].kept if trimmed else 0}")
        assert all(samples_per_turn), "every turn was spoken"
        assert trimmed, "the conversation outgrew the context"
        assert sum(len(q.images) for q in questions) == 10 and window.composer.speech_toggle.isChecked()
        assert "first audio" in window.status_line.speed_status.text()


class TestPacedSpeakers:
    """Issue 16, item 6, in the window: the first audio shown is when sound came out of the
    speakers; a machine that speaks slowly is told once what would help."""

    def test_first_audio_is_when_the_speakers_sounded(
        self, qtbot, open_window, tiny_bundle: Bundle, monkeypatch
    ):
        made: list[float] = []
        turn = Conversation.turn

        def marked(self, question, options, heard=None):
            for event in turn(self, question, options, heard):
                if isinstance(event, Mark) and event.name == "first_audio":
                    made.append(event.seconds)
                yield event

        monkeypatch.setattr(Conversation, "turn", marked)
        speakers = Speakers(latency=0.4)  # sound reaches the ears 0.4 s after the callback
        window = open_window(speaking_worker(speakers, SPEECH))
        load(qtbot, window, tiny_bundle)
        heard: list[float] = []
        window.speech.first_sound.connect(heard.append)
        ask(qtbot, window, "Say something")
        qtbot.waitUntil(lambda: len(heard) == 1, timeout=TIMEOUT_MS)
        qtbot.waitUntil(lambda: "first audio" in window.status_line.speed_status.text(), timeout=TIMEOUT_MS)
        (first_made,) = made
        assert heard[0] >= first_made + 0.4 - 0.01, "not when the first chunk was made"
        assert f"first audio {heard[0] * 1000:.0f} ms" in window.status_line.speed_status.text()
        (output,) = speakers.outputs
        qtbot.waitUntil(lambda: not window.speech.speaking, timeout=TIMEOUT_MS)
        print(f"chunk made {first_made:.3f} s, heard {heard[0]:.3f} s, {output.block} per block")

    def test_a_slow_machine_is_told_once_what_would_help(self, qtbot, open_window, tiny_bundle: Bundle):
        speakers = Speakers()
        slowed = lambda: 100 * time.perf_counter()  # noqa: E731 (on this clock, speech is made 100x slower)
        window = open_window(speaking_worker(speakers, clock=slowed))
        load(qtbot, window, tiny_bundle)
        notes: list[str] = []
        window.worker.plan_noted.connect(notes.append)
        # (the worker's turns are unseeded: a reply that ends after a token or two may also have its
        # speech cut, SpeechBound's note, which is another matter)
        slow = lambda: [note for note in notes if "slower than it plays" in note]  # noqa: E731
        ask(qtbot, window, "First")
        qtbot.waitUntil(lambda: bool(slow()), timeout=TIMEOUT_MS)
        # notes.append runs on the worker's thread as the signal is emitted; the notice, queued to the
        # GUI thread, comes after it.
        qtbot.waitUntil(lambda: "slower than it plays" in window.notices.label.text(), timeout=TIMEOUT_MS)
        assert "a GPU" in window.notices.label.text()
        assert "a sentence at a time" in slow()[0]
        ask(qtbot, window, "Second")
        qtbot.wait(200)
        assert len(slow()) == 1, "said once"
        (output,) = speakers.outputs
        qtbot.waitUntil(lambda: not window.speech.speaking, timeout=TIMEOUT_MS)
        assert sound(output.heard()) > 0, "it still spoke"


class TestActivity:
    """Issue 17, build item 3: the assistant's state at a glance."""

    def test_the_chip_follows_listening_thinking_speaking(self, qtbot, open_window, tiny_bundle: Bundle):
        from app.window.main_window import Devices

        speakers = Speakers()
        window = open_window(speaking_worker(speakers), Devices(microphone_stream=MicrophoneFactory()))
        load(qtbot, window, tiny_bundle)
        seen: list[str] = []
        window.activity_chip.setObjectName("chip")
        original = window.activity_chip.show_activity

        def spy(state: str) -> None:
            if not seen or seen[-1] != state:
                seen.append(state)
            original(state)

        window.activity_chip.show_activity = spy  # type: ignore[method-assign]
        assert window.activity_chip.text() == "Ready"
        qtbot.mousePress(window.push_to_talk.button, Qt.MouseButton.LeftButton)
        assert window.activity_chip.text() == "● Listening"
        qtbot.mouseRelease(window.push_to_talk.button, Qt.MouseButton.LeftButton)  # too short: not sent
        ask(qtbot, window, "Hello")
        qtbot.waitUntil(lambda: not window.speech.speaking, timeout=TIMEOUT_MS)
        assert seen == ["listening", "ready", "thinking", "speaking", "ready"], seen
