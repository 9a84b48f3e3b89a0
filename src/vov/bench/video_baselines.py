"""Classical video codecs that the benchmark runs beside vov on clips.

Each codec is a class with `encode(clip, quality) -> bytes` and `decode(data, clip) -> Clip` (the
reference clip gives the size, frame count, rate and colour format to decode to). Rates are
measured from the bytes `encode` returns: the coded stream itself, without a container. Every
codec runs through one ffmpeg: the one bundled in the PyPI package imageio-ffmpeg when it is
installed (its build has libx264, libx265, SVT-AV1, libaom and libvvenc), else `ffmpeg` on PATH.

What each encoder receives: the clip converted by `vov.media.colour` (its own matrices and chroma
filter) to Y4M 4:2:0 in the clip's matrix and range, 8 bits (10 for VVC, whose encoder takes only
10-bit input), at the clip's exact frame rate; the stream signals the same matrix and range. Odd
sides are padded by edge replication to what the encoder needs (even; a multiple of 8 for VVC) and
cropped after decoding. A clip read from a 4:2:0 Y4M is handed over with its own samples (the
conversion is exact both ways). Decoding writes Y4M at the same bit depth, read back with the same
conversion, so no colour conversion other than vov's own is in the loop.

Settings, the encoders' defaults otherwise (their own group-of-pictures structure, B-frames where
they use them):
- x264: libx264, preset medium, CRF 0-51; SEI NAL units (x264 writes its settings there as text)
  are stripped from the stream so they do not count as rate.
- x265: libx265, preset medium, CRF 0-51, info=0 (no settings SEI).
- SVT-AV1: libsvtav1, preset 8, CRF 1-63; AV1 low-overhead OBU stream.
- libaom: libaom-av1, cpu-used 6, constant quality (CRF 0-63 with no bitrate bound).
- VVC: libvvenc, preset faster, QP 0-63 (vvenc's default perceptual QP adaptation on).

`baselines.search_quality` (shared with the image baselines) bisects each knob for the stream nearest the
target bpp in log rate. Rates are bits per pixel over the unpadded clip: 8 x bytes / (frames x
height x width).

Metrics (`measure`), computed per frame and then averaged over the frames: PSNR over the RGB
channels of the 8-bit rounded frames (`vov.bench.metrics.psnr`, "psnr-rgb", the same as for images; not
YUV PSNR) and MS-SSIM on RGB (`vov.bench.metrics.ms_ssim`).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from vov.bench.baselines import Baseline, CodecFailed, ToolMissing, run_tool, search_quality, tool_version
from vov.errors import MediaError, UsageError
from vov.media.clip import Clip, crop_frames, pad_frames
from vov.media.y4m import Y4MWriter, read_y4m


@functools.lru_cache(maxsize=None)
def ffmpeg_exe() -> str | None:
    """imageio-ffmpeg's bundled ffmpeg (IMAGEIO_FFMPEG_EXE overrides it), else ffmpeg on PATH."""
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        if exe and os.path.isfile(exe):
            return exe
    except (ImportError, RuntimeError):
        pass
    return shutil.which("ffmpeg")


@functools.lru_cache(maxsize=None)
def ffmpeg_encoders(exe: str) -> frozenset[str]:
    try:
        proc = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    names = set()
    for line in proc.stdout.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] == "V":
            names.add(parts[1])
    return frozenset(names)


@functools.lru_cache(maxsize=None)
def ffmpeg_version(exe: str) -> str:
    return tool_version([exe, "-hide_banner", "-version"])


class VideoCodec(Baseline):
    encoder: str = ""  # ffmpeg's encoder name
    stream_format: str = ""  # ffmpeg's muxer and demuxer of the raw stream
    qmax: int = 51
    higher_is_larger: bool = False
    bits: int = 8
    multiple: int = 2  # each side padded to a multiple of this

    def check(self) -> None:
        """Raise ToolMissing, saying what to install, when ffmpeg or this encoder is absent."""
        exe = ffmpeg_exe()
        if exe is None:
            raise ToolMissing(f"{self.label} needs ffmpeg: pip install imageio-ffmpeg (its ffmpeg has every "
                              f"encoder here) or apt-get install ffmpeg")
        if self.encoder not in ffmpeg_encoders(exe):
            raise ToolMissing(f"{self.label} needs the {self.encoder} encoder, which {exe} ({ffmpeg_version(exe)}) "
                              f"was built without; pip install imageio-ffmpeg, whose ffmpeg has it, or leave "
                              f"{self.name} out")

    @functools.cached_property
    def version(self) -> str:
        exe = ffmpeg_exe()
        return f"{ffmpeg_version(exe) if exe else 'no ffmpeg'} {self.encoder}"

    def params(self, quality: int) -> dict:
        return {"crf": quality}

    def _encoder_args(self, quality: int) -> list[str]:
        raise NotImplementedError

    def _colour_args(self, clip: Clip) -> list[str]:
        space = "bt709" if clip.matrix == "bt709" else "smpte170m"
        return ["-colorspace", space, "-color_primaries", space, "-color_trc", space,
                "-color_range", "pc" if clip.range == "full" else "tv"]

    def source_y4m(self, clip: Clip, path: str) -> None:
        """The encoder's input: the clip as Y4M 4:2:0 in its matrix and range, padded to `multiple`."""
        frames = pad_frames(clip.frames, self.multiple)
        h, w = frames.shape[1:3]
        with Y4MWriter(path, w, h, clip.fps, matrix=clip.matrix, range=clip.range, chroma="420",
                       bits=self.bits) as writer:
            for start in range(0, len(frames), 8):
                writer.write(frames[start:start + 8])

    def encode(self, clip: Clip, quality: int, source: str | None = None) -> bytes:
        """The coded stream at `quality`; `source` is a Y4M already made by `source_y4m`, if any."""
        self.check()
        with tempfile.TemporaryDirectory(prefix="vov-bench-") as tmp:
            if source is None:
                source = os.path.join(tmp, "in.y4m")
                self.source_y4m(clip, source)
            out = os.path.join(tmp, "out.bin")
            argv = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "yuv4mpegpipe",
                    "-i", source, "-map", "0:v:0", "-fps_mode", "passthrough", *self._encoder_args(quality),
                    *self._colour_args(clip), "-f", self.stream_format, out]
            run_tool(argv, f"{self.label} encode")
            with open(out, "rb") as f:
                return f.read()

    def decode(self, data: bytes, clip: Clip) -> Clip:
        """Decode a stream made from `clip` back to a clip of its size, frame count and rate."""
        self.check()
        with tempfile.TemporaryDirectory(prefix="vov-bench-") as tmp:
            src, dst = os.path.join(tmp, "in.bin"), os.path.join(tmp, "out.y4m")
            with open(src, "wb") as f:
                f.write(data)
            pix_fmt = "yuv420p" if self.bits == 8 else f"yuv420p{self.bits}le"
            run_tool([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", self.stream_format,
                  "-i", src, "-map", "0:v:0", "-fps_mode", "passthrough", "-pix_fmt", pix_fmt, "-strict", "-1",
                  "-f", "yuv4mpegpipe", dst], f"{self.label} decode")
            try:
                decoded = read_y4m(dst, matrix=clip.matrix, range=clip.range)
            except MediaError as e:
                raise CodecFailed(f"{self.label} decode: unreadable output ({e})") from None
        if decoded.num_frames != clip.num_frames:
            raise CodecFailed(f"{self.label} decoded {decoded.num_frames} frames, not {clip.num_frames}")
        frames = crop_frames(decoded.frames, clip.height, clip.width)
        return Clip(np.ascontiguousarray(frames), clip.fps, clip.matrix, clip.range, "420", self.bits,
                    container=self.name)

    def first_frame_seconds(self, data: bytes) -> float:
        """Seconds from starting ffmpeg on `data` until its first whole decoded frame has arrived in a pipe."""
        with tempfile.TemporaryDirectory(prefix="vov-bench-") as tmp:
            src = os.path.join(tmp, "in.bin")
            with open(src, "wb") as f:
                f.write(data)
            pix_fmt = "yuv420p" if self.bits == 8 else f"yuv420p{self.bits}le"
            argv = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-f", self.stream_format, "-i", src,
                    "-map", "0:v:0", "-fps_mode", "passthrough", "-pix_fmt", pix_fmt, "-strict", "-1",
                    "-f", "yuv4mpegpipe", "pipe:1"]
            start = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            try:
                header = proc.stdout.readline()
                tokens = header.split()
                if not header.startswith(b"YUV4MPEG2"):
                    raise CodecFailed(f"{self.label} decode: no Y4M stream from ffmpeg")
                width = int(next(t[1:] for t in tokens if t.startswith(b"W")))
                height = int(next(t[1:] for t in tokens if t.startswith(b"H")))
                sample = 1 if self.bits == 8 else 2
                frame_bytes = sample * (width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2))
                if not proc.stdout.readline().startswith(b"FRAME"):
                    raise CodecFailed(f"{self.label} decode: no frame from ffmpeg")
                got = 0
                while got < frame_bytes:
                    chunk = proc.stdout.read(frame_bytes - got)
                    if not chunk:
                        raise CodecFailed(f"{self.label} decode: the first frame ended early")
                    got += len(chunk)
                seconds = time.perf_counter() - start
                while proc.stdout.read(1 << 20):  # let it finish the stream
                    pass
            finally:
                proc.stdout.close()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        return seconds


class X264(VideoCodec):
    name, label, encoder, stream_format = "x264", "H.264 (x264)", "libx264", "h264"
    description = "H.264 (ffmpeg libx264, preset medium), yuv420p 8-bit; quality = CRF (lower is better)"

    def _encoder_args(self, quality):
        return ["-c:v", "libx264", "-preset", "medium", "-crf", str(int(quality)), "-pix_fmt", "yuv420p",
                "-bsf:v", "filter_units=remove_types=6"]


class X265(VideoCodec):
    name, label, encoder, stream_format = "x265", "HEVC (x265)", "libx265", "hevc"
    description = "HEVC (ffmpeg libx265, preset medium), yuv420p 8-bit; quality = CRF (lower is better)"

    def _encoder_args(self, quality):
        return ["-c:v", "libx265", "-preset", "medium", "-crf", str(int(quality)), "-pix_fmt", "yuv420p",
                "-x265-params", "log-level=error:info=0"]


class SVTAV1(VideoCodec):
    name, label, encoder, stream_format = "svt-av1", "AV1 (SVT-AV1)", "libsvtav1", "obu"
    qmin, qmax = 1, 63
    description = "AV1 (ffmpeg libsvtav1, preset 8), yuv420p 8-bit; quality = CRF (lower is better)"

    def _encoder_args(self, quality):
        return ["-c:v", "libsvtav1", "-preset", "8", "-crf", str(int(quality)), "-pix_fmt", "yuv420p",
                "-svtav1-params", "log-level=1"]


class AOMAV1(VideoCodec):
    name, label, encoder, stream_format = "aom-av1", "AV1 (libaom)", "libaom-av1", "obu"
    qmin, qmax = 0, 63
    description = "AV1 (ffmpeg libaom-av1, cpu-used 6, constant quality), yuv420p 8-bit; quality = CRF"

    def _encoder_args(self, quality):
        return ["-c:v", "libaom-av1", "-cpu-used", "6", "-row-mt", "1", "-crf", str(int(quality)), "-b:v", "0",
                "-pix_fmt", "yuv420p"]


class VVC(VideoCodec):
    name, label, encoder, stream_format = "vvc", "VVC (VVenC)", "libvvenc", "vvc"
    qmin, qmax = 0, 63
    bits = 10
    multiple = 8
    description = "VVC (ffmpeg libvvenc, preset faster), yuv420p 10-bit; quality = QP (lower is better)"

    def params(self, quality: int) -> dict:
        return {"qp": quality}

    def _encoder_args(self, quality):
        return ["-c:v", "libvvenc", "-preset", "faster", "-qp", str(int(quality)), "-pix_fmt", "yuv420p10le"]


REGISTRY: dict[str, type[VideoCodec]] = {c.name: c for c in (X264, X265, SVTAV1, AOMAV1, VVC)}


def get(name: str) -> VideoCodec:
    try:
        return REGISTRY[name]()
    except KeyError:
        raise UsageError(f"unknown video codec {name!r}; known: {', '.join(REGISTRY)}") from None


def availability() -> dict[str, str | None]:
    """Each codec's name -> None when it can run here, else the reason it cannot."""
    out: dict[str, str | None] = {}
    for name in REGISTRY:
        try:
            get(name).check()
            out[name] = None
        except ToolMissing as e:
            out[name] = str(e)
    return out


def measure(reference: Clip, decoded: Clip) -> dict:
    """PSNR (RGB, 8-bit) and MS-SSIM (RGB) of each frame, and their means over the frames."""
    from vov.bench import metrics

    if decoded.frames.shape != reference.frames.shape:
        raise UsageError(f"clips differ in shape: {reference.frames.shape} and {decoded.frames.shape}")
    ref, out = reference.to_uint8(), decoded.to_uint8()
    psnr = [metrics.psnr(a, b) for a, b in zip(ref, out)]
    ms_ssim = [metrics.ms_ssim(a, b) for a, b in zip(ref, out)]
    return {"psnr-rgb": float(np.mean(psnr)), "ms-ssim": float(np.mean(ms_ssim)),
            "psnr-rgb-frames": psnr, "ms-ssim-frames": ms_ssim}


@dataclass
class VideoPoint:
    """One codec at one rate on one clip."""

    codec: str
    quality: int
    params: dict
    target_bpp: float
    reached: bool  # False when the codec's range ends more than 10% away from the target
    bytes: int
    bpp: float
    encode_s: float
    decode_s: float
    metrics: dict
    tried: dict[int, int] = field(default_factory=dict, repr=False)  # quality -> bytes, every setting tried
    decoded: Clip | None = field(default=None, repr=False)

    def record(self) -> dict:
        """A JSON-ready summary (the per-frame metric lists included)."""
        return {"codec": self.codec, "quality": self.quality, "params": self.params, "target_bpp": self.target_bpp,
                "reached": self.reached, "bytes": self.bytes, "bpp": self.bpp, "encode_s": self.encode_s,
                "decode_s": self.decode_s, "metrics": self.metrics}


def run_point(codec: VideoCodec | str, clip: Clip, target_bpp: float,
              sizes: dict[int, int] | None = None) -> VideoPoint:
    """Find the setting whose stream lands nearest `target_bpp`, then decode and measure it.

    `sizes` (quality -> bytes of earlier trials on this clip, e.g. from a cache) is used and filled.
    """
    codec = get(codec) if isinstance(codec, str) else codec
    codec.check()
    if not (target_bpp > 0 and math.isfinite(target_bpp)):
        raise UsageError("the target rate must be a positive number of bits per pixel")
    sizes = {} if sizes is None else sizes
    made: dict[int, tuple[bytes, float]] = {}
    with tempfile.TemporaryDirectory(prefix="vov-bench-") as tmp:
        source = os.path.join(tmp, "source.y4m")
        codec.source_y4m(clip, source)

        def size_at(quality: int) -> int:
            if quality not in sizes:
                start = time.perf_counter()
                data = codec.encode(clip, quality, source=source)
                made[quality] = (data, time.perf_counter() - start)
                sizes[quality] = len(data)
            return sizes[quality]

        quality, reached = search_quality(size_at, codec, target_bpp, clip.pixels)
        if quality not in made:
            start = time.perf_counter()
            made[quality] = (codec.encode(clip, quality, source=source), time.perf_counter() - start)
    data, encode_s = made[quality]
    start = time.perf_counter()
    decoded = codec.decode(data, clip)
    decode_s = time.perf_counter() - start
    return VideoPoint(codec.name, quality, codec.params(quality), target_bpp, reached, len(data),
                      8 * len(data) / clip.pixels, encode_s, decode_s, measure(clip, decoded), dict(sizes), decoded)
