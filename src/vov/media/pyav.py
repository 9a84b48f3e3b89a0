"""MP4, MOV, MKV, WebM (and AVI, MPEG-TS, IVF, Ogg) in and out through PyAV.

PyAV links FFmpeg's libraries into the process, rather than running the ffmpeg command line:
frames stream in and out of numpy without pipes or a child process to supervise, every frame
carries its colour matrix and range, rates come as exact fractions, and the wheel brings its own
FFmpeg (with x264, x265, SVT-AV1, libvpx and dav1d), so reading and writing do not depend on what
the system installed. The first video stream is read; audio and other streams are ignored;
rotation metadata is not applied. Only the containers and codecs in `AV_CONTAINERS` and
`AV_CODECS` are opened.

Written: MP4/MOV/MKV use H.264 (libx264, CRF 16 unless told), WebM uses VP9 (libvpx-vp9, CRF 24);
both 4:2:0 8-bit limited range BT.709 unless told, with the matrix and range signalled in the
stream. H.264 cannot code an odd side in 4:2:0, so an odd-sized clip is written 4:4:4 there.
"""

from __future__ import annotations

import os
import re
from fractions import Fraction

import numpy as np

from vov.errors import MediaError
from vov.media.bounds import MAX_RATE_TERM, VideoLimits, check_clip_size, check_frame_size, check_rate, video_limits
from vov.media.clip import Clip
from vov.media.colour import YCbCrFormat, default_matrix, rgb_to_ycbcr, ycbcr_to_rgb
from vov.media.writer import VideoWriter, remove_file, temporary_beside

VIDEO_CONTAINER_SUFFIXES = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
AV_CONTAINERS = {"mov", "mp4", "matroska", "webm", "avi", "mpegts", "ivf", "ogg"}
AV_CODECS = {"h264", "hevc", "av1", "vp8", "vp9", "vvc", "mpeg4", "mpeg2video", "mpeg1video", "mjpeg", "prores",
             "ffv1", "rawvideo", "png", "theora", "dnxhd", "huffyuv", "ffvhuff", "utvideo"}


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
        self._tmp = temporary_beside(self.path, suffix)
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
        remove_file(getattr(self, "_tmp", None))
        self._tmp = None
