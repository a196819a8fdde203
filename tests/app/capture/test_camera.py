"""The webcam through a fake capture that draws real frames: latest frame, loss, devices."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from app.capture.camera import Camera, camera_devices, listed_cameras, why_closed
from model.errors import OmnideskError
from tests.app.fakes import FakeCapture

WAIT_S = 10


def wait_for(condition) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "the capture thread did not get there"
        time.sleep(0.01)


def test_the_current_frame_is_an_rgb_image():
    capture = FakeCapture()
    camera = Camera(source_factory=lambda index: capture)
    wait_for(lambda: capture.frames >= 3)
    image = camera.image()
    assert image is not None and image.pixels.shape == (240, 320, 3)
    assert tuple(image.pixels[200, 300]) == (200, 20, 40)  # the background, red in RGB
    assert np.any(image.pixels == 255), "the drawn square is there"
    camera.close()
    assert capture.released and not camera.lost


def test_an_unplugged_camera_is_noticed():
    capture = FakeCapture(fail_after=2)
    camera = Camera(source_factory=lambda index: capture)
    wait_for(lambda: camera.lost)
    assert camera.frame() is not None, "the last frame stays"
    camera.close()


def test_a_camera_that_does_not_open_is_a_clear_error():
    capture = FakeCapture()
    capture.released = True
    with pytest.raises(OmnideskError) as raised:
        Camera(2, source_factory=lambda index: capture, listed=lambda: [(0, "Webcam (video0)")])
    assert str(raised.value) == "There is no camera 2 (the cameras here: 0)"


@pytest.mark.parametrize(
    "listed, reason",
    [
        (None, "camera 2 could not be opened: it is missing, or another program is using it"),
        ([], "no camera was found: connect one, then turn the camera on"),
        ([(0, "Webcam (video0)"), (1, "USB (video1)")], "there is no camera 2 (the cameras here: 0, 1)"),
        ([(2, "USB (video2)")], "camera 2 could not be opened: another program may be using it"),
    ],
)
def test_why_a_camera_did_not_open_blames_another_program_only_when_the_camera_is_there(listed, reason):
    assert why_closed(2, listed) == reason


def test_opening_a_camera_prints_nothing_on_the_terminal():
    """OpenCV warns twice on stderr, from C++, about a camera it cannot open (in a process of its own:
    OpenCV's log level is the whole process's)."""
    opened = (
        "from app.capture.camera import open_capture; print(open_capture(57).isOpened())"  # no such camera
    )
    result = subprocess.run([sys.executable, "-c", opened], capture_output=True, text=True, timeout=60)
    assert result.stdout == "False\n" and result.stderr == ""
    plain = "import cv2; cv2.VideoCapture(57)"
    warned = subprocess.run([sys.executable, "-c", plain], capture_output=True, text=True, timeout=60)
    assert "WARN" in warned.stderr, "without it OpenCV does print (else this test proves nothing)"


def test_devices_listed_by_linux(tmp_path):
    for index, name in [(2, "USB Camera"), (0, "Integrated Webcam")]:
        (tmp_path / f"video{index}").mkdir()
        (tmp_path / f"video{index}" / "name").write_text(name + "\n")
    assert camera_devices(tmp_path) == [(0, "Integrated Webcam (video0)"), (2, "USB Camera (video2)")]
    assert camera_devices(tmp_path / "missing") == []
    assert listed_cameras(tmp_path / "missing") == [], "on Linux, no video4linux: no camera"
