"""A clip in memory: float32 RGB frames, the exact rate, and what the source was; odd sizes padded and cropped.

A `Clip` holds frames (frames, height, width, 3), nominally in [0, 1], its exact rate as a fraction
(numerator, denominator), and what the source was: colour matrix, range, chroma layout, bit depth,
grey. Y'CbCr samples outside the RGB cube (a limited-range foot- or headroom, a saturated chroma)
give values somewhat outside [0, 1]; they are kept so that writing back reproduces the source's
samples, and metrics and the codec clip them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from vov.errors import MediaError
from vov.media.bounds import DEFAULT_FPS
from vov.media.colour import YCbCrFormat
from vov.media.image import Picture
from vov.media.shape import FrameShape


@dataclass
class Clip(FrameShape):
    """float32 RGB frames (frames, height, width, 3), the exact rate, and what the source was."""

    frames: np.ndarray
    fps: tuple[int, int] = DEFAULT_FPS
    matrix: str = "bt709"
    range: str = "limited"
    chroma: str = "420"
    bits: int = 8
    grey: bool = False
    container: str = ""  # y4m, mp4, matroska, png, synthetic, ... ("" when made in memory)
    y4m_tags: tuple[str, ...] = field(default=(), repr=False)  # a Y4M source's header tokens, in order

    _pixel_array = "frames"

    def __post_init__(self):
        frames = np.asarray(self.frames)
        if frames.ndim != 4 or frames.shape[3] != 3:
            raise MediaError(f"a clip's frames are (frames, height, width, 3), not {frames.shape}")
        if frames.dtype != np.float32:
            frames = frames.astype(np.float32)
        self.frames = frames
        num, den = int(self.fps[0]), int(self.fps[1])
        if num <= 0 or den <= 0:
            raise MediaError(f"frame rate {num}/{den} is not positive")
        self.fps = (num, den)
        self.format  # validates matrix, range, chroma and bits

    def __len__(self) -> int:
        return self.frames.shape[0]

    @property
    def rate(self) -> Fraction:
        return Fraction(*self.fps)

    @property
    def duration(self) -> float:
        """Seconds: frames / rate."""
        return self.num_frames * self.fps[1] / self.fps[0]

    @property
    def pixels(self) -> int:
        return self.num_frames * self.height * self.width

    @property
    def format(self) -> YCbCrFormat:
        return YCbCrFormat(self.matrix, self.range, self.chroma, self.bits)

    def frame(self, index: int) -> Picture:
        return Picture(np.clip(self.frames[index], 0.0, 1.0), grey=self.grey, bits=min(self.bits, 16))

    def to_uint8(self) -> np.ndarray:
        """(frames, height, width, 3) uint8, clipped and rounded: what a viewer of 8-bit RGB sees."""
        return (np.clip(self.frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    def with_frames(self, frames: np.ndarray) -> Clip:
        """The same source description around other frames (a decoded or cropped clip)."""
        return replace(self, frames=frames)


def pad_frames(frames: np.ndarray, multiple: int) -> np.ndarray:
    """Pad (..., height, width, channels) by edge replication so both sides are multiples of `multiple`."""
    if multiple < 1:
        raise ValueError("multiple must be positive")
    h, w = frames.shape[-3:-1]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return frames
    widths = [(0, 0)] * (frames.ndim - 3) + [(0, ph), (0, pw), (0, 0)]
    return np.pad(frames, widths, mode="edge")


def crop_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Undo `pad_frames`: the top-left (height, width) of each frame."""
    if frames.shape[-3] < height or frames.shape[-2] < width:
        raise ValueError(f"cannot crop {frames.shape[-2]}x{frames.shape[-3]} frames to {width}x{height}")
    return frames[..., :height, :width, :]
