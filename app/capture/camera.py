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

from app.system.native_logs import opencv
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
    return opencv().VideoCapture(index)


def camera_devices(root: Path = VIDEO4LINUX) -> list[tuple[int, str]]:
    """(index, name) of the cameras Linux lists; [] elsewhere (only the default is offered)."""
    return listed_cameras(root) or []


def listed_cameras(root: Path = VIDEO4LINUX) -> list[tuple[int, str]] | None:
    """(index, name) of the cameras Linux lists (none without video4linux); None where the system
    does not list them."""
    if not sys.platform.startswith("linux"):
        return None
    if not root.is_dir():
        return []
    found = []
    for entry in root.glob("video*"):
        suffix = entry.name.removeprefix("video")
        if suffix.isdigit():
            name_file = entry / "name"
            name = name_file.read_text().strip() if name_file.is_file() else entry.name
            found.append((int(suffix), f"{name} ({entry.name})"))
    return sorted(found)


def why_closed(index: int, listed: list[tuple[int, str]] | None) -> str:
    """Why camera `index` did not open, as far as the cameras the system lists tell (None: it lists none)."""
    if listed is None:
        return f"camera {index} could not be opened: it is missing, or another program is using it"
    if not listed:
        return "no camera was found: connect one, then turn the camera on"
    numbers = [number for number, _ in listed]
    if index not in numbers:
        return f"there is no camera {index} (the cameras here: {', '.join(map(str, numbers))})"
    return f"camera {index} could not be opened: another program may be using it"


class Camera:
    """An open camera. `index`: OpenCV's camera number (0 is the system's default camera).
    Opening raises OmnideskError with the reason, as a sentence, when the camera cannot be used;
    `listed` gives the cameras the system lists, to tell a missing camera from a busy one."""

    def __init__(
        self,
        index: int = 0,
        source_factory: SourceFactory = open_capture,
        listed: Callable[[], list[tuple[int, str]] | None] | None = None,  # None: listed_cameras
    ) -> None:
        self.index = index
        self.lost = False
        self._latest: np.ndarray | None = None
        self._stop = threading.Event()
        self._source = source_factory(index)
        if not self._source.isOpened():
            self._source.release()
            reason = why_closed(index, (listed or listed_cameras)())
            raise OmnideskError(reason[0].upper() + reason[1:])
        self._thread = threading.Thread(target=self._capture, name="camera", daemon=True)
        self._thread.start()

    def _capture(self) -> None:
        cv2 = opencv()
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
