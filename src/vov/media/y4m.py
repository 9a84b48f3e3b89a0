"""Y4M (YUV4MPEG2), parsed and written here.

Read: 4:2:0 (`C420jpeg`, `C420mpeg2`, `C420paldv`, `C420`), 4:2:2, 4:4:4 and mono, 8 bits and the
`p9`/`p10`/`p12`/`p14`/`p16` (`mono9`...`mono16`) forms (little-endian 16-bit samples), any `F`
rate, `A` aspect and `I` interlacing tag (kept, never applied: frames are read as whole pictures),
`XCOLORRANGE=FULL|LIMITED` (absent means limited). Parameters after `FRAME` are read and dropped.
Y4M states no matrix: a reader assumes `default_matrix` for the size. A file read and written with
the same parameters comes back byte for byte: the header's tokens are kept in `Clip.y4m_tags` and
the colour conversion (`vov.media.colour`) is exactly invertible on the samples. Every frame's
marker, size and the limits are checked before any samples are read.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import BinaryIO, Iterable

import numpy as np

from vov.errors import MediaError
from vov.media.bounds import (DEFAULT_FPS, VideoLimits, check_clip_size, check_frame_size, check_rate,
                              video_limits)
from vov.media.clip import Clip
from vov.media.colour import BIT_DEPTHS, YCbCrFormat, default_matrix, rgb_to_ycbcr, ycbcr_to_rgb
from vov.media.writer import VideoWriter, remove_file, temporary_beside

Y4M_MAX_HEADER = 4096  # bytes of the stream header, newline included
Y4M_MAX_FRAME_HEADER = 1024  # bytes of one FRAME line, newline included

Y4M_MAGIC = b"YUV4MPEG2"

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


class Y4MWriter(VideoWriter):
    """Y4M, written as the format says; `tags` (a source's header tokens) are kept where they still hold."""

    def __init__(self, path, width: int, height: int, fps: tuple[int, int], *, matrix: str | None = None,
                 range: str = "limited", chroma: str = "420", bits: int = 8, tags: Iterable[str] = ()):
        super().__init__(path, width, height, fps)
        self.format = YCbCrFormat(matrix or default_matrix(width, height), range, chroma, bits)
        self.header = self._header(tuple(tags))
        self._tmp = temporary_beside(self.path)
        try:
            self._file = open(self._tmp, "wb")
            self._file.write(self.header)
        except OSError as e:
            remove_file(self._tmp)
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
        remove_file(self._tmp)
        self._tmp = None
