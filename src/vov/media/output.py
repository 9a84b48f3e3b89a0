"""Where decoded media goes: an image file for an image; for a clip a video file (.y4m, .mp4, .mkv,
.webm, .mov) or a folder of PNG frames (a path without a suffix), written clip by clip as the clips
are decoded. `check_output` refuses a path that cannot take the media before any decode starts."""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np

from vov.errors import UsageError
from vov.files import check_writable

IMAGE_OUTPUTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_OUTPUTS = {".y4m", ".mp4", ".mkv", ".webm", ".mov", ".m4v"}


def check_output(path: str, frames: int) -> None:
    """An image file for one frame; a video file or a new (or empty) folder for a clip."""
    suffix = os.path.splitext(path)[1].lower()
    if frames == 1 and suffix and suffix not in IMAGE_OUTPUTS | VIDEO_OUTPUTS:
        raise UsageError(f"{path}: write the image as {', '.join(sorted(IMAGE_OUTPUTS))}")
    if frames > 1 and suffix in IMAGE_OUTPUTS:
        raise UsageError(f"{path}: the file holds a {frames}-frame clip; write .y4m, .mp4, .mkv, .webm or a folder "
                         f"(a path without a suffix) of PNG frames")
    if frames > 1 and not suffix:
        if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
            raise UsageError(f"{path}: choose a new or empty folder for the frames")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise UsageError(f"{path}: the folder {parent} does not exist")
    else:
        check_writable(path)


def write_clips(clips: Iterable[np.ndarray], output: str, width: int, height: int, frames: int,
                fps: tuple[int, int], grey: bool) -> None:
    """Write each clip's frames ((n, height, width, 3) floats in [0, 1]) as they come; a failed or
    interrupted write leaves no half file."""
    from vov.media.image import save_image

    writer = None
    try:
        for clip in clips:
            if frames == 1 and os.path.splitext(output)[1].lower() in IMAGE_OUTPUTS | {""}:
                save_image(clip[0], output, grey=grey)
                continue
            if writer is None:
                from vov.media.video import open_video_writer

                writer = open_video_writer(output, width, height, (fps[0] or 25, fps[1] or 1), grey=grey)
            writer.write(clip)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
