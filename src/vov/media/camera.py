"""Synthetic clips: a camera moving over a still photo (pan, tilt, zoom, rotation), deterministic."""

from __future__ import annotations

import math

import numpy as np

from vov.errors import MediaError
from vov.media.bounds import DEFAULT_FPS, check_clip_size
from vov.media.clip import Clip
from vov.media.image import MIN_SIDE, Picture

CAMERA_MOVES = {
    # kind: (largest rotation in degrees, zoom factor over the clip, pan share across, pan share down)
    "pan": (0.0, 1.0, 1.0, 0.0),
    "tilt": (0.0, 1.0, 0.0, 1.0),
    "zoom-in": (0.0, 1.5, 0.0, 0.0),
    "zoom-out": (0.0, 1.5, 0.0, 0.0),
    "rotate": (4.0, 1.0, 0.0, 0.0),
    "mixed": (2.0, 1.25, 0.6, 0.3),
}


def _photo_array(photo) -> tuple[np.ndarray, bool]:
    if isinstance(photo, Picture):
        return np.clip(photo.pixels, 0.0, 1.0).astype(np.float32), photo.grey
    arr = np.asarray(photo)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise MediaError(f"a photo is (height, width, 3), not {arr.shape}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0), False


def _bilinear(img: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Sample img (H, W, 3) at pixel-centre coordinates (x = 0.5 is the first column's centre)."""
    h, w = img.shape[:2]
    x = np.clip(xs - 0.5, 0.0, w - 1.0)
    y = np.clip(ys - 0.5, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.intp), w - 1)
    y0 = np.minimum(np.floor(y).astype(np.intp), h - 1)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx = (x - x0).astype(np.float32)[..., None]
    fy = (y - y0).astype(np.float32)[..., None]
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def camera_move(photo, frames: int = 17, kind: str = "pan", *, size: tuple[int, int] | None = None,
                fps: tuple[int, int] = DEFAULT_FPS, strength: float = 1.0) -> Clip:
    """A clip of a camera moving over a still photo: deterministic, no randomness.

    `kind`: pan (left to right), tilt (top to bottom), zoom-in, zoom-out (1.5x), rotate (-4 to +4
    degrees), mixed (pan, zoom 1.25x and +-2 degrees). `size` (width, height) of the view, at most
    the photo's, default three quarters of each side (even). `strength` in [0, 1] scales the move.
    The view starts at the photo's own resolution (scaled down only where a rotated view needs it
    to stay inside the photo) and pixels are resampled bilinearly; the view never leaves the photo.
    """
    if kind not in CAMERA_MOVES:
        raise MediaError(f"camera move {kind!r} is not one of {', '.join(CAMERA_MOVES)}")
    if not (isinstance(frames, int) and frames >= 1):
        raise MediaError("a camera move needs at least one frame")
    if not (0.0 <= strength <= 1.0):
        raise MediaError("a camera move's strength is between 0 and 1")
    img, grey = _photo_array(photo)
    ph, pw = img.shape[:2]
    if size is None:
        size = (max(MIN_SIDE, (pw * 3 // 4) // 2 * 2), max(MIN_SIDE, (ph * 3 // 4) // 2 * 2))
    w, h = int(size[0]), int(size[1])
    if w > pw or h > ph:
        raise MediaError(f"a {w}x{h} view does not fit in a {pw}x{ph} photo")
    check_clip_size(frames, w, h, fps, "camera move")
    angle_max, zoom, pan_x, pan_y = CAMERA_MOVES[kind]
    angle_max, zoom = math.radians(angle_max * strength), 1.0 + (zoom - 1.0) * strength
    pan_x, pan_y = pan_x * strength, pan_y * strength
    cos_m, sin_m = math.cos(angle_max), math.sin(angle_max)
    base = min(1.0, pw / (w * cos_m + h * sin_m), ph / (w * sin_m + h * cos_m))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    xs, ys = xs + 0.5 - w / 2, ys + 0.5 - h / 2
    out = np.empty((frames, h, w, 3), dtype=np.float32)
    for i in range(frames):
        t = i / (frames - 1) if frames > 1 else 0.0
        progress = 1.0 - t if kind == "zoom-out" else t
        scale = base / zoom**progress
        angle = angle_max * (2 * t - 1)
        c, s = math.cos(angle), math.sin(angle)
        half_x = scale * (w * abs(c) + h * abs(s)) / 2
        half_y = scale * (w * abs(s) + h * abs(c)) / 2
        cx = pw / 2 + pan_x * (2 * t - 1) * max(0.0, pw / 2 - half_x)
        cy = ph / 2 + pan_y * (2 * t - 1) * max(0.0, ph / 2 - half_y)
        src_x = cx + scale * (c * xs - s * ys)
        src_y = cy + scale * (s * xs + c * ys)
        out[i] = _bilinear(img, src_x, src_y)
    return Clip(out, fps, "bt709", "full", "444", 8, grey=grey, container="synthetic")
