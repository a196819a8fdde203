"""Run as `python -m tests.app.window.call_on_the_screen BUNDLE SPEECH.npy REPORT.json` on a real X screen
(DISPLAY, QT_QPA_PLATFORM=xcb) with PULSE_SERVER naming a test sound server (tests/app/sound_server.py):
the window, its microphone the server's virtual one, a call with the screen.

A coloured strip below the window shows FIRST_COLOUR; the Call button goes down; the question (SPEECH,
float32 at 16 kHz) is said into the microphone, and voice activity sends the turn when it ends. Once
the first reply has ended the strip shows SECOND_COLOUR and the question is said again. Then the call
ends. The report (JSON) says, for each turn the pipeline answered: the colours its frames showed, its
video's grid and sound, and (for the second) the prompt's ids, media grids and our positions, which
the test compares with the reference's; and what the history kept and what was left behind."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from tests.app.window.on_an_x_screen import OnTheScreen, strip_colour

TIMEOUT_S = 300
FIRST_COLOUR, SECOND_COLOUR = (200, 30, 30), (30, 30, 200)


def main(bundle: str, speech: str, report: str) -> int:
    from PySide6.QtCore import Qt, QTimer
    from PySide6.QtTest import QTest

    from app.window.call import CALL_SOURCE_KEY
    from app.window.main_window import MainWindow
    from model.pipeline import Conversation
    from tests.app import sound_server

    asked: list = []  # (question, heard) of each turn that reached the pipeline
    prompts: list = []  # (ids, media grids, our positions) of each turn's prompt
    real_turn, real_prompt = Conversation.turn, Conversation.prompt

    def turn(self, question, options=None, heard=None):
        asked.append((question, heard))
        return real_turn(self, question, options, heard) if options is not None else real_turn(self, question)

    def prompt(self, question_ids, media=()):
        ids, segments = real_prompt(self, question_ids, media)
        every = [m for exchange in self.history for m in exchange.media] + list(media)
        _, positions = self.layout.segments(ids, every)
        grids = [
            {
                "t": m.grid.t,
                "h": m.grid.h,
                "w": m.grid.w,
                "seconds": m.grid.seconds_per_grid,
                "mel_frames": m.sound.grid.mel_frames,
            }
            for m in every
        ]
        prompts.append({"ids": list(ids), "grids": grids, "positions": positions.tolist()})
        return ids, segments

    Conversation.turn, Conversation.prompt = turn, prompt  # type: ignore[method-assign]
    screen = OnTheScreen(TIMEOUT_S, FIRST_COLOUR)
    said = np.load(speech)

    with tempfile.TemporaryDirectory(prefix="omnidesk-call-") as folder:
        window: MainWindow = screen.window(Path(folder), bundle, {CALL_SOURCE_KEY: "screen"})
        history = window.history
        replies: list[str] = []
        window.session.reply_completed.connect(replies.append)
        QTest.mouseClick(window.call.button, Qt.MouseButton.LeftButton)
        starting = window.call.bar.text()
        # The bar, not the worker's signal: a plain callable connected to it runs on the worker's thread,
        # before the window's queued slot has changed the bar.
        screen.wait_until(lambda: window.call.bar.text() != starting, "the call to begin")
        bar = window.call.bar.text()
        for number, colour in enumerate((FIRST_COLOUR, SECOND_COLOUR), start=1):
            screen.paint(colour)
            QTest.qWait(1500)  # the call sees it a while before the question
            speaking = threading.Thread(target=sound_server.say, args=(said, dict(os.environ)))
            speaking.start()
            screen.wait_until(lambda s=speaking: not s.is_alive(), f"question {number} to be said")
            screen.wait_until(lambda n=number: len(replies) == n, f"reply {number}")
            screen.wait_until(lambda: not window.speech.speaking, f"reply {number} to be spoken")
        QTest.mouseClick(window.call.button, Qt.MouseButton.LeftButton)  # the call ends
        done = threading.Event()
        QTimer.singleShot(0, window.worker, done.set)  # after whatever the worker has queued
        screen.wait_until(done.is_set, "the worker")
        conversation = window.worker._conversation
        turns = []
        for question, heard in asked:
            (video,) = question.videos
            turns.append(
                {
                    "call_turn": type(heard).__name__,
                    "frames": len(video.frames),
                    "colours": [strip_colour(frame) for frame in video.frames],
                    "sound_s": video.audio.seconds,
                    "frame_size": list(video.frame_size),
                    "use_audio_in_video": question.use_audio_in_video,
                }
            )
        stored = [
            [attachment.kind for attachment in message.attachments]
            for chat in history.conversations()
            for message in history.messages(chat.id)
            if message.role == "user"
        ]
        result = {
            "bar": bar,
            "replies": replies,
            "turns": turns,
            "prompt": prompts[-1],
            "stored": stored,
            "call_after": window.worker._call is not None,
            "cached_after": conversation.thinker.n_cached,
            "history_prompt": len(conversation.prompt_ids([])),
        }
        return screen.report(window, report, result)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
