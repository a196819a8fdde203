"""Video files to frames as the reference samples them, by real time, with their sound track.

Frame sampling is qwen-omni-utils' `smart_nframes`: 2 frames per second of video by default, at least
4 and at most 768 (and no more than the file has), an even count (a temporal patch is 2 frames). The
reference picks frame indices evenly spaced over the file; here frames are picked by their
presentation times at evenly spaced moments, which is the same for a constant frame rate and keeps
true time for a variable one (phone recordings, screen captures). `Video.frame_seconds` is the time
one sampled frame stands for, the reference's 1 / `sample_fps`.

Frame size: the reference's video bounds (`VIDEO_MIN_PIXELS` .. `VIDEO_MAX_PIXELS` per frame, and a
total budget over all frames), applied by the vision encoder with `video_frame_bounds`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from model.audio_features import VIDEO_SUFFIXES, decode_with_ffmpeg, recording
from model.errors import OmnideskError
from model.media import Video

FPS = 2.0  # frames sampled per second of video
FRAME_FACTOR = 2  # frames per temporal patch
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28
VIDEO_TOTAL_PIXELS = int(128000 * 28 * 28 * 0.9)  # qwen-omni-utils' budget over all frames


def sampled_frame_count(total_frames: int, video_fps: float, fps: float = FPS) -> int:
    """qwen-omni-utils' `smart_nframes`: how many frames to take from a video."""
    min_frames = math.ceil(FPS_MIN_FRAMES / FRAME_FACTOR) * FRAME_FACTOR
    max_frames = math.floor(min(FPS_MAX_FRAMES, total_frames) / FRAME_FACTOR) * FRAME_FACTOR
    wanted = total_frames / video_fps * fps
    count = min(max(wanted, min_frames), max_frames, total_frames)
    count = math.floor(count / FRAME_FACTOR) * FRAME_FACTOR
    if not FRAME_FACTOR <= count <= total_frames:
        raise OmnideskError(f"the video is too short: {total_frames} frames, at least {FRAME_FACTOR} needed")
    return count


def video_frame_bounds(frames: int) -> tuple[int, int]:
    """(min, max) pixels per frame for a video of `frames` sampled frames (qwen-omni-utils)."""
    most = max(
        min(VIDEO_MAX_PIXELS, VIDEO_TOTAL_PIXELS / frames * FRAME_FACTOR), int(VIDEO_MIN_PIXELS * 1.05)
    )
    return VIDEO_MIN_PIXELS, int(most)


def load_video(path: Path | str, with_audio: bool = False, fps: float = FPS) -> Video:
    """Sampled frames, their times, and (if `with_audio`) the sound track at 16 kHz."""
    path = Path(path)
    if not path.is_file():
        raise OmnideskError(f"{path}: video file not found.")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise OmnideskError(
            f"{path}: unsupported video format {path.suffix or '(no extension)'}. Use MP4 or MKV."
        )
    stamps, time_base = _frame_stamps(path)
    times = stamps * float(time_base)
    duration = (times[-1] - times[0]) * len(times) / (len(times) - 1)  # the last frame lasts an average one
    if duration <= 0:
        raise OmnideskError(f"{path}: the video's frames have no distinct time stamps.")
    count = sampled_frame_count(len(times), len(times) / duration, fps)
    targets = times[0] + np.arange(count) * (duration / count)
    after = np.minimum(np.searchsorted(times, targets), len(times) - 1)
    before = np.maximum(after - 1, 0)
    picked = np.where(np.abs(times[before] - targets) <= np.abs(times[after] - targets), before, after)
    frames = _frames_at(path, stamps[picked])
    audio = None
    if with_audio:
        audio = recording(decode_with_ffmpeg(path), path)  # OmnideskError when there is no sound track
    return Video(frames, times[picked], audio, duration / count)


def _frame_stamps(path: Path) -> tuple[np.ndarray, Fraction]:
    """Every frame's presentation time stamp (sorted, in the stream's time base), read from the
    packets without decoding, and that time base."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise OmnideskError(f"{path}: the file has no video track.")
            stream = container.streams.video[0]
            time_base = stream.time_base
            stamps = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size)
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise OmnideskError(f"{path}: not a readable video file ({exc}).") from None
    if len(stamps) < FRAME_FACTOR or time_base is None:
        raise OmnideskError(
            f"{path}: the video has {len(stamps)} frames; at least {FRAME_FACTOR} are needed."
        )
    return np.asarray(stamps, dtype=np.int64), time_base


def _frames_at(path: Path, wanted: np.ndarray) -> np.ndarray:
    """The RGB frames (n, h, w, 3) with the `wanted` time stamps (from `_frame_stamps`; one may
    repeat), decoding the whole video once and keeping only those."""
    import av

    kept: dict[int, np.ndarray] = {}
    wanted_set = {int(t) for t in wanted}
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                for frame in stream.decode(packet):
                    if frame.pts in wanted_set:
                        kept[frame.pts] = frame.to_ndarray(format="rgb24")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise OmnideskError(f"{path}: not a readable video file ({exc}).") from None
    missing = wanted_set - kept.keys()
    if missing:
        raise OmnideskError(f"{path}: {len(missing)} video frames could not be decoded (a damaged file?).")
    return np.stack([kept[int(t)] for t in wanted])
