"""`omnidesk ask`'s question and media options made into a question: its text, files, one screen
shot, one webcam frame.

Each problem (a missing or unreadable file, no display, no camera) becomes an OmnideskError that
says what to do; nothing here runs a model.
"""

from __future__ import annotations

import argparse
import os
import sys

from app.cli.text_input import checked_text
from model.audio_features import load_recording
from model.errors import OmnideskError
from model.media import Image, Question
from model.video import load_video
from model.vision import load_image

WARM_UP_FRAMES = 5  # webcams start dark and unfocused


def question_from_args(args: argparse.Namespace) -> Question:
    text = checked_text(args.question or "", "the question")
    images = [load_image(path) for path in args.image or ()]
    if args.screen:
        images.append(screen_shot())
    if args.camera is not None:
        images.append(camera_frame(args.camera))
    videos = [load_video(path, with_audio=args.use_audio_in_video) for path in args.video or ()]
    question = Question(
        text=text,
        images=tuple(images),
        audios=tuple(load_recording(path) for path in args.audio or ()),
        videos=tuple(videos),
        use_audio_in_video=args.use_audio_in_video,
    )
    if question.is_empty:
        raise OmnideskError(
            "nothing to ask: give a question, or --image, --audio, --video, --screen, --camera"
        )
    return question


def screen_shot() -> Image:
    """The primary screen, grabbed with Qt (the window's own way)."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise OmnideskError(
            "--screen: there is no screen here (no display); attach a screenshot with --image"
        )
    from PySide6.QtGui import QGuiApplication

    from app.capture.screen import grab_screen

    _application = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])
    return grab_screen()


def camera_frame(index: int) -> Image:
    """One frame from webcam `index` (the first frames are skipped while the camera adjusts)."""
    from app.capture.camera import listed_cameras, open_capture, why_closed
    from app.system.native_logs import opencv

    cv2 = opencv()  # silenced: our message says it, once
    capture = open_capture(index)
    try:
        if not capture.isOpened():
            raise OmnideskError(f"--camera: {why_closed(index, listed_cameras())}")
        frame = None
        for _ in range(WARM_UP_FRAMES):
            ok, frame = capture.read()
            if not ok:
                raise OmnideskError(f"--camera: camera {index} gave no picture")
        assert frame is not None
        return Image(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        capture.release()
