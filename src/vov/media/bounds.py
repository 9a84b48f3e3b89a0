"""The bounds a clip must stay within, checked from headers before any frame is allocated.

`MAX_FRAMES` frames, frames of `MIN_SIDE`..`MAX_SIDE` pixels a side and at most `MAX_FRAME_PIXELS`
pixels, `MAX_VIDEO_PIXELS` pixels in all (3 GiB as float32 RGB), `MAX_DURATION_S` seconds and at
most `MAX_FPS` frames per second; a rate is a fraction of 31-bit terms. Every failure is a one-line
`MediaError`. The constants are read when a check runs, so `video_limits()` follows them.
"""

from __future__ import annotations

from dataclasses import dataclass

from vov.errors import MediaError
from vov.format.bitstream import MAX_FRAMES as FORMAT_MAX_FRAMES
from vov.media.image import MAX_PIXELS, MAX_SIDE, MIN_SIDE

MAX_FRAMES = FORMAT_MAX_FRAMES
MAX_FRAME_PIXELS = MAX_PIXELS  # per frame, the same as a still image
MAX_VIDEO_PIXELS = 1 << 28  # frames x height x width: 268M pixels, 3 GiB as float32 RGB
MAX_DURATION_S = 3600.0
MAX_FPS = 1000
MAX_RATE_TERM = 2**31 - 1  # numerator and denominator of a rate
DEFAULT_FPS = (25, 1)  # a folder of PNG frames, and the synthetic camera moves


@dataclass(frozen=True)
class VideoLimits:
    """The bounds a clip must stay within; `video_limits()` reads the module's constants."""

    frames: int
    frame_pixels: int
    video_pixels: int
    duration_s: float
    fps: int


def video_limits() -> VideoLimits:
    return VideoLimits(MAX_FRAMES, MAX_FRAME_PIXELS, MAX_VIDEO_PIXELS, MAX_DURATION_S, MAX_FPS)


def check_frame_size(width: int, height: int, name: str = "video", limits: VideoLimits | None = None) -> None:
    limits = limits or video_limits()
    if min(width, height) < MIN_SIDE:
        raise MediaError(f"{name}: frames are {width}x{height}; the smallest side vov codes is {MIN_SIDE} pixels")
    if max(width, height) > MAX_SIDE or width * height > limits.frame_pixels:
        raise MediaError(f"{name}: frames are {width}x{height}; vov codes up to {MAX_SIDE} pixels a side and "
                         f"{limits.frame_pixels} pixels a frame")


def check_rate(fps: tuple[int, int], name: str = "video", limits: VideoLimits | None = None) -> tuple[int, int]:
    limits = limits or video_limits()
    try:
        num, den = int(fps[0]), int(fps[1])
    except (TypeError, ValueError, IndexError):
        raise MediaError(f"{name}: the frame rate must be a fraction (numerator, denominator), not {fps!r}") from None
    if not (0 < num <= MAX_RATE_TERM and 0 < den <= MAX_RATE_TERM):
        raise MediaError(f"{name}: frame rate {num}/{den} is not a positive fraction of 31-bit terms")
    if num > limits.fps * den:
        raise MediaError(f"{name}: frame rate {num}/{den} is above the limit of {limits.fps} frames per second")
    return num, den


def check_clip_size(frames: int, width: int, height: int, fps: tuple[int, int], name: str = "video",
                    limits: VideoLimits | None = None) -> None:
    """Refuse a clip outside the limits, before anything of its size is allocated."""
    limits = limits or video_limits()
    check_frame_size(width, height, name, limits)
    num, den = check_rate(fps, name, limits)
    if frames < 1:
        raise MediaError(f"{name}: no frames")
    if frames > limits.frames:
        raise MediaError(f"{name}: more than {limits.frames} frames; vov reads at most {limits.frames}")
    if frames * width * height > limits.video_pixels:
        raise MediaError(f"{name}: {frames} frames of {width}x{height} exceed {limits.video_pixels} pixels in all")
    if frames * den > limits.duration_s * num:
        raise MediaError(f"{name}: {frames} frames at {num}/{den} fps last longer than {limits.duration_s:g} s")
