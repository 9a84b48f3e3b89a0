"""Synthetic clips: a camera moving over a still photo (pan, tilt, zoom, rotation).

The named moves (`CAMERA_MOVES`) are deterministic and make the video benchmark's clips; the
random move (`RANDOM_MOVE`) is drawn from a generator and makes the training data's clips.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

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
RANDOM_MOVE = "random"  # drawn from a generator: see `_random_move`


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


def _photo_uint8(photo) -> tuple[np.ndarray, bool]:
    """The photo as 8-bit RGB (height, width, 3); an 8-bit array is used as it is."""
    arr = np.asarray(photo) if not isinstance(photo, Picture) else None
    if arr is not None and arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:
        return arr, False
    pixels, grey = _photo_array(photo)
    return (pixels * 255.0 + 0.5).astype(np.uint8), grey


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
                fps: tuple[int, int] = DEFAULT_FPS, strength: float = 1.0,
                rng: np.random.Generator | None = None) -> Clip:
    """A clip of a camera moving over a still photo: deterministic, no randomness.

    `kind`: pan (left to right), tilt (top to bottom), zoom-in, zoom-out (1.5x), rotate (-4 to +4
    degrees), mixed (pan, zoom 1.25x and +-2 degrees). `size` (width, height) of the view, at most
    the photo's, default three quarters of each side (even). `strength` in [0, 1] scales the move.
    The view starts at the photo's own resolution (scaled down only where a rotated view needs it
    to stay inside the photo) and pixels are resampled bilinearly; the view never leaves the photo.

    `kind` random (`RANDOM_MOVE`) draws the move from `rng` instead, as `_random_move` says, on the
    photo in 8 bits; `strength` does not apply to it.
    """
    if kind not in CAMERA_MOVES and kind != RANDOM_MOVE:
        raise MediaError(f"camera move {kind!r} is not one of {', '.join(CAMERA_MOVES)}, {RANDOM_MOVE}")
    if kind == RANDOM_MOVE and rng is None:
        raise MediaError("a random camera move needs a random generator")
    if not (isinstance(frames, int) and frames >= 1):
        raise MediaError("a camera move needs at least one frame")
    if not (0.0 <= strength <= 1.0):
        raise MediaError("a camera move's strength is between 0 and 1")
    img, grey = _photo_uint8(photo) if kind == RANDOM_MOVE else _photo_array(photo)
    ph, pw = img.shape[:2]
    if size is None:
        size = (max(MIN_SIDE, (pw * 3 // 4) // 2 * 2), max(MIN_SIDE, (ph * 3 // 4) // 2 * 2))
    w, h = int(size[0]), int(size[1])
    if w > pw or h > ph:
        raise MediaError(f"a {w}x{h} view does not fit in a {pw}x{ph} photo")
    check_clip_size(frames, w, h, fps, "camera move")
    if kind == RANDOM_MOVE:
        moved = _random_move(img, frames, h, w, rng).astype(np.float32) / np.float32(255.0)
        return Clip(moved, fps, "bt709", "full", "444", 8, grey=grey, container="synthetic")
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


def _random_move(img: np.ndarray, frames: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(frames, height, width, 3) uint8: a smooth move inside the 8-bit `img`, drawn from `rng`.

    The zoom at each end is drawn from [1, 1.5]; three moves in ten also turn, between angles drawn
    from [-4, 4] degrees; the centre travels between two points drawn within what the zoom leaves of
    the photo (less a tenth). Everything changes linearly over the frames; Pillow resamples
    bilinearly. The draws, in this order, are part of what a training run's cache depends on.
    """
    h, w, _ = img.shape
    zoom0, zoom1 = rng.uniform(1.0, 1.5, 2)
    angle0, angle1 = (rng.uniform(-4, 4, 2) if rng.random() < 0.3 else (0.0, 0.0))
    margin_y = h - height * max(zoom0, zoom1) * 1.1
    margin_x = w - width * max(zoom0, zoom1) * 1.1
    cy0, cy1 = h / 2 + rng.uniform(-0.5, 0.5, 2) * max(margin_y, 0)
    cx0, cx1 = w / 2 + rng.uniform(-0.5, 0.5, 2) * max(margin_x, 0)
    pil = Image.fromarray(img)
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for f in range(frames):
        a = f / max(frames - 1, 1)
        zoom, cy, cx = zoom0 + a * (zoom1 - zoom0), cy0 + a * (cy1 - cy0), cx0 + a * (cx1 - cx0)
        theta = np.deg2rad(angle0 + a * (angle1 - angle0))
        cos, sin = np.cos(theta) * zoom, np.sin(theta) * zoom
        # output (u, v) -> input (x, y) about the centre
        coeffs = (cos, -sin, cx - cos * width / 2 + sin * height / 2, sin, cos, cy - sin * width / 2 - cos * height / 2)
        out[f] = np.asarray(pil.transform((width, height), Image.AFFINE, coeffs, resample=Image.BILINEAR))
    return out
