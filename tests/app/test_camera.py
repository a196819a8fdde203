"""The webcam through a fake capture that draws real frames: latest frame, loss, devices."""

from __future__ import annotations

import time

import numpy as np
import pytest

from app.camera import Camera, camera_devices
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
    with pytest.raises(OmnideskError, match="cannot open camera 2"):
        Camera(2, source_factory=lambda index: capture)


def test_devices_listed_by_linux(tmp_path):
    for index, name in [(2, "USB Camera"), (0, "Integrated Webcam")]:
        (tmp_path / f"video{index}").mkdir()
        (tmp_path / f"video{index}" / "name").write_text(name + "\n")
    assert camera_devices(tmp_path) == [(0, "Integrated Webcam (video0)"), (2, "USB Camera (video2)")]
    assert camera_devices(tmp_path / "missing") == []
