"""The window on the tiny bundle: streaming, stopping, no model, a bad model."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QAbstractButton, QApplication, QCheckBox

from app.history.store import History
from app.window.main_window import MainWindow
from app.window.preferences import MODELS_FOLDER_KEY
from app.worker import ConversationWorker
from model.errors import OmnideskError
from model.files.bundle import Bundle
from model.media import Audio
from model.pipeline import Conversation
from tests.app.windows import MAX_TOKENS, SPEECH, TIMEOUT_MS, RecordingSink, ask, load, worker
from tests.helpers import bundle_that_hears, speech_like


@pytest.fixture
def window(qtbot, settings, history_store):
    win = MainWindow(settings, worker(), history_store)
    qtbot.addWidget(win)
    yield win
    win.close()


class TestWithoutModel:
    def test_first_start_says_there_is_no_model_and_offers_a_folder(self, window: MainWindow):
        assert window.notices.label.isVisible() or not window.isVisible()
        assert "No model yet" in window.notices.label.text()
        assert window.models.choose_button.isEnabled()

    def test_a_bad_bundle_is_explained_in_the_window(self, qtbot, window: MainWindow, tmp_path):
        with qtbot.waitSignal(window.model_unavailable, timeout=TIMEOUT_MS) as blocker:
            window.models.load(str(tmp_path / "missing"))
        assert "missing" in blocker.args[0]
        assert "missing" in window.notices.label.text()
        assert window.models.status.text() == "No model"
        assert window.activity_chip.activity == "no_model"

    def test_the_activity_chip_says_ready_only_once_a_model_is_loaded(
        self, qtbot, window: MainWindow, tiny_bundle: Bundle
    ):
        """It had said Ready with no model loaded."""
        assert window.activity_chip.activity == "no_model" and window.activity_chip.text() == "No model"
        load(qtbot, window, tiny_bundle)
        assert window.activity_chip.activity == "ready"

    def test_asking_without_a_model_keeps_the_window_usable(self, qtbot, window: MainWindow):
        window.composer.question_box.setPlainText("hello?")
        with qtbot.waitSignal(window.session.notice, timeout=TIMEOUT_MS):
            window.composer.send_requested.emit()  # Enter in the question box; Send is disabled
        assert (
            "No model" in window.notices.label.text() and "No model" in window.composer.send_button.toolTip()
        )
        box = window.composer.question_box
        assert box.toPlainText() == "hello?" and box.isEnabled()


class TestConversation:
    def test_reply_streams_into_the_chat_view(self, qtbot, window: MainWindow, tiny_bundle: Bundle, settings):
        load(qtbot, window, tiny_bundle)
        assert "CPU" in window.models.status.text()
        assert not window.models.choose_button.isVisibleTo(window), "the model is set up"
        pieces: list[str] = []
        window.session.reply_progressed.connect(pieces.append)
        reason = ask(qtbot, window, "What am I looking at?")
        assert reason in ("end", "length")
        assert len(pieces) > 1, "the reply arrives in pieces"
        assert "".join(pieces) in window.chat_view.transcript()
        assert "What am I looking at?" in window.chat_view.toPlainText()
        assert "tokens/s" in window.status_line.speed_status.text()
        assert settings.value(MODELS_FOLDER_KEY) == str(tiny_bundle.root)

    def test_second_turn_sees_the_first(self, qtbot, window: MainWindow, tiny_bundle: Bundle):
        load(qtbot, window, tiny_bundle)
        ask(qtbot, window, "First question")
        ask(qtbot, window, "Second question")
        text = window.chat_view.transcript()
        assert text.index("First question") < text.index("Second question")

    def test_a_recording_longer_than_the_model_hears_is_cut_with_a_notice(
        self, qtbot, window: MainWindow, tiny_bundle: Bundle, tmp_path
    ):
        """A bundle whose checkpoint hears 2 s (the released ones: 300 s), asked about 3 s of speech."""
        load(qtbot, window, Bundle.open(bundle_that_hears(tiny_bundle, 2, tmp_path)))
        window.composer.speech_toggle.setChecked(False)
        window.composer.attachments.add(Audio(speech_like(3.0)), "Recording, 3.0 s")
        ask(qtbot, window, "What did I say?")
        assert (
            window.notices.label.text()
            == "Heard only the first 0:02 of a 0:03 recording: the most this model takes."
        )

    def test_stop_ends_the_reply_and_marks_it(self, qtbot, window: MainWindow, tiny_bundle: Bundle):
        load(qtbot, window, tiny_bundle)
        window.session.reply_progressed.connect(lambda _: window.composer.stop_button.click())
        reason = ask(qtbot, window, "Tell me a long story")
        assert reason == "cancelled"
        assert "(interrupted)" in window.chat_view.toPlainText()
        assert window.composer.send_button.isEnabled() and not window.composer.stop_button.isEnabled()

    def test_the_last_bundle_is_loaded_at_the_next_start(
        self, qtbot, tiny_bundle: Bundle, settings, history_store
    ):
        settings.setValue(MODELS_FOLDER_KEY, str(tiny_bundle.root))
        win = MainWindow(settings, worker(), history_store)
        qtbot.addWidget(win)
        qtbot.waitUntil(lambda: win.models.status.text().startswith("Model:"), timeout=TIMEOUT_MS)
        assert not win.notices.label.text()
        win.close()


class TestHistory:
    def test_the_conversation_survives_a_restart_of_the_window(
        self, qtbot, tiny_bundle: Bundle, settings, tmp_path
    ):
        path = tmp_path / "kept.sqlite3"
        first = MainWindow(settings, worker(), History(path))
        qtbot.addWidget(first)
        load(qtbot, first, tiny_bundle)
        ask(qtbot, first, "Remember this question")
        said = first.chat_view.transcript()
        first.close()
        first.history.close()

        second = MainWindow(settings, worker(), History(path))
        qtbot.addWidget(second)
        assert second.conversations.items.count() == 1
        assert second.conversations.items.item(0).text() == "Remember this question"
        second.conversations.conversation_chosen.emit(second.conversations.items.item(0).data(256))
        assert second.chat_view.transcript() == said
        second.close()
        second.history.close()

    def test_new_chat_and_reopening_an_old_one(self, qtbot, window: MainWindow, tiny_bundle: Bundle):
        load(qtbot, window, tiny_bundle)
        ask(qtbot, window, "Old question")
        old = window.chat_view.transcript()
        window.conversations.new_button.click()
        assert window.chat_view.transcript() == ""
        ask(qtbot, window, "New question")
        assert "Old question" not in window.chat_view.transcript()
        assert window.conversations.items.count() == 2
        old_id = next(c.id for c in window.history.conversations() if c.title == "Old question")
        window.conversations.conversation_chosen.emit(old_id)
        assert window.chat_view.transcript() == old
        ask(qtbot, window, "Follow-up")
        stored = [m.text for m in window.history.messages(old_id) if m.role == "user"]
        assert stored == ["Old question", "Follow-up"]


class TestSpeech:
    @pytest.fixture
    def spoken(self, qtbot, settings, history_store, tiny_bundle: Bundle):
        sink = RecordingSink()
        win = MainWindow(settings, worker(sink), history_store)
        qtbot.addWidget(win)
        load(qtbot, win, tiny_bundle)
        yield win, sink
        win.close()

    def test_a_spoken_turn_reaches_the_speakers(self, qtbot, spoken):
        window, sink = spoken
        assert window.composer.speech_toggle.isChecked()
        assert [window.composer.voice_box.itemText(i) for i in range(window.composer.voice_box.count())] == [
            "Chelsie",
            "Ethan",
        ]
        assert ask(qtbot, window, "Read this aloud") in ("end", "length")
        assert sum(len(c) for c in sink.chunks) > 0
        assert "first audio" in window.status_line.speed_status.text()

    def test_switching_the_voice_between_turns(self, qtbot, spoken, monkeypatch):
        window, _ = spoken
        voices: list[str] = []
        turn = Conversation.turn

        def spy(self, text, options, heard=None):
            voices.append(options.speech.voice)
            return turn(self, text, options, heard)

        monkeypatch.setattr(Conversation, "turn", spy)
        ask(qtbot, window, "First")
        window.composer.voice_box.setCurrentText("Ethan")
        ask(qtbot, window, "Second")
        assert voices == ["Chelsie", "Ethan"]

    def test_interrupting_speech_silences_the_speakers(self, qtbot, spoken):
        window, sink = spoken
        window.session.reply_progressed.connect(lambda _: window.composer.stop_button.click())
        assert ask(qtbot, window, "Talk a lot") == "cancelled"
        assert sink.stopped >= 1

    def test_without_a_sound_output_replies_stay_in_text(self, qtbot, settings, history_store, tiny_bundle):
        def no_speakers(rate: int):
            raise OmnideskError("cannot open the sound output (no device)")

        quiet = ConversationWorker(max_tokens=MAX_TOKENS, speech=SPEECH, sink_factory=no_speakers)
        win = MainWindow(settings, quiet, history_store)
        qtbot.addWidget(win)
        load(qtbot, win, tiny_bundle)
        assert ask(qtbot, win, "Can you hear me?") in ("end", "length")
        assert (
            "Replies are in text only" in win.notices.label.text()
            and not win.composer.speech_toggle.isChecked()
        )
        assert "Can you hear me?" in win.chat_view.transcript()
        win.close()


class TestTheme:
    def test_dark_light_and_remembered(self, qtbot, window: MainWindow, settings):
        from PySide6.QtGui import QPalette
        from PySide6.QtWidgets import QApplication

        window.set_theme("dark")
        dark = QApplication.instance().palette().color(QPalette.ColorRole.Window)
        window.set_theme("light")
        light = QApplication.instance().palette().color(QPalette.ColorRole.Window)
        assert dark.lightness() < 80 < light.lightness()
        assert settings.value("appearance/theme") == "light"
        window.set_theme("system")


class TestDisabled:
    @pytest.mark.parametrize("theme", ["light", "dark"])
    def test_disabled_text_is_set_apart_in_both_themes(self, theme):
        from PySide6.QtGui import QPalette

        from app.window.theme import apply_theme

        app = QApplication.instance()
        apply_theme(app, theme)
        palette = app.palette()
        app.setStyleSheet("")  # as the other tests expect it
        app.setPalette(app.style().standardPalette())
        for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
            on = palette.color(QPalette.ColorGroup.Active, role).lightness()
            off = palette.color(QPalette.ColorGroup.Disabled, role).lightness()
            assert abs(on - off) > 50, f"{role.name}: {on} enabled, {off} disabled"


class TestLayout:
    """Issue 29, item 10: the window fits half a 1440 px screen, and nothing moves when a toggle changes."""

    HALF_SCREEN = 720

    def controls(self, window: MainWindow) -> list:
        composer, camera = window.composer, window.camera_panel
        return [
            window.conversations.new_button,
            window.conversations.search,
            composer.question_box,
            composer.attach_button,
            composer.screen_button,
            camera.button,
            camera.snapshot_button,
            composer.voice_box,
            composer.speech_toggle,
            composer.stop_button,
            composer.send_button,
            window.push_to_talk.button,
            window.hands_free.button,
            window.press_shots.share_button,
            window.call.button,
            window.call.source,
            window.models.choose_button,
            window.activity_chip,
        ]

    def geometry(self, window: MainWindow) -> dict:
        """Where each control is in the window, and its size."""
        return {
            c.accessibleName() or repr(c): (c.mapTo(window, c.rect().topLeft()), c.size())
            for c in self.controls(window)
        }

    def test_fits_half_a_laptop_screen_with_every_control_reachable(self, qtbot, window: MainWindow):
        window.models.status.setText(
            "Model: a bundle with a long name (q4_k_m) on CPU, speech on CPU float32"
        )
        window.status_line.show_in_use(["Microphone", "Camera"], shared=("Screen",))
        window.show()
        assert window.minimumSizeHint().width() <= self.HALF_SCREEN
        window.resize(self.HALF_SCREEN, 700)
        qtbot.waitUntil(lambda: window.width() == self.HALF_SCREEN, timeout=TIMEOUT_MS)
        for button in (c for c in self.controls(window) if isinstance(c, QAbstractButton)):
            named = button.accessibleName() or button.text()
            assert named, f"{button} is named for screen readers"
            tool = not isinstance(button, QCheckBox) and button is not window.models.choose_button
            assert not tool or not button.icon().isNull(), f"{named} has an icon"
        inside = window.rect()
        for control in self.controls(window):
            place = control.rect().translated(control.mapTo(window, control.rect().topLeft()))
            assert control.isVisibleTo(window) and inside.contains(place), control
            assert control.width() >= control.minimumSizeHint().width(), f"{control} is cut"

    def test_toggles_move_nothing(self, qtbot, settings, history_store):
        from app.window.main_window import Devices
        from tests.app.fakes import FakeCapture, MicrophoneFactory

        devices = Devices(microphone_stream=MicrophoneFactory(), camera_source=lambda index: FakeCapture())
        window = MainWindow(settings, worker(), history_store, devices)
        qtbot.addWidget(window)
        window.show()
        window.resize(self.HALF_SCREEN, 700)
        qtbot.waitExposed(window)
        before = self.geometry(window)
        toggles = (window.hands_free.button, window.press_shots.share_button, window.composer.speech_toggle)
        for toggle in (*toggles, window.camera_panel.button):
            for _ in range(2):  # on and off, or off and on
                was = toggle.isChecked()
                toggle.click()
                QApplication.processEvents()  # the layouts' requests are events
                assert toggle.isChecked() != was, f"{toggle.text()} changed"
                assert self.geometry(window) == before, f"{toggle.text()} moved the controls"
        window.close()


QUITS = 20


def test_quit_frees_the_model_only_once_a_slow_turn_has_ended(
    qtbot, window: MainWindow, tiny_bundle: Bundle, monkeypatch
):
    """A turn that takes 6 s to notice Stop (a Token2Wav window on a busy CPU): Quit had waited 5 s,
    then freed the model under it, and Python finalized while its threads ran."""
    import time

    from model.pipeline import TextDelta, TurnFinished

    load(qtbot, window, tiny_bundle)
    running, closed_while_running = [], []

    def slow_turn(self, question, options, heard=None):
        running.append(True)
        yield TextDelta("Once upon a time")
        time.sleep(6.0)
        running.clear()
        yield TurnFinished("cancelled", "Once upon a time", (), ())

    close = Conversation.close

    def spy_close(self) -> None:
        closed_while_running.append(bool(running))
        close(self)

    monkeypatch.setattr(Conversation, "turn", slow_turn)
    monkeypatch.setattr(Conversation, "close", spy_close)
    window.composer.question_box.setPlainText("Tell me a story")
    with qtbot.waitSignal(window.session.reply_progressed, timeout=TIMEOUT_MS):
        window.composer.send_button.click()
    window.close()
    assert closed_while_running == [False], "freed once, after the turn"
    assert not window._thread.isRunning()


@pytest.mark.slow
def test_quitting_while_speech_plays_exits_cleanly_every_time(tiny_bundle: Bundle, sound_server):
    """After a long session, quitting while it spoke once ended in `Fatal Python error: bool_dealloc`
    (Python finalizing while a stage thread or the speakers' callback still ran)."""
    import subprocess
    import sys

    for n in range(QUITS):
        result = subprocess.run(
            [sys.executable, "-m", "tests.app.window.quit_while_speaking", str(tiny_bundle.root)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0 and "Fatal Python error" not in result.stderr, (
            n,
            result.stderr[-3000:],
        )
