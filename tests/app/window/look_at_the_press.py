"""Run as `python -m tests.app.window.look_at_the_press BUNDLE SPEECH.npy REPORT.json` on a real X
screen (DISPLAY, QT_QPA_PLATFORM=xcb) with PULSE_SERVER naming a test sound server
(tests/app/sound_server.py): the window, Share screen on, its microphone the server's virtual one.

A coloured strip beside the window shows SHOWN_AT_PRESS; the talk button goes down; once the press's
shot is attached the strip shows SHOWN_AT_RELEASE; the question (SPEECH, float32 at 16 kHz) is said
into the microphone; the button comes up and the reply runs. Then two presses come to nothing: a
slip of the finger and Escape. The report (JSON) says what the question carried, what the worker
looked at while listening, what the history kept and what was left behind; the test judges it."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from tests.app.window.on_an_x_screen import OnTheScreen, strip_colour

TIMEOUT_S = 240
SHOWN_AT_PRESS, SHOWN_AT_RELEASE = (200, 30, 30), (30, 30, 200)


def spy(owner: type, name: str, calls: list) -> None:
    """Keep the first argument of each call of `owner`'s method `name` in `calls`."""
    real = getattr(owner, name)

    def spied(self, first, *rest):
        calls.append(first)
        return real(self, first, *rest)

    setattr(owner, name, spied)


def main(bundle: str, speech: str, report: str) -> int:
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtTest import QTest

    from app.capture.screen import grab_screen
    from app.window.main_window import MainWindow
    from app.window.preferences import SHARE_SCREEN_KEY
    from model.pipeline import Conversation, Listening
    from model.vision import FrameEncoder
    from tests.app import sound_server

    looked: list = []  # the pictures the worker put in the Thinker's cache while listening
    asked: list = []  # the questions that reached the pipeline
    encoded: list = []  # the pictures the vision encoder encoded
    spy(Listening, "look", looked)
    spy(Conversation, "turn", asked)
    spy(FrameEncoder, "encode", encoded)

    screen = OnTheScreen(TIMEOUT_S, SHOWN_AT_PRESS)
    wait_until, paint_strip = screen.wait_until, screen.paint

    with tempfile.TemporaryDirectory(prefix="omnidesk-look-") as folder:
        window: MainWindow = screen.window(Path(folder), bundle, {SHARE_SCREEN_KEY: "true"})
        history = window.history
        replies: list[str] = []
        window.session.reply_completed.connect(replies.append)
        begun: list = []
        window.listening_begun.connect(begun.append)
        button = window.push_to_talk.button

        QTest.mousePress(button, Qt.MouseButton.LeftButton)
        wait_until(lambda: begun, "the press")
        attached_at_press = list(window.composer.attachments.labels())
        paint_strip(SHOWN_AT_RELEASE)  # the screen changes while the user speaks
        speaking = threading.Thread(target=sound_server.say, args=(np.load(speech), dict(os.environ)))
        speaking.start()
        wait_until(lambda: not speaking.is_alive(), "the question to be said")
        QTest.qWait(300)  # the last polls of the microphone
        QTest.mouseRelease(button, Qt.MouseButton.LeftButton)
        wait_until(lambda: replies, "the reply")
        question = asked[0]
        shot = question.images[0]
        looked_for_it, encoded_for_it = list(looked), list(encoded)

        def left_behind() -> dict:
            QTest.qWait(300)
            done = threading.Event()
            QTimer.singleShot(0, window.worker, done.set)  # after whatever the worker has queued
            wait_until(done.is_set, "the worker")
            return {
                "attached": window.composer.attachments.labels(),
                "listening": window.worker._listening is not None,
                "cached": window.worker._conversation.thinker.n_cached,
            }

        after_reply = left_behind()
        QTest.mousePress(button, Qt.MouseButton.LeftButton)  # a slip of the finger
        slip_attached = list(window.composer.attachments.labels())
        QTest.mouseRelease(button, Qt.MouseButton.LeftButton)
        after_slip = left_behind()
        window.chat_view.setFocus()  # not the question box, where the talk key types
        QTest.keyPress(window.chat_view, Qt.Key.Key_Space)  # the talk key, then Escape
        escape_attached = list(window.composer.attachments.labels())
        QTest.keyPress(window.chat_view, Qt.Key.Key_Escape)
        QTest.keyRelease(window.chat_view, Qt.Key.Key_Space)
        after_escape = left_behind()
        stored = [
            attachment.kind
            for chat in history.conversations()
            for message in history.messages(chat.id)
            for attachment in message.attachments
        ]
        result = {
            "attached_at_press": attached_at_press,
            "reply": replies[0],
            "questions": len(asked),
            "question_images": [list(image.pixels.shape) for image in question.images],
            "question_strip": strip_colour(shot.pixels),
            "screen_strip_at_release": strip_colour(grab_screen().pixels),
            "looked_is_asked": [image is shot for image in looked_for_it],
            "look_carried_it": [image is shot for image in begun[0].images],
            "encoded": [list(image.pixels.shape) for image in encoded_for_it],
            "looks": len(begun),
            "stored": stored,
            "slip_attached": slip_attached,
            "escape_attached": escape_attached,
            "after_reply": after_reply,
            "after_slip": after_slip,
            "after_escape": after_escape,
            "notice": window.notices.label.text(),
        }
        return screen.report(window, report, result)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
