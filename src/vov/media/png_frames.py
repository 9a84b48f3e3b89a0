"""Folders of numbered PNG frames (`frames/0001.png`, `frames/0002.png`, ...), in and out.

One common prefix, numbers in natural order without gaps, all frames the same size; files that
are not PNG are ignored. A folder has no rate: it is `fps` (default `DEFAULT_FPS`, 25 frames per
second). Frames are written 8-bit RGB (grey when the clip is grey) into a temporary folder that
takes the target's name as a whole on `close()`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

import numpy as np

from vov.errors import MediaError
from vov.media.bounds import DEFAULT_FPS, VideoLimits, check_clip_size, check_rate, video_limits
from vov.media.clip import Clip
from vov.media.image import MIN_SIDE, load_image
from vov.media.writer import VideoWriter

_NUMBERED = re.compile(r"^(.*?)(\d+)\.png$", re.IGNORECASE)


def _numbered_frames(folder: str) -> list[str]:
    try:
        names = os.listdir(folder)
    except OSError as e:
        raise MediaError(f"{folder}: cannot list ({e.strerror or e})") from None
    pngs = [n for n in names if n.lower().endswith(".png") and not n.startswith(".")]
    if not pngs:
        raise MediaError(f"{folder}: no PNG frames (expected 0001.png, 0002.png, ...)")
    numbered: dict[int, str] = {}
    prefixes = set()
    for n in pngs:
        m = _NUMBERED.match(n)
        if not m:
            raise MediaError(f"{folder}: {n} is not a numbered frame (expected 0001.png, 0002.png, ...)")
        prefixes.add(m.group(1))
        number = int(m.group(2))
        if number in numbered:
            raise MediaError(f"{folder}: {numbered[number]} and {n} are both frame {number}")
        numbered[number] = n
    if len(prefixes) > 1:
        raise MediaError(f"{folder}: frames with different names ({', '.join(sorted(prefixes)[:3])}...)")
    first, last = min(numbered), max(numbered)
    if last - first + 1 != len(numbered):
        missing = next(i for i in range(first, last + 1) if i not in numbered)
        raise MediaError(f"{folder}: frame {missing} is missing (frames {first} to {last} are numbered)")
    return [os.path.join(folder, numbered[i]) for i in range(first, last + 1)]


def read_png_frames(folder, fps: tuple[int, int] = DEFAULT_FPS, *, limits: VideoLimits | None = None) -> Clip:
    """Read a folder of numbered PNG frames, in natural order, at `fps` (a folder carries no rate)."""
    from PIL import Image, UnidentifiedImageError

    limits = limits or video_limits()
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise MediaError(f"{folder}: no such folder")
    fps = check_rate(fps, folder, limits)
    paths = _numbered_frames(folder)
    check_clip_size(min(len(paths), limits.frames + 1), MIN_SIDE, MIN_SIDE, fps, folder, limits)
    size = None
    for path in paths:  # headers only: every frame's size before any pixels
        try:
            with Image.open(path) as im:
                if im.format != "PNG":
                    raise MediaError(f"{path}: not a PNG ({im.format})")
                if size is None:
                    size = im.size
                    check_clip_size(len(paths), size[0], size[1], fps, folder, limits)
                elif im.size != size:
                    raise MediaError(f"{path}: {im.size[0]}x{im.size[1]}, but the first frame is {size[0]}x{size[1]}")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise MediaError(f"{path}: not a PNG vov can read ({e.__class__.__name__})") from None
    frames = np.empty((len(paths), size[1], size[0], 3), dtype=np.float32)
    grey, bits = True, 8
    for i, path in enumerate(paths):
        picture = load_image(path)
        if picture.pixels.shape[:2] != (size[1], size[0]):
            raise MediaError(f"{path}: changed size while being read")
        frames[i] = picture.pixels
        grey = grey and picture.grey
        bits = max(bits, min(picture.bits, 16))
    return Clip(frames, fps, "bt709", "full", "444", bits, grey=grey, container="png")


class PNGFramesWriter(VideoWriter):
    """A folder of 0001.png, 0002.png, ... (8-bit RGB, or grey), put in place as a whole on `close()`."""

    def __init__(self, path, width: int, height: int, fps: tuple[int, int] = DEFAULT_FPS, *, grey: bool = False,
                 compress_level: int = 3):
        super().__init__(os.fspath(path).rstrip("/\\") or os.fspath(path), width, height, fps)
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise MediaError(f"{self.path}: exists and is not a folder")
        if os.path.isdir(self.path):
            self._check_replaceable(self.path)
        self.grey = grey
        self.compress_level = compress_level
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            self._tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=parent)
        except OSError as e:
            raise MediaError(f"{self.path}: cannot write ({e.strerror or e})") from None

    @staticmethod
    def _check_replaceable(folder: str) -> None:
        names = os.listdir(folder)
        if any(not _NUMBERED.match(n) for n in names):
            raise MediaError(f"{folder}: the folder holds other files than numbered PNG frames; "
                             f"give an empty or new one")

    def _write_frame(self, frame: np.ndarray) -> None:
        from PIL import Image

        pixels = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        img = Image.fromarray(pixels[..., 0] if self.grey else pixels, "L" if self.grey else "RGB")
        target = os.path.join(self._tmp, f"{self.frames_written + 1:04d}.png")
        try:
            img.save(target, format="PNG", compress_level=self.compress_level)
        except OSError as e:
            raise MediaError(f"{self.path}: cannot write ({e.strerror or e})") from None

    def _finish(self) -> None:
        old = None
        try:
            if os.path.isdir(self.path):
                self._check_replaceable(self.path)
                old = tempfile.mkdtemp(prefix=f".{os.path.basename(self.path)}.", suffix=".old",
                                       dir=os.path.dirname(os.path.abspath(self.path)))
                os.rmdir(old)
                os.rename(self.path, old)
            os.rename(self._tmp, self.path)
        except OSError as e:
            if old and not os.path.exists(self.path):
                os.rename(old, self.path)
            raise MediaError(f"{self.path}: cannot write ({e.strerror or e})") from None
        self._tmp = None
        if old:
            shutil.rmtree(old, ignore_errors=True)

    def _discard(self) -> None:
        if getattr(self, "_tmp", None):
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
