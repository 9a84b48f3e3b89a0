"""Reading and writing the clips people have, frame by frame.

Accepted:
- Y4M (YUV4MPEG2), parsed and written here: 4:2:0 (`C420jpeg`, `C420mpeg2`, `C420paldv`, `C420`),
  4:2:2, 4:4:4 and mono, 8 bits and the `p9`/`p10`/`p12`/`p14`/`p16` (`mono9`...`mono16`) forms
  (little-endian 16-bit samples), any `F` rate, `A` aspect and `I` interlacing tag (kept, never
  applied: frames are read as whole pictures), `XCOLORRANGE=FULL|LIMITED` (absent means limited).
  Parameters after `FRAME` are read and dropped. A file read and written with the same parameters
  comes back byte for byte: the header's tokens are kept in `Clip.y4m_tags` and the colour
  conversion below is exactly invertible on the samples.
- MP4, MOV, MKV, WebM (and AVI, MPEG-TS, IVF, Ogg) through PyAV, which links FFmpeg's libraries
  into the process. PyAV rather than the ffmpeg command line: frames stream in and out of numpy
  without pipes or a child process to supervise, every frame carries its colour matrix and range,
  rates come as exact fractions, and the wheel brings its own FFmpeg (with x264, x265, SVT-AV1,
  libvpx and dav1d), so reading and writing do not depend on what the system installed. The first
  video stream is read; audio and other streams are ignored; rotation metadata is not applied.
  Only the containers and codecs in `AV_CONTAINERS` and `AV_CODECS` are opened.
- Folders of numbered PNG frames (`frames/0001.png`, `frames/0002.png`, ...): one common prefix,
  numbers in natural order without gaps, all frames the same size. Files that are not PNG are
  ignored. A folder has no rate: it is `fps` (default `DEFAULT_FPS`, 25 frames per second).

A `Clip` holds float32 RGB frames (frames, height, width, 3), nominally in [0, 1], its exact rate
as a fraction (numerator, denominator), and what the source was: colour matrix, range, chroma
layout, bit depth, grey. Y'CbCr samples outside the RGB cube (a limited-range foot- or headroom, a
saturated chroma) give values somewhat outside [0, 1]; they are kept so that writing back
reproduces the source's samples, and metrics and the codec clip them.

Colour (ITU-R BT.601 and BT.709; the matrices are written out in `RGB_TO_YPBPR`):
- Y' = Kr R' + Kg G' + Kb B', Pb = (B' - Y') / (2 (1 - Kb)), Pr = (R' - Y') / (2 (1 - Kr)) on
  gamma-encoded R'G'B' in [0, 1]; no transfer function or primaries are converted.
- Limited range, n bits: Y = (16 + 219 Y') 2^(n-8), Cb/Cr = (128 + 224 P) 2^(n-8). Full range:
  Y = (2^n - 1) Y', Cb/Cr = (2^n - 1) P + 2^(n-1) (ITU-T H.273). Samples are rounded half up and
  clamped to [0, 2^n - 1].
- Chroma siting: every 4:2:0 (and 4:2:2) plane is treated as sited at the centre of its 2x2 (2x1)
  block of luma samples, the JPEG/MPEG-1 siting that Y4M's `C420jpeg` names. Downsampling averages
  the block; upsampling gives each luma sample its block's chroma sample. That pair is exactly
  invertible (down(up(c)) = c), which is what makes Y4M round trips byte-exact. MPEG-2 (`left`)
  and PAL-DV sited planes are converted with the same filter (an offset of a quarter or half
  chroma sample that this filter ignores); their tags are kept. An odd side's last block has one
  column (row) of luma.
- The matrix of a stream that does not say (Y4M never does): BT.709 when the picture is HD
  (wider than 1024 or taller than 576), BT.601 otherwise, as video players guess
  (`default_matrix`). Other matrices (BT.2020, ...) are refused rather than shown in wrong colour.

Writers stream: open one with the target, size and rate, `write(frames)` as frames arrive,
`close()`. Files are written under a temporary name beside the target and renamed on `close()`
(a folder of frames is renamed as a whole), so nothing half-written is left under the target's
name; `abort()` (or leaving a `with` block by an exception) removes the temporary. MP4/MOV/MKV use
H.264 (libx264, CRF 16 unless told), WebM uses VP9 (libvpx-vp9, CRF 24); both are written
4:2:0 8-bit limited range BT.709 unless told, with the matrix and range signalled in the stream.
H.264 cannot code an odd side in 4:2:0, so an odd-sized clip is written 4:4:4 there. PNG frames
are 8-bit RGB (grey when the clip is grey).

Limits, checked from headers before any frame is allocated: `MAX_FRAMES` frames, frames of
`MIN_SIDE`..`MAX_SIDE` pixels a side and at most `MAX_PIXELS` pixels, `MAX_VIDEO_PIXELS` pixels
in all (3 GiB as float32 RGB), `MAX_DURATION_S` seconds and at most `MAX_FPS` frames per second.
Every failure is a one-line `MediaError`.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import BinaryIO, Iterable

import numpy as np

from vov.errors import MediaError
from vov.media.image import MAX_PIXELS, MAX_SIDE, MIN_SIDE, Picture, load_image

# ---------------------------------------------------------------------------------------------
# limits

MAX_FRAMES = 10_000
MAX_FRAME_PIXELS = MAX_PIXELS  # per frame, the same as a still image
MAX_VIDEO_PIXELS = 1 << 28  # frames x height x width: 268M pixels, 3 GiB as float32 RGB
MAX_DURATION_S = 3600.0
MAX_FPS = 1000
MAX_RATE_TERM = 2**31 - 1  # numerator and denominator of a rate
DEFAULT_FPS = (25, 1)  # a folder of PNG frames, and the synthetic camera moves
Y4M_MAX_HEADER = 4096  # bytes of the stream header, newline included
Y4M_MAX_FRAME_HEADER = 1024  # bytes of one FRAME line, newline included

Y4M_MAGIC = b"YUV4MPEG2"
VIDEO_CONTAINER_SUFFIXES = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
AV_CONTAINERS = {"mov", "mp4", "matroska", "webm", "avi", "mpegts", "ivf", "ogg"}
AV_CODECS = {"h264", "hevc", "av1", "vp8", "vp9", "vvc", "mpeg4", "mpeg2video", "mpeg1video", "mjpeg", "prores",
             "ffv1", "rawvideo", "png", "theora", "dnxhd", "huffyuv", "ffvhuff", "utvideo"}


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


# ---------------------------------------------------------------------------------------------
# colour

MATRICES = ("bt601", "bt709")
RANGES = ("limited", "full")
CHROMAS = ("420", "422", "444", "400")  # 400: luma only (grey)
BIT_DEPTHS = (8, 9, 10, 12, 14, 16)

# (Kr, Kb) of each matrix; Kg = 1 - Kr - Kb
LUMA_WEIGHTS = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}

# R'G'B' in [0, 1] -> (Y' in [0, 1], Pb and Pr in [-0.5, 0.5]); rows: Y', Pb, Pr
RGB_TO_YPBPR = {
    "bt601": np.array([[0.299, 0.587, 0.114],
                       [-0.168736, -0.331264, 0.5],
                       [0.5, -0.418688, -0.081312]]),
    "bt709": np.array([[0.2126, 0.7152, 0.0722],
                       [-0.114572, -0.385428, 0.5],
                       [0.5, -0.454153, -0.045847]]),
}
# the inverses as the standards print them; conversions use the exact inverse of the rows above
YPBPR_TO_RGB = {
    "bt601": np.array([[1.0, 0.0, 1.402],
                       [1.0, -0.344136, -0.714136],
                       [1.0, 1.772, 0.0]]),
    "bt709": np.array([[1.0, 0.0, 1.5748],
                       [1.0, -0.187324, -0.468124],
                       [1.0, 1.8556, 0.0]]),
}
_FORWARD = {m: RGB_TO_YPBPR[m].astype(np.float32) for m in MATRICES}
_INVERSE = {m: np.linalg.inv(RGB_TO_YPBPR[m]).astype(np.float32) for m in MATRICES}


def default_matrix(width: int, height: int) -> str:
    """The matrix of a stream that does not say: BT.709 for HD pictures, BT.601 below."""
    return "bt709" if width > 1024 or height > 576 else "bt601"


@dataclass(frozen=True)
class YCbCrFormat:
    """How Y'CbCr samples are stored: matrix, range, chroma layout, bits per sample."""

    matrix: str = "bt709"
    range: str = "limited"
    chroma: str = "420"
    bits: int = 8

    def __post_init__(self):
        if self.matrix not in MATRICES:
            raise MediaError(f"colour matrix {self.matrix!r} is not one of {', '.join(MATRICES)}")
        if self.range not in RANGES:
            raise MediaError(f"range {self.range!r} is not one of {', '.join(RANGES)}")
        if self.chroma not in CHROMAS:
            raise MediaError(f"chroma {self.chroma!r} is not one of {', '.join(CHROMAS)}")
        if self.bits not in BIT_DEPTHS:
            raise MediaError(f"bit depth {self.bits!r} is not one of {', '.join(map(str, BIT_DEPTHS))}")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.bits == 8 else np.dtype("<u2")

    def chroma_shape(self, height: int, width: int) -> tuple[int, int] | None:
        if self.chroma == "400":
            return None
        if self.chroma == "444":
            return height, width
        if self.chroma == "422":
            return height, (width + 1) // 2
        return (height + 1) // 2, (width + 1) // 2

    def frame_bytes(self, height: int, width: int) -> int:
        samples = height * width
        chroma = self.chroma_shape(height, width)
        if chroma is not None:
            samples += 2 * chroma[0] * chroma[1]
        return samples * self.dtype.itemsize

    def _scales(self) -> tuple[float, float, float, float]:
        """(luma scale, luma offset, chroma scale, chroma offset) from [0, 1] / [-0.5, 0.5] to codes."""
        if self.range == "full":
            peak = float(2**self.bits - 1)
            return peak, 0.0, peak, float(2 ** (self.bits - 1))
        unit = float(2 ** (self.bits - 8))
        return 219.0 * unit, 16.0 * unit, 224.0 * unit, 128.0 * unit


def _downsample(plane: np.ndarray, chroma: str) -> np.ndarray:
    """Average each chroma block (2x2 for 4:2:0, 2x1 for 4:2:2); an odd side's last block is narrower."""
    if chroma == "444":
        return plane
    h, w = plane.shape
    sub_h = 2 if chroma == "420" else 1
    padded = np.pad(plane, ((0, h % sub_h), (0, w % 2)), mode="edge")
    hh, ww = padded.shape
    return padded.reshape(hh // sub_h, sub_h, ww // 2, 2).mean(axis=(1, 3), dtype=np.float32)


def _upsample(plane: np.ndarray, chroma: str, height: int, width: int) -> np.ndarray:
    """Each luma sample takes its block's chroma sample (the exact inverse of `_downsample`)."""
    if chroma == "444":
        return plane
    if chroma == "420":
        plane = np.repeat(plane, 2, axis=0)
    return np.repeat(plane, 2, axis=1)[:height, :width]


def _quantise(values: np.ndarray, scale: float, offset: float, fmt: YCbCrFormat) -> np.ndarray:
    codes = np.floor(values * np.float32(scale) + np.float32(offset + 0.5))
    return np.clip(codes, 0, 2**fmt.bits - 1).astype(fmt.dtype)


def rgb_to_ycbcr(rgb: np.ndarray, fmt: YCbCrFormat) -> tuple[np.ndarray, ...]:
    """One frame of R'G'B' (height, width, 3) -> its planes (Y,) or (Y, Cb, Cr) as integer samples."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise MediaError(f"expected one RGB frame (height, width, 3), got shape {rgb.shape}")
    y_scale, y_offset, c_scale, c_offset = fmt._scales()
    m = _FORWARD[fmt.matrix]
    luma = rgb @ m[0]
    y = _quantise(luma, y_scale, y_offset, fmt)
    if fmt.chroma == "400":
        return (y,)
    pb = _downsample(rgb @ m[1], fmt.chroma)
    pr = _downsample(rgb @ m[2], fmt.chroma)
    return y, _quantise(pb, c_scale, c_offset, fmt), _quantise(pr, c_scale, c_offset, fmt)


def ycbcr_to_rgb(planes: tuple[np.ndarray, ...] | list[np.ndarray], fmt: YCbCrFormat,
                 out: np.ndarray | None = None) -> np.ndarray:
    """One frame's planes -> float32 R'G'B' (height, width, 3), not clipped to [0, 1]."""
    y_scale, y_offset, c_scale, c_offset = fmt._scales()
    luma = (planes[0].astype(np.float32) - np.float32(y_offset)) / np.float32(y_scale)
    h, w = luma.shape
    if out is None:
        out = np.empty((h, w, 3), dtype=np.float32)
    if fmt.chroma == "400" or len(planes) == 1:
        out[...] = luma[..., None]
        return out
    pb = (planes[1].astype(np.float32) - np.float32(c_offset)) / np.float32(c_scale)
    pr = (planes[2].astype(np.float32) - np.float32(c_offset)) / np.float32(c_scale)
    pb, pr = _upsample(pb, fmt.chroma, h, w), _upsample(pr, fmt.chroma, h, w)
    inv = _INVERSE[fmt.matrix]
    for c in range(3):
        out[..., c] = inv[c, 0] * luma + inv[c, 1] * pb + inv[c, 2] * pr
    return out


# ---------------------------------------------------------------------------------------------
# the clip


@dataclass
class Clip:
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
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

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


# ---------------------------------------------------------------------------------------------
# odd sizes


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


# ---------------------------------------------------------------------------------------------
# Y4M

_Y4M_LAYOUTS: dict[str, tuple[str, int]] = {"420jpeg": ("420", 8), "420mpeg2": ("420", 8), "420paldv": ("420", 8),
                                            "420": ("420", 8), "422": ("422", 8), "444": ("444", 8),
                                            "mono": ("400", 8)}
for _bits in BIT_DEPTHS[1:]:
    for _chroma in ("420", "422", "444"):
        _Y4M_LAYOUTS[f"{_chroma}p{_bits}"] = (_chroma, _bits)
    _Y4M_LAYOUTS[f"mono{_bits}"] = ("400", _bits)
_Y4M_DEFAULT_LAYOUT = "420jpeg"


def _y4m_colour_tag(chroma: str, bits: int) -> str:
    if chroma == "400":
        return "mono" if bits == 8 else f"mono{bits}"
    if bits == 8:
        return "420jpeg" if chroma == "420" else chroma
    return f"{chroma}p{bits}"


@dataclass(frozen=True)
class Y4MHeader:
    width: int
    height: int
    fps: tuple[int, int]
    chroma: str
    bits: int
    range: str
    tags: tuple[str, ...]  # every token after the signature, in order
    length: int  # bytes, newline included


def _positive_int(text: str, what: str, name: str) -> int:
    if not text.isdigit() or len(text) > 9 or not text.isascii():
        raise MediaError(f"{name}: Y4M header has a bad {what} ({text[:20]!r})")
    value = int(text)
    if value <= 0:
        raise MediaError(f"{name}: Y4M header has a zero {what}")
    return value


def _ratio(text: str, what: str, name: str) -> tuple[int, int]:
    num, sep, den = text.partition(":")
    if not sep or not (num.isdigit() and den.isdigit() and num.isascii() and den.isascii()) \
            or len(num) > 10 or len(den) > 10:
        raise MediaError(f"{name}: Y4M header has a bad {what} ({text[:24]!r})")
    return int(num), int(den)


def parse_y4m_header(data: bytes, name: str = "input", limits: VideoLimits | None = None) -> Y4MHeader:
    """Parse the stream header at the start of `data` (at most `Y4M_MAX_HEADER` bytes are looked at)."""
    if not data.startswith(Y4M_MAGIC):
        raise MediaError(f"{name}: not a Y4M file (no YUV4MPEG2 signature)")
    end = data.find(b"\n", 0, Y4M_MAX_HEADER)
    if end < 0:
        if len(data) < Y4M_MAX_HEADER:
            raise MediaError(f"{name}: truncated Y4M header")
        raise MediaError(f"{name}: Y4M header longer than {Y4M_MAX_HEADER} bytes")
    line = data[len(Y4M_MAGIC):end]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise MediaError(f"{name}: Y4M header is not ASCII") from None
    if text and not text.startswith(" "):
        raise MediaError(f"{name}: not a Y4M file (bad signature)")
    tokens = tuple(text[1:].split(" ")) if text else ()
    if any(not t or not t.isprintable() for t in tokens):
        raise MediaError(f"{name}: Y4M header has an empty or unprintable field")
    seen: set[str] = set()
    width = height = None
    fps: tuple[int, int] | None = None
    layout, colour_range = _Y4M_DEFAULT_LAYOUT, "limited"
    for token in tokens:
        key, value = token[0], token[1:]
        if key == "X":
            xkey, _, xvalue = value.partition("=")
            if xkey == "COLORRANGE":
                if xvalue not in ("FULL", "LIMITED"):
                    raise MediaError(f"{name}: Y4M XCOLORRANGE must be FULL or LIMITED, not {xvalue[:20]!r}")
                key = "XCOLORRANGE"
                colour_range = xvalue.lower()
            else:
                continue
        if key in seen:
            raise MediaError(f"{name}: Y4M header gives {key} twice")
        seen.add(key)
        if key == "W":
            width = _positive_int(value, "width", name)
        elif key == "H":
            height = _positive_int(value, "height", name)
        elif key == "F":
            num, den = _ratio(value, "frame rate", name)
            fps = (num, den) if num > 0 and den > 0 else None  # F0:0 means unknown
        elif key == "A":
            _ratio(value, "pixel aspect", name)
        elif key == "C":
            if value not in _Y4M_LAYOUTS:
                raise MediaError(f"{name}: Y4M colour space C{value[:20]} is not supported "
                                 f"(vov reads 4:2:0, 4:2:2, 4:4:4 and mono, 8 to 16 bits)")
            layout = value
    if width is None or height is None:
        raise MediaError(f"{name}: Y4M header lacks the width (W) or height (H)")
    chroma, bits = _Y4M_LAYOUTS[layout]
    fps = check_rate(fps or DEFAULT_FPS, name, limits)
    return Y4MHeader(width, height, fps, chroma, bits, colour_range, tokens, end + 1)


def _open_binary(source) -> tuple[str, BinaryIO]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        import io

        return "input", io.BytesIO(bytes(source))
    name = os.fspath(source)
    if os.path.isdir(name):
        raise MediaError(f"{name}: is a folder, not a Y4M file")
    try:
        return name, open(name, "rb")
    except FileNotFoundError:
        raise MediaError(f"{name}: no such file") from None
    except OSError as e:
        raise MediaError(f"{name}: cannot read ({e.strerror or e})") from None


def _scan_y4m_frames(f: BinaryIO, header: Y4MHeader, fmt: YCbCrFormat, name: str,
                     limits: VideoLimits) -> list[int]:
    """The offset of each frame's samples; checks markers, truncation and limits without reading samples."""
    size = f.seek(0, os.SEEK_END)
    frame_bytes = fmt.frame_bytes(header.height, header.width)
    offsets: list[int] = []
    pos = header.length
    while pos < size:
        index = len(offsets) + 1
        check_clip_size(index, header.width, header.height, header.fps, name, limits)
        f.seek(pos)
        head = f.read(min(Y4M_MAX_FRAME_HEADER, size - pos))
        if not head.startswith(b"FRAME"):
            if b"FRAME".startswith(head):
                raise MediaError(f"{name}: truncated at frame {index}")
            raise MediaError(f"{name}: frame {index} does not start with FRAME")
        end = head.find(b"\n")
        if end < 0:
            if len(head) < Y4M_MAX_FRAME_HEADER:
                raise MediaError(f"{name}: truncated at frame {index}")
            raise MediaError(f"{name}: frame {index}'s header is longer than {Y4M_MAX_FRAME_HEADER} bytes")
        if end > 5 and head[5:6] != b" ":
            raise MediaError(f"{name}: frame {index} does not start with FRAME")
        start = pos + end + 1
        if start + frame_bytes > size:
            raise MediaError(f"{name}: truncated at frame {index} ({size - start} of {frame_bytes} bytes)")
        offsets.append(start)
        pos = start + frame_bytes
    if not offsets:
        raise MediaError(f"{name}: no frames")
    return offsets


def _split_planes(data: bytes, fmt: YCbCrFormat, height: int, width: int) -> tuple[np.ndarray, ...]:
    samples = np.frombuffer(data, dtype=fmt.dtype)
    luma = samples[: height * width].reshape(height, width)
    chroma = fmt.chroma_shape(height, width)
    if chroma is None:
        return (luma,)
    n = chroma[0] * chroma[1]
    start = height * width
    cb = samples[start:start + n].reshape(chroma)
    cr = samples[start + n:start + 2 * n].reshape(chroma)
    return luma, cb, cr


def read_y4m(source, *, matrix: str | None = None, range: str | None = None,
             limits: VideoLimits | None = None) -> Clip:
    """Read a Y4M file (a path, or its bytes). `matrix` overrides `default_matrix` for its size,
    `range` the header's XCOLORRANGE (limited when absent)."""
    limits = limits or video_limits()
    name, f = _open_binary(source)
    with f:
        header = parse_y4m_header(f.read(Y4M_MAX_HEADER), name, limits)
        check_frame_size(header.width, header.height, name, limits)
        matrix = matrix or default_matrix(header.width, header.height)
        fmt = YCbCrFormat(matrix, range or header.range, header.chroma, header.bits)
        offsets = _scan_y4m_frames(f, header, fmt, name, limits)
        frame_bytes = fmt.frame_bytes(header.height, header.width)
        frames = np.empty((len(offsets), header.height, header.width, 3), dtype=np.float32)
        for i, offset in enumerate(offsets):
            f.seek(offset)
            data = f.read(frame_bytes)
            if len(data) != frame_bytes:
                raise MediaError(f"{name}: truncated at frame {i + 1}")
            ycbcr_to_rgb(_split_planes(data, fmt, header.height, header.width), fmt, out=frames[i])
    return Clip(frames, header.fps, matrix, fmt.range, header.chroma, header.bits, grey=header.chroma == "400",
                container="y4m", y4m_tags=header.tags)


# ---------------------------------------------------------------------------------------------
# writers


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


def _temporary_beside(path: str, suffix: str = "") -> str:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=f".tmp{suffix}", dir=folder)
    except OSError as e:
        raise MediaError(f"{path}: cannot write ({e.strerror or e})") from None
    os.close(fd)
    return tmp


def _remove(path: str | None) -> None:
    if path:
        try:
            os.remove(path)
        except OSError:
            pass


class Y4MWriter(VideoWriter):
    """Y4M, written as the format says; `tags` (a source's header tokens) are kept where they still hold."""

    def __init__(self, path, width: int, height: int, fps: tuple[int, int], *, matrix: str | None = None,
                 range: str = "limited", chroma: str = "420", bits: int = 8, tags: Iterable[str] = ()):
        super().__init__(path, width, height, fps)
        self.format = YCbCrFormat(matrix or default_matrix(width, height), range, chroma, bits)
        self.header = self._header(tuple(tags))
        self._tmp = _temporary_beside(self.path)
        try:
            self._file = open(self._tmp, "wb")
            self._file.write(self.header)
        except OSError as e:
            _remove(self._tmp)
            raise MediaError(f"{self.path}: cannot write ({e.strerror or e})") from None

    def _header(self, tags: tuple[str, ...]) -> bytes:
        """The stream header: a fresh one, or `tags` with W, H, F, C, XYSCSS and XCOLORRANGE brought in
        step with this writer (tokens whose meaning is unchanged are kept as they were written)."""
        fmt = self.format
        layout = (fmt.chroma, fmt.bits)
        colour = _y4m_colour_tag(*layout)
        rate = f"F{self.fps[0]}:{self.fps[1]}"
        if not tags:
            out = [f"W{self.width}", f"H{self.height}", rate, "Ip", "A1:1", f"C{colour}",
                   f"XCOLORRANGE={fmt.range.upper()}"]
            return ("YUV4MPEG2 " + " ".join(out) + "\n").encode("ascii")
        try:
            header = b"YUV4MPEG2" + b"".join(b" " + t.encode("ascii") for t in tags) + b"\n"
            source = parse_y4m_header(header, "tags")
        except (MediaError, UnicodeEncodeError, IndexError):
            raise MediaError(f"{self.path}: the Y4M tags given are not a valid header") from None
        source_colour = next((t[1:] for t in tags if t.startswith("C")), None)
        keep_colour = _Y4M_LAYOUTS[source_colour or _Y4M_DEFAULT_LAYOUT] == layout
        written_colour = source_colour if keep_colour else colour
        out = []
        for token in tags:
            if token.startswith("W"):
                out.append(f"W{self.width}")
            elif token.startswith("H"):
                out.append(f"H{self.height}")
                if not any(t.startswith("F") for t in tags) and self.fps != DEFAULT_FPS:
                    out.append(rate)
            elif token.startswith("F"):
                out.append(token if source.fps == self.fps else rate)
            elif token.startswith("C"):
                out.append(f"C{written_colour}")
            elif token.startswith("XYSCSS="):
                if keep_colour:
                    out.append(token)
                elif not written_colour.startswith("mono"):
                    out.append(f"XYSCSS={written_colour.upper()}")
            elif token.startswith("XCOLORRANGE="):
                out.append(f"XCOLORRANGE={fmt.range.upper()}")
            else:
                out.append(token)
        if source_colour is None and not keep_colour:
            out.append(f"C{colour}")
        if not any(t.startswith("XCOLORRANGE=") for t in tags) and fmt.range == "full":
            out.append("XCOLORRANGE=FULL")
        return ("YUV4MPEG2 " + " ".join(out) + "\n").encode("ascii")

    def _write_frame(self, frame: np.ndarray) -> None:
        planes = rgb_to_ycbcr(frame, self.format)
        try:
            self._file.write(b"FRAME\n")
            for plane in planes:
                self._file.write(np.ascontiguousarray(plane).tobytes())
        except OSError as e:
            raise MediaError(f"{self.path}: cannot write ({e.strerror or e})") from None

    def _finish(self) -> None:
        try:
            self._file.close()
            os.replace(self._tmp, self.path)
        except OSError as e:
            raise MediaError(f"{self.path}: cannot write ({e.strerror or e})") from None
        self._tmp = None

    def _discard(self) -> None:
        try:
            self._file.close()
        except (OSError, AttributeError):
            pass
        _remove(self._tmp)
        self._tmp = None


# ---------------------------------------------------------------------------------------------
# PyAV: MP4, MOV, MKV, WebM


def _import_av():
    try:
        import av
    except ImportError:
        raise MediaError("reading and writing MP4/MKV/WebM needs PyAV: pip install 'vov[video]' (or pip install av)") \
            from None
    return av


_AV_MATRIX = {1: "bt709", 5: "bt601", 6: "bt601", 4: "bt601"}  # AVColorSpace: BT709, BT470BG, SMPTE170M, FCC
_AV_MATRIX_CODE = {"bt709": 1, "bt601": 6}
_AV_NAMES = {0: "rgb", 7: "smpte240m", 8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 14: "ictcp"}
_PLANAR = re.compile(r"^(yuvj?|yuva)(420|422|444)p(?:(9|10|12|14|16)le)?$")
_GREY = re.compile(r"^gray(?:(9|10|12|14|16)le)?$")
_SEMIPLANAR = {"nv12": "yuv420p", "nv21": "yuv420p", "nv16": "yuv422p", "nv24": "yuv444p", "nv42": "yuv444p",
               "p010le": "yuv420p10le", "p016le": "yuv420p16le", "p210le": "yuv422p10le", "p410le": "yuv444p10le",
               "yuyv422": "yuv422p", "uyvy422": "yuv422p", "yvyu422": "yuv422p", "ya8": "gray", "ya16le": "gray16le",
               "y210le": "yuv422p10le"}


def _planar_layout(fmt_name: str) -> tuple[str, int, bool] | None:
    """(chroma, bits, full range by name) of a planar YUV or grey pixel format, else None."""
    m = _PLANAR.match(fmt_name)
    if m:
        return m.group(2), int(m.group(3) or 8), m.group(1) == "yuvj"
    m = _GREY.match(fmt_name)
    if m:
        return "400", int(m.group(1) or 8), False
    return None


def _frame_planes(frame, chroma: str, bits: int) -> list[np.ndarray]:
    dtype = np.dtype(np.uint8) if bits == 8 else np.dtype("<u2")
    count = 1 if chroma == "400" else 3
    planes = []
    for plane in list(frame.planes)[:count]:
        flat = np.frombuffer(plane, dtype=dtype)
        rows = flat[: plane.height * (plane.line_size // dtype.itemsize)]
        planes.append(np.array(rows.reshape(plane.height, -1)[:, : plane.width]))
    return planes


def _stream_rate(stream) -> tuple[int, int] | None:
    average, base = stream.average_rate, stream.base_rate
    rate = None
    if base and average and abs(float(base) / float(average) - 1) < 1e-3:
        rate = base
    else:
        rate = average or base or getattr(stream, "guessed_rate", None)
    if not rate or rate <= 0:
        return None
    rate = Fraction(rate).limit_denominator(MAX_RATE_TERM)
    return rate.numerator, rate.denominator


def _av_error(e: Exception) -> str:
    text = getattr(e, "strerror", None) or str(e).strip() or e.__class__.__name__
    return " ".join(str(text).split())[:160]


def read_av(source, *, matrix: str | None = None, limits: VideoLimits | None = None) -> Clip:
    """Read the first video stream of an MP4/MOV/MKV/WebM (...) file through PyAV."""
    av = _import_av()
    limits = limits or video_limits()
    name = os.fspath(source)
    if not os.path.isfile(name):
        raise MediaError(f"{name}: no such file")
    try:
        container = av.open(name, mode="r", metadata_errors="ignore")
    except av.FFmpegError as e:
        raise MediaError(f"{name}: not a video vov can read ({_av_error(e)})") from None
    except (OSError, ValueError) as e:
        raise MediaError(f"{name}: not a video vov can read ({_av_error(e)})") from None
    with container:
        formats = set(container.format.name.split(","))
        if not formats & AV_CONTAINERS:
            raise MediaError(f"{name}: container {container.format.name} is not one vov reads "
                             f"({', '.join(sorted(AV_CONTAINERS))})")
        if not container.streams.video:
            raise MediaError(f"{name}: no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx.name not in AV_CODECS:
            raise MediaError(f"{name}: video codec {ctx.name} is not one vov reads ({', '.join(sorted(AV_CODECS))})")
        width, height = ctx.width, ctx.height
        check_frame_size(width, height, name, limits)
        fps = _stream_rate(stream)
        if fps is None:
            raise MediaError(f"{name}: the video stream has no frame rate")
        fps = check_rate(fps, name, limits)
        expected = int(stream.frames or 0)  # counted by the container (MP4, MOV)
        duration = None  # seconds the container says the video lasts (MKV, WebM have no frame count)
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration and len(container.streams) == 1:
            duration = container.duration / 1_000_000
        if expected <= 0 and duration:
            expected = int(round(duration * fps[0] / fps[1]))
        if expected > 0:
            check_clip_size(expected, width, height, fps, name, limits)
        stream.thread_type = "AUTO"
        decoded: list[tuple[str, list[np.ndarray], YCbCrFormat | None]] = []
        first: YCbCrFormat | None = None
        grey = True
        try:
            for frame in container.decode(stream):
                check_clip_size(len(decoded) + 1, width, height, fps, name, limits)
                if (frame.width, frame.height) != (width, height):
                    raise MediaError(f"{name}: frame {len(decoded) + 1} is {frame.width}x{frame.height}, "
                                     f"not {width}x{height}; vov reads clips of one size")
                item = _decode_frame(frame, matrix, name, len(decoded) + 1)
                decoded.append(item)
                if item[2] is not None:
                    first = first or item[2]
                    grey = grey and item[2].chroma == "400"
                else:
                    grey = False
        except av.FFmpegError as e:
            raise MediaError(f"{name}: damaged at frame {len(decoded) + 1} ({_av_error(e)})") from None
    if not decoded:
        raise MediaError(f"{name}: no frames")
    if stream.frames and len(decoded) < stream.frames:
        raise MediaError(f"{name}: truncated: {len(decoded)} of {stream.frames} frames decode")
    if not stream.frames and expected > len(decoded) + 1:  # a frame of slack for rounded durations
        raise MediaError(f"{name}: truncated: {len(decoded)} frames decode where the file announces {expected}")
    frames = np.empty((len(decoded), height, width, 3), dtype=np.float32)
    for i, (kind, planes, fmt) in enumerate(decoded):
        if kind == "rgb":
            rgb = planes[0]
            frames[i] = rgb.astype(np.float32) / np.float32(np.iinfo(rgb.dtype).max)
        else:
            ycbcr_to_rgb(planes, fmt, out=frames[i])
        decoded[i] = None  # free as we go
    source = first or YCbCrFormat("bt709", "full", "444", 8)
    kind = "mp4" if "mp4" in formats else "matroska" if "matroska" in formats else sorted(formats)[0]
    return Clip(frames, fps, source.matrix, source.range, source.chroma, source.bits, grey=grey, container=kind)


def _decode_frame(frame, matrix: str | None, name: str, index: int):
    """('yuv', planes, format) or ('rgb', [uint8/uint16 RGB], None) for one decoded frame."""
    fmt_name = frame.format.name
    fmt_name = _SEMIPLANAR.get(fmt_name, fmt_name)
    layout = _planar_layout(fmt_name)
    if layout is None:
        components = frame.format.components
        if frame.format.is_rgb or fmt_name in ("pal8", "bgr8", "rgb8"):
            deep = any(c.bits > 8 for c in components)
            rgb = frame.reformat(format="rgb48le" if deep else "rgb24").to_ndarray()
            return "rgb", [rgb], None
        raise MediaError(f"{name}: pixel format {frame.format.name} is not supported")
    if fmt_name != frame.format.name:
        frame = frame.reformat(format=fmt_name)
    chroma, bits, full_by_name = layout
    code = int(frame.colorspace or 2)
    if code == 0 and chroma != "400":
        raise MediaError(f"{name}: frame {index} is YUV labelled as RGB; vov cannot tell its matrix")
    if code in (2, 0):
        chosen = matrix or default_matrix(frame.width, frame.height)
    elif code in _AV_MATRIX:
        chosen = matrix or _AV_MATRIX[code]
    else:
        raise MediaError(f"{name}: colour matrix {_AV_NAMES.get(code, code)} is not supported "
                         f"(vov reads BT.601 and BT.709)")
    colour_range = "full" if full_by_name or int(frame.color_range or 0) == 2 else "limited"
    if chroma == "400" and int(frame.color_range or 0) == 0:
        colour_range = "full"  # FFmpeg's grey formats are full range unless a stream says otherwise
    fmt = YCbCrFormat(chosen, colour_range, chroma, bits)
    return "yuv", _frame_planes(frame, chroma, bits), fmt


class AVWriter(VideoWriter):
    """MP4/MOV/MKV (H.264) and WebM (VP9) through PyAV, with the matrix and range signalled."""

    def __init__(self, path, width: int, height: int, fps: tuple[int, int], *, matrix: str | None = None,
                 range: str = "limited", chroma: str = "420", bits: int = 8, codec: str | None = None,
                 crf: int | None = None, preset: str | None = None):
        super().__init__(path, width, height, fps)
        av = _import_av()
        suffix = os.path.splitext(self.path)[1].lower()
        if suffix not in VIDEO_CONTAINER_SUFFIXES:
            raise MediaError(f"{self.path}: vov writes video as {', '.join(VIDEO_CONTAINER_SUFFIXES)}, .y4m or a "
                             f"folder of PNG frames")
        container_format = VIDEO_CONTAINER_SUFFIXES[suffix]
        available = av.codecs_available
        if codec is None:
            wanted = ("libvpx-vp9", "libsvtav1", "libaom-av1") if container_format == "webm" else \
                     ("libx264", "libx265", "mpeg4")
            codec = next((c for c in wanted if c in available), None)
            if codec is None:
                raise MediaError(f"{self.path}: this PyAV has none of the encoders {', '.join(wanted)}")
        elif codec not in available:
            raise MediaError(f"{self.path}: this PyAV has no {codec} encoder")
        if chroma == "400":
            chroma = "420"  # neutral chroma; players expect colour
        if chroma == "420" and codec in ("libx264", "libx265", "mpeg4") and (width % 2 or height % 2):
            chroma = "444"  # these cannot code an odd side in 4:2:0
        if bits not in (8, 10):
            bits = 10 if bits > 8 else 8
        self.format = YCbCrFormat(matrix or "bt709", range, chroma, bits)
        pix_fmt = f"yuv{chroma}p" + ("" if bits == 8 else "10le")
        self._tmp = _temporary_beside(self.path, suffix)
        try:
            self._container = av.open(self._tmp, mode="w", format=container_format)
            stream = self._container.add_stream(codec, rate=Fraction(*self.fps))
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, pix_fmt
            stream.time_base = Fraction(self.fps[1], self.fps[0])
            ctx = stream.codec_context
            ctx.colorspace = _AV_MATRIX_CODE[self.format.matrix]
            ctx.color_primaries = ctx.color_trc = _AV_MATRIX_CODE[self.format.matrix]
            ctx.color_range = 2 if range == "full" else 1
            stream.options = self._options(codec, crf, preset)
            self._stream = stream
        except (av.FFmpegError, ValueError, OSError) as e:
            self._discard()
            raise MediaError(f"{self.path}: cannot open the {codec} encoder ({_av_error(e)})") from None
        self._pix_fmt = pix_fmt

    @staticmethod
    def _options(codec: str, crf: int | None, preset: str | None) -> dict[str, str]:
        if codec == "libx264":
            return {"crf": str(16 if crf is None else crf), "preset": preset or "medium"}
        if codec == "libx265":
            return {"crf": str(16 if crf is None else crf), "preset": preset or "medium",
                    "x265-params": "log-level=error"}
        if codec == "libvpx-vp9":
            return {"crf": str(24 if crf is None else crf), "b": "0", "row-mt": "1", "cpu-used": preset or "4",
                    "deadline": "good"}
        if codec == "libsvtav1":
            return {"crf": str(24 if crf is None else crf), "preset": preset or "8"}
        if codec == "libaom-av1":
            return {"crf": str(24 if crf is None else crf), "b": "0", "cpu-used": preset or "6"}
        return {"qscale": str(2 if crf is None else crf)}

    def _write_frame(self, frame: np.ndarray) -> None:
        av = _import_av()
        planes = rgb_to_ycbcr(frame, self.format)
        out = av.VideoFrame(self.width, self.height, self._pix_fmt)
        for plane, samples in zip(out.planes, planes):
            view = np.frombuffer(plane, dtype=samples.dtype)
            rows = view[: plane.height * (plane.line_size // samples.dtype.itemsize)].reshape(plane.height, -1)
            rows[:, : plane.width] = samples
        out.pts = self.frames_written  # in the stream's time base, one tick a frame
        out.colorspace = _AV_MATRIX_CODE[self.format.matrix]
        out.color_range = 2 if self.format.range == "full" else 1
        try:
            for packet in self._stream.encode(out):
                self._container.mux(packet)
        except av.FFmpegError as e:
            raise MediaError(f"{self.path}: encoding failed ({_av_error(e)})") from None

    def _finish(self) -> None:
        av = _import_av()
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            os.replace(self._tmp, self.path)
        except av.FFmpegError as e:
            raise MediaError(f"{self.path}: encoding failed ({_av_error(e)})") from None
        except OSError as e:
            raise MediaError(f"{self.path}: cannot write ({e.strerror or e})") from None
        self._tmp = None

    def _discard(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            try:
                container.close()
            except Exception:  # closing a half-written container may fail; the file goes anyway
                pass
            self._container = None
        _remove(getattr(self, "_tmp", None))
        self._tmp = None


# ---------------------------------------------------------------------------------------------
# folders of PNG frames

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


# ---------------------------------------------------------------------------------------------
# one entry for every kind of file


def _is_folder_target(path: str) -> bool:
    return path.endswith(("/", os.sep)) or os.path.isdir(path) or not os.path.splitext(path)[1]


def open_video_writer(path, width: int, height: int, fps: tuple[int, int], *, matrix: str | None = None,
                      range: str = "limited", chroma: str = "420", bits: int = 8, grey: bool = False,
                      y4m_tags: Iterable[str] = (), **encoder) -> VideoWriter:
    """A writer chosen by the target: `.y4m`, `.mp4`/`.m4v`/`.mov`/`.mkv`/`.webm`, or a folder (no suffix).

    `matrix` None means: for Y4M the one a reader assumes for this size (`default_matrix`), for the
    others BT.709 (signalled in the stream). `encoder` (codec, crf, preset) goes to `AVWriter`.
    """
    name = os.fspath(path)
    suffix = os.path.splitext(name.rstrip("/\\"))[1].lower()
    if suffix == ".y4m":
        return Y4MWriter(name, width, height, fps, matrix=matrix, range=range, chroma=chroma, bits=bits,
                         tags=y4m_tags)
    if suffix in VIDEO_CONTAINER_SUFFIXES:
        return AVWriter(name, width, height, fps, matrix=matrix, range=range, chroma=chroma, bits=bits, **encoder)
    if _is_folder_target(name):
        return PNGFramesWriter(name, width, height, fps, grey=grey)
    raise MediaError(f"{name}: vov writes clips as .y4m, {', '.join(VIDEO_CONTAINER_SUFFIXES)} or a folder of PNG "
                     f"frames, not {suffix}")


def save_video(clip: Clip, path, *, chunk: int = 16, **options) -> None:
    """Write a whole clip. Y4M keeps the clip's own parameters (and the header of a clip read from
    Y4M), so a Y4M read and saved comes back byte for byte; containers default to 4:2:0 8-bit
    BT.709 limited range; `options` override (matrix, range, chroma, bits, codec, crf, preset)."""
    name = os.fspath(path)
    suffix = os.path.splitext(name.rstrip("/\\"))[1].lower()
    settings: dict = {"grey": clip.grey}
    if suffix == ".y4m":
        settings.update(range=clip.range, chroma=clip.chroma, bits=clip.bits,
                        matrix=clip.matrix if clip.container == "y4m" else None, y4m_tags=clip.y4m_tags)
    settings.update(options)
    with open_video_writer(name, clip.width, clip.height, clip.fps, **settings) as writer:
        for start in range(0, clip.num_frames, max(1, chunk)):
            writer.write(clip.frames[start:start + chunk])


def _sniff(path: str) -> str:
    """'y4m', 'video', 'image' or 'unknown' from a file's first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise MediaError(f"{path}: cannot read ({e.strerror or e})") from None
    if head.startswith(Y4M_MAGIC):
        return "y4m"
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
                        b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "image" if brand in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1", b"jxl ") else "video"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "video"
    if head.startswith(b"\x1a\x45\xdf\xa3") or (head[:4] == b"RIFF" and head[8:12] == b"AVI "):
        return "video"
    if head.startswith((b"DKIF", b"OggS")) or (len(head) > 188 and head[0] == 0x47 and head[188] == 0x47):
        return "video"
    return "unknown"


def load_video(path, *, fps: tuple[int, int] | None = None, matrix: str | None = None,
               limits: VideoLimits | None = None) -> Clip:
    """A clip from a Y4M file, a container PyAV reads, or a folder of numbered PNG frames.

    `fps` is the rate of a PNG folder (default `DEFAULT_FPS`); files carry their own. `matrix`
    overrides the matrix of a stream (Y4M never states one)."""
    name = os.fspath(path)
    if os.path.isdir(name):
        return read_png_frames(name, fps or DEFAULT_FPS, limits=limits)
    if not os.path.isfile(name):
        raise MediaError(f"{name}: no such file or folder")
    kind = _sniff(name)
    if kind == "y4m":
        return read_y4m(name, matrix=matrix, limits=limits)
    if kind == "image":
        raise MediaError(f"{name}: a still image, not a video")
    return read_av(name, matrix=matrix, limits=limits)


def load_media_bytes(data: bytes, name: str = "upload") -> Picture | Clip:
    """`load_media` of a file's bytes (an upload): images are read from memory, videos through a
    temporary file (PyAV and the Y4M reader take paths); errors name `name`."""
    import tempfile

    head = data[:512]
    if head.startswith(Y4M_MAGIC) or head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip") \
            or head.startswith(b"\x1a\x45\xdf\xa3") or (head[:4] == b"RIFF" and head[8:12] == b"AVI "):
        if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1", b"jxl "):
            return load_image(data)
        with tempfile.TemporaryDirectory(prefix="vov-upload-") as folder:
            path = os.path.join(folder, "media")
            with open(path, "wb") as f:
                f.write(data)
            try:
                return load_media(path)
            except MediaError as e:
                raise MediaError(str(e).replace(path, name)) from None
    try:
        return load_image(data)
    except MediaError as e:
        raise MediaError(str(e).replace("input", name, 1) if "neither" in str(e) else
                         f"{name}: neither an image nor a video vov can read") from None


def load_media(path, *, fps: tuple[int, int] | None = None) -> Picture | Clip:
    """A `Picture` for a still image, a `Clip` for a video or a folder of PNG frames, by content."""
    name = os.fspath(path)
    if os.path.isdir(name):
        return read_png_frames(name, fps or DEFAULT_FPS)
    if not os.path.isfile(name):
        raise MediaError(f"{name}: no such file or folder")
    kind = _sniff(name)
    if kind == "image":
        return load_image(name)
    if kind in ("y4m", "video"):
        return load_video(name, fps=fps)
    try:
        return load_image(name)
    except MediaError:
        pass
    try:
        return read_av(name)
    except MediaError as e:
        if "not a video vov can read" in str(e) or "no video stream" in str(e) or "is not one vov reads" in str(e):
            raise MediaError(f"{name}: neither an image nor a video vov can read") from None
        raise


# ---------------------------------------------------------------------------------------------
# synthetic camera moves

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


__all__ = [
    "AV_CODECS", "AV_CONTAINERS", "AVWriter", "CAMERA_MOVES", "Clip", "DEFAULT_FPS", "LUMA_WEIGHTS", "MAX_DURATION_S",
    "MAX_FPS", "MAX_FRAMES", "MAX_FRAME_PIXELS", "MAX_VIDEO_PIXELS", "PNGFramesWriter", "RGB_TO_YPBPR",
    "VideoLimits", "VideoWriter", "Y4MHeader", "Y4MWriter", "YCbCrFormat", "YPBPR_TO_RGB", "camera_move",
    "check_clip_size", "check_frame_size", "check_rate", "crop_frames", "default_matrix", "load_media", "load_video",
    "open_video_writer", "pad_frames", "parse_y4m_header", "read_av", "read_png_frames", "read_y4m", "rgb_to_ycbcr",
    "save_video", "video_limits", "ycbcr_to_rgb",
]
