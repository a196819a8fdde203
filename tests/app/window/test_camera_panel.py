"""The camera panel: on and off, "Ask about this", a camera that does not open or goes away;
then in the window on the tiny bundle: a question about the frame, the fallback to camera 0."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtWidgets import QVBoxLayout, QWidget

from app.capture import camera as camera_module
from app.window.camera_panel import CameraPanel
from app.window.main_window import Devices
from app.window.preferences import CAMERA_KEY
from model.files.bundle import Bundle
from tests.app.fakes import FakeCapture
from tests.app.windows import TIMEOUT_MS, load, open_window

WAIT_MS = 10_000


class HeldCapture(FakeCapture):
    """A capture whose first frame waits until the test lets it come."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    def read(self):
        self.go.wait(WAIT_MS / 1000)
        return super().read()


def panel_for(qtbot, settings, source) -> tuple[CameraPanel, QWidget, list[bool]]:
    """A panel laid out in a window of its own (keep it: the panel's widgets go with it); the list
    records the panel's camera_changed signals."""
    window = QWidget()
    qtbot.addWidget(window)
    panel = CameraPanel(settings, source, window)
    layout = QVBoxLayout(window)
    for widget in (panel.preview, panel.button, panel.snapshot_button):
        layout.addWidget(widget)
    changes: list[bool] = []
    panel.camera_changed.connect(changes.append)
    return panel, window, changes


class TestPanel:
    def test_the_button_turns_the_camera_and_its_preview_on_and_off(self, qtbot, settings):
        panel, window, changes = panel_for(qtbot, settings, lambda index: FakeCapture())
        assert not panel.snapshot_button.isEnabled() and not panel.preview.isVisibleTo(window)
        panel.button.click()
        assert panel.camera is not None and panel.snapshot_button.isEnabled()
        assert panel.preview.isVisibleTo(window)
        qtbot.waitUntil(lambda: not panel.preview.pixmap().isNull(), timeout=WAIT_MS)
        assert panel.preview.pixmap().width() == 320
        panel.button.click()
        assert panel.camera is None and not panel.snapshot_button.isEnabled()
        assert not panel.preview.isVisibleTo(window) and changes == [True, False]

    def test_ask_about_this_hands_over_the_current_frame(self, qtbot, settings):
        panel, _window, _ = panel_for(qtbot, settings, lambda index: FakeCapture())
        panel.button.click()
        qtbot.waitUntil(lambda: panel.camera.image() is not None, timeout=WAIT_MS)
        with qtbot.waitSignal(panel.frame_attached, timeout=WAIT_MS) as attached:
            panel.snapshot_button.click()
        image = attached.args[0]
        assert image.pixels.shape == (240, 320, 3) and tuple(image.pixels[200, 300]) == (200, 20, 40)
        panel.close()

    def test_before_the_first_frame_it_asks_to_wait(self, qtbot, settings):
        capture = HeldCapture()
        panel, _window, _ = panel_for(qtbot, settings, lambda index: capture)
        panel.button.click()
        with (
            qtbot.assertNotEmitted(panel.frame_attached),
            qtbot.waitSignal(panel.notice, timeout=WAIT_MS) as notice,
        ):
            panel.snapshot_button.click()
        assert notice.args[0] == "The camera has not given a picture yet: try again in a moment."
        capture.go.set()
        panel.close()

    @pytest.mark.parametrize(
        "listed, message",
        [
            ([(0, "Webcam (video0)")], "There is no camera 3 (the cameras here: 0)."),
            ([], "No camera was found: connect one, then turn the camera on."),
            ([(3, "USB (video3)")], "Camera 3 could not be opened: another program may be using it."),
        ],
    )
    def test_a_camera_that_does_not_open_is_a_notice(self, qtbot, settings, monkeypatch, listed, message):
        monkeypatch.setattr(camera_module, "listed_cameras", lambda: listed)
        settings.setValue(CAMERA_KEY, "3")
        missing = FakeCapture()
        missing.released = True
        panel, _window, changes = panel_for(qtbot, settings, lambda index: missing)
        with qtbot.waitSignal(panel.notice, timeout=WAIT_MS) as notice:
            panel.button.click()
        assert notice.args[0] == message
        assert panel.camera is None and not panel.button.isChecked() and changes == []

    def test_the_default_camera_going_away_turns_the_camera_off(self, qtbot, settings):
        panel, _window, changes = panel_for(qtbot, settings, lambda index: FakeCapture(fail_after=3))
        with qtbot.waitSignal(panel.notice, timeout=WAIT_MS) as notice:
            panel.button.click()
        assert notice.args[0] == "Camera 0 went away. Plug it in again and turn the camera on."
        assert panel.camera is None and not panel.button.isChecked() and changes == [True, False]


class TestInTheWindow:
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
        qtbot.waitUntil(
            lambda: "showing the default camera" in window.notices.label.text(), timeout=TIMEOUT_MS
        )
        assert (
            opened == [2, 0]
            and window.camera_panel.camera is not None
            and window.status_line.in_use.text() == "● Camera on"
        )
        window.camera_panel.button.click()
        assert window.camera_panel.camera is None and not window.status_line.in_use.isVisibleTo(window)
        window.close()

    def test_ask_about_the_camera_frame(self, qtbot, settings, history_store, tiny_bundle: Bundle, questions):
        window = open_window(
            qtbot, settings, history_store, Devices(camera_source=lambda index: FakeCapture())
        )
        load(qtbot, window, tiny_bundle)
        assert not window.camera_panel.snapshot_button.isEnabled()
        window.camera_panel.button.click()
        assert (
            window.camera_panel.preview.isVisibleTo(window)
            and window.status_line.in_use.text() == "● Camera on"
        )
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
