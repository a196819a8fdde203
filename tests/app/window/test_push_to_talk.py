"""Push-to-talk: the level meter, the talk key, recordings and their signals; then in the window
on the tiny bundle: a spoken turn, a slip of the finger, talking over a reply, microphones lost."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QApplication, QLineEdit, QPushButton, QVBoxLayout, QWidget

from app.sound.microphone import BLOCK
from app.window.main_window import Devices
from app.window.preferences import INPUT_DEVICE_KEY
from app.window.push_to_talk import LISTENING_LABEL, METER_FLOOR_DB, PushToTalk, meter_percent
from model.files.bundle import Bundle
from tests.app.fakes import MicrophoneFactory
from tests.app.windows import TIMEOUT_MS, RecordingSink, kept_recordings, load, open_window, talk

WAIT_MS = 5_000


def decibels(db: float) -> float:
    """The peak amplitude (full scale 1.0) at `db` dBFS."""
    return 10 ** (db / 20)


@pytest.fixture
def alone(qtbot, settings):
    """A PushToTalk in a window of its own, with a button and a text field; a fake microphone."""
    window = QWidget()
    qtbot.addWidget(window)
    factory = MicrophoneFactory()
    push_to_talk = PushToTalk(settings, factory, window)
    other, field = QPushButton("Other"), QLineEdit()
    other.setObjectName("other")
    layout = QVBoxLayout(window)
    for widget in (push_to_talk.button, push_to_talk.level_meter, other, field):
        layout.addWidget(widget)
    yield push_to_talk, factory, window
    push_to_talk.close()


class TestLevelMeter:
    def test_the_meter_spans_the_floor_to_full_scale_in_decibels(self):
        assert meter_percent(0.0) == 0
        assert meter_percent(decibels(METER_FLOOR_DB - 20)) == 0, "below the floor the meter stays empty"
        assert meter_percent(decibels(METER_FLOOR_DB / 2)) == 50
        assert meter_percent(decibels(-6)) == 90
        assert meter_percent(1.0) == 100

    def test_the_meter_follows_what_the_microphone_hears(self, qtbot, alone):
        push_to_talk, factory, _ = alone
        push_to_talk.start()
        factory.streams[0].push(np.full(BLOCK, decibels(-30), np.float32))
        qtbot.waitUntil(lambda: push_to_talk.level_meter.value() == 50, timeout=WAIT_MS)
        push_to_talk.stop()


class TestTalking:
    def test_a_recording_long_enough_is_finished_with_its_audio(self, qtbot, alone):
        push_to_talk, factory, window = alone
        events: list = []
        push_to_talk.talk_pressed.connect(lambda: events.append("pressed"))
        push_to_talk.listening_changed.connect(events.append)
        push_to_talk.talk_key(True)
        assert push_to_talk.talking and push_to_talk.microphone is not None
        assert push_to_talk.level_meter.isVisibleTo(window)
        assert push_to_talk.button.text() == LISTENING_LABEL
        said = np.linspace(-0.5, 0.5, 16 * BLOCK, dtype=np.float32)  # 0.32 s
        factory.streams[0].push(said)
        with qtbot.waitSignal(push_to_talk.recording_finished, timeout=WAIT_MS) as finished:
            push_to_talk.talk_key(False)
        assert np.array_equal(finished.args[0].samples, said)
        assert events == ["pressed", True, False]
        assert not push_to_talk.talking and push_to_talk.microphone is None
        assert (
            not push_to_talk.level_meter.isVisibleTo(window) and push_to_talk.button.text() == "Hold to talk"
        )

    def test_a_slip_of_the_finger_is_a_notice_not_a_recording(self, qtbot, alone):
        push_to_talk, factory, _ = alone
        with (
            qtbot.assertNotEmitted(push_to_talk.recording_finished),
            qtbot.waitSignal(push_to_talk.notice, timeout=WAIT_MS) as notice,
        ):
            push_to_talk.talk_key(True)
            factory.streams[0].push(np.zeros(BLOCK, np.float32))
            push_to_talk.talk_key(False)
        assert notice.args[0] == (
            "The recording was too short (0.0 s): hold the button, or the Space key, while you speak."
        )

    def test_pressing_again_while_talking_changes_nothing(self, qtbot, alone):
        push_to_talk, factory, _ = alone
        presses: list[str] = []
        push_to_talk.talk_pressed.connect(lambda: presses.append("pressed"))
        push_to_talk.talk_key(True)
        push_to_talk.talk_key(True)
        assert presses == ["pressed"] and len(factory.streams) == 1
        push_to_talk.talk_key(False)

    def test_closing_while_talking_stops_listening_and_keeps_nothing(self, qtbot, alone):
        push_to_talk, factory, _ = alone
        finished: list[object] = []
        push_to_talk.recording_finished.connect(finished.append)
        push_to_talk.talk_key(True)
        push_to_talk.close()
        assert not push_to_talk.talking and push_to_talk.microphone is None
        assert factory.streams[0].closed and not finished
        push_to_talk.start()  # a later press listens again, on a new stream
        assert push_to_talk.talking and len(factory.streams) == 2
        push_to_talk.stop()

    def test_without_a_microphone_a_press_is_a_notice(self, qtbot, settings):
        window = QWidget()
        qtbot.addWidget(window)
        push_to_talk = PushToTalk(settings, MicrophoneFactory(unplugged={None}), window)
        presses: list[str] = []
        push_to_talk.talk_pressed.connect(lambda: presses.append("pressed"))
        with qtbot.waitSignal(push_to_talk.notice, timeout=WAIT_MS) as notice:
            push_to_talk.talk_key(True)
        assert notice.args[0].endswith(". Type your question instead.")
        assert presses == ["pressed"], "the press is told, so a running reply is still interrupted"
        assert not push_to_talk.talking and push_to_talk.microphone is None
        push_to_talk.close()


class TestTalkKey:
    def test_the_key_talks_in_the_window_but_types_in_a_text_field(self, qtbot, alone):
        push_to_talk, _, window = alone
        window.show()
        other, field = window.findChild(QPushButton, "other"), window.findChild(QLineEdit)
        other.setFocus()
        qtbot.keyPress(other, Qt.Key.Key_Space)
        assert push_to_talk.talking
        qtbot.keyRelease(other, Qt.Key.Key_Space)
        qtbot.waitUntil(lambda: not push_to_talk.talking, timeout=WAIT_MS)
        field.setFocus()
        qtbot.keyClick(field, Qt.Key.Key_Space)
        assert not push_to_talk.talking and field.text() == " "

    def test_auto_repeats_other_keys_and_other_windows_are_left_alone(self, qtbot, alone):
        push_to_talk, _, window = alone
        window.show()
        repeat = QKeyEvent(QEvent.Type.KeyPress, Qt.Key.Key_Space, Qt.KeyboardModifier.NoModifier, " ", True)
        QApplication.sendEvent(window, repeat)
        qtbot.keyPress(window, Qt.Key.Key_A)
        elsewhere = QWidget()
        qtbot.addWidget(elsewhere)
        qtbot.keyPress(elsewhere, Qt.Key.Key_Space)
        assert not push_to_talk.talking and push_to_talk.microphone is None


def key(kind: QEvent.Type) -> QKeyEvent:
    """A Space key event as X11 sends a held key's repeats under Xvfb: not marked as a repeat."""
    return QKeyEvent(kind, Qt.Key.Key_Space, Qt.KeyboardModifier.NoModifier, " ", False)


class TestHeldKeyUnderX11Autorepeat:
    @pytest.mark.parametrize("gap_ms", [0, 10])
    def test_release_press_pairs_while_held_make_one_recording_of_the_whole_hold(self, qtbot, alone, gap_ms):
        """2 s held: after 660 ms, a release and a press every 40 ms (`gap_ms` apart), as X11 repeats."""
        push_to_talk, factory, window = alone
        window.show()
        target = window.findChild(QPushButton, "other")
        target.setFocus()
        events: list = []
        push_to_talk.talk_pressed.connect(lambda: events.append("pressed"))
        push_to_talk.listening_changed.connect(events.append)
        recordings: list = []
        push_to_talk.recording_finished.connect(recordings.append)
        said = np.random.default_rng(3).uniform(-0.5, 0.5, 100 * BLOCK).astype(np.float32)  # 2 s
        QApplication.sendEvent(target, key(QEvent.Type.KeyPress))
        pieces = np.array_split(said, 50)
        for n, piece in enumerate(pieces):  # every 40 ms: 20 ms blocks of speech, then maybe a repeat
            factory.streams[0].push(piece)
            qtbot.wait(40)
            if n >= 16:  # 660 ms in: X11 starts repeating
                QApplication.sendEvent(target, key(QEvent.Type.KeyRelease))
                if gap_ms:
                    qtbot.wait(gap_ms)
                QApplication.sendEvent(target, key(QEvent.Type.KeyPress))
            assert push_to_talk.talking, f"let go at {40 * (n + 1)} ms, while the key was held"
        QApplication.sendEvent(target, key(QEvent.Type.KeyRelease))
        qtbot.waitUntil(lambda: not push_to_talk.talking, timeout=WAIT_MS)
        assert events == ["pressed", True, False], "one press, one recording"
        (recording,) = recordings
        assert np.array_equal(recording.samples, said), "the whole hold, not fragments"

    def test_a_quick_tap_still_lets_go(self, qtbot, alone):
        push_to_talk, factory, window = alone
        window.show()
        target = window.findChild(QPushButton, "other")
        target.setFocus()
        said = np.full(20 * BLOCK, 0.25, np.float32)  # 0.4 s
        QApplication.sendEvent(target, key(QEvent.Type.KeyPress))
        factory.streams[0].push(said)
        qtbot.wait(100)
        with qtbot.waitSignal(push_to_talk.recording_finished, timeout=WAIT_MS) as finished:
            QApplication.sendEvent(target, key(QEvent.Type.KeyRelease))
        assert np.array_equal(finished.args[0].samples, said) and not push_to_talk.talking
        QApplication.sendEvent(target, key(QEvent.Type.KeyPress))  # pressed again later: a new recording
        assert push_to_talk.talking and len(factory.streams) == 2
        QApplication.sendEvent(target, key(QEvent.Type.KeyRelease))
        qtbot.waitUntil(lambda: not push_to_talk.talking, timeout=WAIT_MS)


class TestInTheWindow:
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
        assert not window.status_line.in_use.isVisibleTo(window) and window.push_to_talk.microphone is None
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

    def test_a_slip_of_the_finger_is_not_sent(self, qtbot, settings, history_store):
        window = open_window(qtbot, settings, history_store, Devices(microphone_stream=MicrophoneFactory()))
        with qtbot.assertNotEmitted(window.session.question_asked):
            qtbot.mousePress(window.push_to_talk.button, Qt.MouseButton.LeftButton)
            qtbot.mouseRelease(window.push_to_talk.button, Qt.MouseButton.LeftButton)
        assert "too short (0.0 s)" in window.notices.label.text()
        assert window.composer.attachments.media == [] and not window.status_line.in_use.isVisibleTo(window)
        window.close()

    def test_without_a_microphone_the_window_says_so(self, qtbot, settings, history_store):
        window = open_window(
            qtbot, settings, history_store, Devices(microphone_stream=MicrophoneFactory(unplugged={None}))
        )
        qtbot.mousePress(window.push_to_talk.button, Qt.MouseButton.LeftButton)
        qtbot.mouseRelease(window.push_to_talk.button, Qt.MouseButton.LeftButton)
        assert (
            "cannot open the microphone" in window.notices.label.text()
            and "Type your question" in window.notices.label.text()
        )
        assert window.push_to_talk.microphone is None and not window.status_line.in_use.isVisibleTo(window)
        window.close()

    def test_the_key_talks_unless_the_question_box_has_the_focus(self, qtbot, settings, history_store):
        window = open_window(qtbot, settings, history_store, Devices(microphone_stream=MicrophoneFactory()))
        window.show()
        window.chat_view.setFocus()
        qtbot.keyPress(window.chat_view, Qt.Key.Key_Space)
        assert window.push_to_talk.microphone is not None
        qtbot.keyRelease(window.chat_view, Qt.Key.Key_Space)
        qtbot.waitUntil(lambda: window.push_to_talk.microphone is None, timeout=WAIT_MS)
        assert "too short" in window.notices.label.text()
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
        qtbot.waitUntil(lambda: "went away" in window.notices.label.text(), timeout=TIMEOUT_MS)
        assert "“USB mic” went away: recording goes on with the system default" in window.notices.label.text()
        assert factory.streams[1].settings["device"] is None and window.status_line.in_use.isVisibleTo(window)
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
        assert "what was recorded is kept" in window.notices.label.text()
        assert not window.status_line.in_use.isVisibleTo(window)
        qtbot.waitUntil(lambda: "No model" in window.notices.label.text(), timeout=TIMEOUT_MS)
        assert kept_recordings(window) == [pytest.approx(20 * BLOCK / 16_000, abs=1e-4)]
        window.close()
