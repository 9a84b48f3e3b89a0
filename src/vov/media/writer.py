"""What every clip writer shares: frames in as they come, a file out under its name only when whole.

Files are written under a temporary name beside the target and renamed on `close()` (a folder of
frames is renamed as a whole), so nothing half-written is left under the target's name; `abort()`
(or leaving a `with` block by an exception) removes the temporary.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from vov.errors import MediaError
from vov.media.bounds import check_frame_size, check_rate


class VideoWriter:
    """Frames in, a file out: `write(frames)` as they come, then `close()` (or `abort()`)."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: tuple[int, int]):
        self.path = os.fspath(path)
        check_frame_size(width, height, self.path)
        self.width, self.height = int(width), int(height)
        self.fps = check_rate(fps, self.path)
        self.frames_written = 0
        self.closed = False

    def write(self, frames: np.ndarray) -> None:
        """One frame (height, width, 3) or several (n, height, width, 3), float RGB nominally in [0, 1]."""
        if self.closed:
            raise MediaError(f"{self.path}: the writer is closed")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise MediaError(f"{self.path}: frames of shape {tuple(frames.shape[-3:])} given to a "
                             f"{self.width}x{self.height} RGB writer")
        for frame in frames:
            frame = np.asarray(frame, dtype=np.float32)
            if not np.isfinite(frame).all():
                raise MediaError(f"{self.path}: frame {self.frames_written + 1} holds NaN or infinity")
            self._write_frame(frame)
            self.frames_written += 1

    def close(self) -> None:
        if self.closed:
            return
        if self.frames_written == 0:
            self.abort()
            raise MediaError(f"{self.path}: no frames were written")
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        self.closed = True

    def abort(self) -> None:
        """Drop what was written; the target is left as it was."""
        self.closed = True
        self._discard()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.close()
        else:
            self.abort()
        return False

    def _write_frame(self, frame: np.ndarray) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _discard(self) -> None:
        raise NotImplementedError


def temporary_beside(path: str, suffix: str = "") -> str:
    """A new empty file in the target's folder, hidden, to be renamed onto the target when whole."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".tmp{suffix}", dir=folder)
    except OSError as e:
        raise MediaError(f"{path}: cannot write ({e.strerror or e})") from None
    os.close(fd)
    return tmp


def remove_file(path: str | None) -> None:
    """Remove a temporary if there is one; a file already gone is no error."""
    if path:
        try:
            os.remove(path)
        except OSError:
            pass
