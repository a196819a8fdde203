"""Screen shots and QImage conversions."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtGui import QColor, QImage
from PySide6.QtWidgets import QWidget

import app.capture.screen
from app.capture.screen import grab_screen, grab_screen_without, qimage, rgb_pixels, screen_capture_allowed
from model.errors import OmnideskError
from model.media import Image


def test_a_qimage_becomes_rgb_pixels_whatever_its_format(qtbot):
    image = QImage(7, 5, QImage.Format.Format_ARGB32)  # 7 pixels wide: rows are padded in RGB888
    image.fill(QColor(10, 120, 250))
    image.setPixelColor(6, 4, QColor(255, 0, 0))
    pixels = rgb_pixels(image)
    assert pixels.shape == (5, 7, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[0, 0]) == (10, 120, 250) and tuple(pixels[4, 6]) == (255, 0, 0)


def test_pixels_round_trip_through_qimage(qtbot):
    pixels = np.random.default_rng(1).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    assert np.array_equal(rgb_pixels(qimage(pixels)), pixels)


def test_the_primary_screen_is_grabbed_whole(qtbot):
    from PySide6.QtGui import QGuiApplication

    size = QGuiApplication.primaryScreen().size()
    shot = grab_screen()
    assert shot.pixels.shape == (size.height(), size.width(), 3)


class FakeCoreGraphics:
    """macOS's permission functions: the user has (or has not) allowed Screen Recording."""

    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed
        self.requests = 0

    def CGPreflightScreenCaptureAccess(self) -> bool:  # noqa: N802 (Apple's name)
        return self.allowed

    def CGRequestScreenCaptureAccess(self) -> bool:  # noqa: N802 (Apple's name)
        self.requests += 1
        return self.allowed


class TestMacOSPermission:
    def test_without_it_no_wallpaper_is_sent_and_the_user_is_told_how(self, qtbot, monkeypatch):
        graphics = FakeCoreGraphics(allowed=False)
        monkeypatch.setattr(app.capture.screen.sys, "platform", "darwin")
        monkeypatch.setattr(app.capture.screen, "core_graphics", lambda: graphics)
        with pytest.raises(OmnideskError, match="Privacy & Security > Screen Recording"):
            grab_screen()
        assert graphics.requests == 1, "the system is asked to offer the permission"

    def test_with_it_the_screen_is_grabbed(self, qtbot, monkeypatch):
        monkeypatch.setattr(app.capture.screen.sys, "platform", "darwin")
        monkeypatch.setattr(app.capture.screen, "core_graphics", lambda: FakeCoreGraphics(allowed=True))
        assert grab_screen().pixels.size > 0

    def test_elsewhere_there_is_no_such_permission(self):
        assert screen_capture_allowed()


class TestWithoutTheWindow:
    def test_a_window_not_shown_is_grabbed_around_at_once(self, qtbot):
        window = QWidget()
        qtbot.addWidget(window)
        taken: list = []
        grab_screen_without(window, taken.append, pytest.fail)
        assert len(taken) == 1 and isinstance(taken[0], Image) and not window.isVisible()

    def test_a_failed_grab_is_told_and_the_window_comes_back(self, qtbot, monkeypatch):
        window = QWidget()
        qtbot.addWidget(window)
        window.show()
        qtbot.waitExposed(window)

        def refused(screen=None):
            assert not window.isVisible()
            raise OmnideskError("the screen could not be captured (the system refused it)")

        monkeypatch.setattr(app.capture.screen, "grab_screen", refused)
        failed: list = []
        grab_screen_without(window, pytest.fail, failed.append)
        qtbot.waitUntil(lambda: len(failed) == 1, timeout=5_000)
        assert "refused" in str(failed[0]) and window.isVisible()
