"""The webcam: OpenCV capture on a thread of its own, keeping only the latest frame.

Threads: `Camera` starts one capture thread, which blocks in the source's `read` and
replaces `_latest` with each new frame (one attribute assignment, so readers on other
threads see a whole frame or the previous one). After MAX_FAILED_READS failures in a row
it sets `lost` (the camera was unplugged or taken) and ends. `frame`, `image` and `close`
are called from the GUI thread; `close` waits for the capture thread to end.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from model.errors import OmnideskError
from model.media import Image

MAX_FAILED_READS = 10
FAILED_READ_PAUSE_S = 0.05  # between failed reads, so a dead camera does not spin a core
VIDEO4LINUX = Path("/sys/class/video4linux")


class FrameSource(Protocol):
    """What the camera needs of cv2.VideoCapture (tests give their own)."""

    def isOpened(self) -> bool: ...  # noqa: N802 (cv2's name)
    def read(self) -> tuple[bool, np.ndarray | None]: ...  # (ok, (height, width, 3) uint8 BGR)
    def release(self) -> None: ...


SourceFactory = Callable[[int], FrameSource]  # camera index -> source


def open_capture(index: int) -> FrameSource:
    import cv2

    return cv2.VideoCapture(index)


def camera_devices(root: Path = VIDEO4LINUX) -> list[tuple[int, str]]:
    """(index, name) of the cameras Linux lists; [] elsewhere (only the default is offered)."""
    if not sys.platform.startswith("linux") or not root.is_dir():
        return []
    found = []
    for entry in root.glob("video*"):
        suffix = entry.name.removeprefix("video")
        if suffix.isdigit():
            name_file = entry / "name"
            name = name_file.read_text().strip() if name_file.is_file() else entry.name
            found.append((int(suffix), f"{name} ({entry.name})"))
    return sorted(found)


class Camera:
    """An open camera. `index`: OpenCV's camera number (0 is the system's default camera).
    Opening raises OmnideskError with the reason when the camera cannot be used."""

    def __init__(self, index: int = 0, source_factory: SourceFactory = open_capture) -> None:
        self.index = index
        self.lost = False
        self._latest: np.ndarray | None = None
        self._stop = threading.Event()
        self._source = source_factory(index)
        if not self._source.isOpened():
            self._source.release()
            raise OmnideskError(f"cannot open camera {index}: it is missing or used by another program")
        self._thread = threading.Thread(target=self._capture, name="camera", daemon=True)
        self._thread.start()

    def _capture(self) -> None:
        import cv2

        failed = 0
        while not self._stop.is_set():
            ok, frame = self._source.read()
            if ok and frame is not None:
                failed = 0
                self._latest = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                continue
            failed += 1
            if failed >= MAX_FAILED_READS:
                self.lost = True
                return
            self._stop.wait(FAILED_READ_PAUSE_S)

    def frame(self) -> np.ndarray | None:
        """The latest frame, (height, width, 3) uint8 RGB, or None before the first."""
        return self._latest

    def image(self) -> Image | None:
        frame = self._latest
        return None if frame is None else Image(frame.copy())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._source.release()
