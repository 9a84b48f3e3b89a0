"""Reading and writing the images people have.

Accepted: anything Pillow opens that is a still picture (PNG, JPEG, WebP, TIFF, BMP, ...), grey or
colour, with or without alpha. EXIF orientation is applied. Alpha is not coded: a transparent image
is composited over white and a notice says so. Grey images are coded as colour and written back as
grey. 16-bit grey images are read at full precision; 16-bit colour images are read at 8 bits
(Pillow's reader reduces them; `Picture.source_bits` records it and the CLI says so). The decoded
file is 8-bit. Sizes from MIN_SIDE to MAX_SIDE on each side and at most MAX_PIXELS pixels (the
decode-memory bound, vov.limits); any size in that range works: the codec pads to its latent grid and
crops back, never resizes.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vov.errors import MediaError
from vov.limits import MAX_PIXELS, MAX_SIDE
from vov.media.shape import FrameShape

MIN_SIDE = 16
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".webm", ".avi", ".y4m", ".m4v"}  # named in the error for a clip
Image.MAX_IMAGE_PIXELS = 64 * MAX_PIXELS  # refuse decompression bombs early, but after our own check


@dataclass
class Picture(FrameShape):
    """RGB pixels as float32 in [0, 1], (height, width, 3), plus what the input was."""

    pixels: np.ndarray
    grey: bool = False
    had_alpha: bool = False
    bits: int = 8  # precision the pixels were read at
    source_bits: int = 8  # precision of the source file, when it is more than `bits`

    def to_uint8_rgb(self) -> np.ndarray:
        return to_uint8(self.pixels)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    return (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def check_size(width: int, height: int) -> None:
    if min(width, height) < MIN_SIDE:
        raise MediaError(f"image is {width}x{height}; the smallest side vov codes is {MIN_SIDE} pixels")
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise MediaError(
            f"image is {width}x{height}; vov codes up to {MAX_SIDE} pixels a side and {MAX_PIXELS} pixels in all "
            f"(the bound that keeps a decode's memory under 2 GB)"
        )


def _to_float(img: Image.Image) -> tuple[np.ndarray, bool, int]:
    """Pillow image -> (pixels HxWxC float32 in [0, 1], grey, bits)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        return (arr / peak).astype(np.float32)[..., None], True, 16 if peak > 255 else 8
    if mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0, 1)[..., None], True, 32
    if mode in ("1", "L"):
        return np.asarray(img.convert("L"), dtype=np.float32)[..., None] / 255.0, True, 8
    if mode == "LA":
        return np.asarray(img, dtype=np.float32) / 255.0, True, 8
    if mode in ("RGB", "RGBA"):
        return np.asarray(img, dtype=np.float32) / 255.0, False, 8
    if mode == "P":
        converted = img.convert("RGBA" if "transparency" in img.info else "RGB")
        return _to_float(converted)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0, False, 8  # CMYK, YCbCr, LAB, ...


def _colour_source_bits(img: Image.Image, head: bytes) -> int:
    """16 for a 16-bit colour PNG or TIFF (which Pillow reads at 8 bits), else 8."""
    if img.mode not in ("RGB", "RGBA"):
        return 8
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 26 and head[24] == 16:
        return 16
    bits = getattr(img, "tag_v2", {}).get(258) if img.format == "TIFF" else None
    return 16 if isinstance(bits, tuple) and bits and max(bits) > 8 else 8


def _composite_alpha(arr: np.ndarray) -> tuple[np.ndarray, bool]:
    colour, alpha = arr[..., :-1], arr[..., -1:]
    if np.all(alpha >= 1.0):
        return colour, False
    return colour * alpha + (1.0 - alpha), True


def _head(path: str, n: int = 32) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def load_image(source: str | os.PathLike | bytes) -> Picture:
    """Read an image file (or its bytes). Raises MediaError with a message a person can act on."""
    name = "input" if isinstance(source, bytes) else os.fspath(source)
    if not isinstance(source, bytes) and not os.path.isfile(source):
        raise MediaError(f"{name}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            check_size(*img.size)
            source_bits = _colour_source_bits(img, source[:32] if isinstance(source, bytes) else _head(name))
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img = ImageOps.exif_transpose(img)
            img.load()
    except MediaError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        if os.path.splitext(name)[1].lower() in VIDEO_SUFFIXES:
            raise MediaError(f"{name}: a video, where a still image is expected") from None
        raise MediaError(f"{name}: not an image vov can read ({e.__class__.__name__})") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise MediaError(f"{name}: damaged or unsupported image ({e})") from None
    check_size(*img.size)
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    arr, grey, bits = _to_float(img)
    had_alpha = False
    if has_alpha and arr.shape[-1] in (2, 4):
        arr, had_alpha = _composite_alpha(arr)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return Picture(np.ascontiguousarray(arr, dtype=np.float32), grey=grey, had_alpha=had_alpha, bits=bits,
                   source_bits=max(bits, source_bits))


def save_image(pixels: np.ndarray, path: str | os.PathLike, grey: bool = False) -> None:
    """Write float RGB pixels in [0, 1]; the format follows the file extension (PNG by default)."""
    rgb = to_uint8(pixels)
    img = Image.fromarray(rgb)
    if grey:
        img = img.convert("L")
    ext = os.path.splitext(os.fspath(path))[1].lower()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}.get(ext, "PNG")
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    try:
        img.save(path, format=fmt, **options)
    except OSError as e:
        raise MediaError(f"{os.fspath(path)}: cannot write ({e.strerror or e})") from None


def pad_to_multiple(pixels: np.ndarray, multiple: int) -> np.ndarray:
    """Pad (H, W, C) by edge replication so both sides are multiples of `multiple`."""
    h, w = pixels.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return pixels
    return np.pad(pixels, ((0, ph), (0, pw), (0, 0)), mode="edge")
