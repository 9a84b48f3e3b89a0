"""Classical image codecs that the benchmark runs beside vov; their quality knob, its search and
the tool errors are `baselines`'.

Each codec is a class with `encode(img, quality) -> bytes` and `decode(data, size) -> img`, where
`img` is uint8 RGB (height, width, 3) and `size` is (width, height) of the original (used only to
crop padding).

Colour handling:
- JPEG: Pillow (libjpeg), JFIF full-range YCbCr, 4:2:0, optimised Huffman tables.
- WebP: cwebp/dwebp (lossy VP8), which is always limited-range 4:2:0; -m 6.
- AVIF: avifenc/avifdec (libaom), 4:2:0, full range, constant quantizer (--min = --max = Q), speed 6.
- JPEG XL: cjxl/djxl, VarDCT at the given distance (quality here is distance x 10), effort 7.
- HEVC intra: ffmpeg + libx265, one intra frame, 8-bit 4:2:0 (yuv420p), BT.709 matrix in FULL
  range: swscale converts RGB to full-range YCbCr, the stream signals it (VUI range=full), and the
  decoder converts back with the same matrix and range, so no level shift is introduced. x265's
  informational SEI (its settings as text) is turned off so it does not count as rate. Odd sides
  are padded by edge replication to even and cropped after decoding.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from vov.bench.baselines import Baseline, ToolMissing, run_tool, tool_version
from vov.errors import UsageError


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _read_png(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


class Codec(Baseline):
    tools: tuple[str, ...] = ()
    package: str = ""  # the Debian package that provides the tools

    def check(self) -> None:
        """Raise ToolMissing, naming the Debian package, when a needed program is absent."""
        missing = [t for t in self.tools if shutil.which(t) is None]
        if missing:
            raise ToolMissing(f"{self.label} needs {', '.join(missing)}: install the Debian package {self.package} "
                              f"(apt-get install {self.package}) or leave {self.name} out of --codecs")

    def encode(self, img: np.ndarray, quality: int) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
        raise NotImplementedError


class JPEG(Codec):
    name, label, package = "jpeg", "JPEG", "python3-pil (Pillow)"
    qmin, qmax = 1, 95
    description = "JPEG (Pillow/libjpeg), 4:2:0, optimised Huffman tables; quality = Pillow quality"

    @functools.cached_property
    def version(self) -> str:
        import PIL

        return f"pillow {PIL.__version__}"

    def encode(self, img: np.ndarray, quality: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(quality), optimize=True, subsampling="4:2:0")
        return buf.getvalue()

    def decode(self, data: bytes, size=None) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


class _FileCodec(Codec):
    """A codec driven through files in a temporary folder."""

    suffix = ""

    def _encode_argv(self, src: str, dst: str, quality: int) -> list[str]:
        raise NotImplementedError

    def _decode_argv(self, src: str, dst: str) -> list[str]:
        raise NotImplementedError

    def encode(self, img: np.ndarray, quality: int) -> bytes:
        self.check()
        with tempfile.TemporaryDirectory(prefix="vov-bench-") as tmp:
            src, dst = os.path.join(tmp, "in.png"), os.path.join(tmp, "out" + self.suffix)
            with open(src, "wb") as f:
                f.write(_png(self._prepare(img)))
            run_tool(self._encode_argv(src, dst, quality), f"{self.label} encode")
            with open(dst, "rb") as f:
                return f.read()

    def decode(self, data: bytes, size=None) -> np.ndarray:
        self.check()
        with tempfile.TemporaryDirectory(prefix="vov-bench-") as tmp:
            src, dst = os.path.join(tmp, "in" + self.suffix), os.path.join(tmp, "out.png")
            with open(src, "wb") as f:
                f.write(data)
            run_tool(self._decode_argv(src, dst), f"{self.label} decode")
            out = _read_png(dst)
        if size is not None:
            out = out[: size[1], : size[0]]
        return out

    def _prepare(self, img: np.ndarray) -> np.ndarray:
        return img


class WebP(_FileCodec):
    name, label, package = "webp", "WebP", "webp"
    tools = ("cwebp", "dwebp")
    suffix = ".webp"
    qmin, qmax = 0, 100
    description = "WebP lossy (cwebp -m 6), 4:2:0 limited range; quality = cwebp -q"

    @functools.cached_property
    def version(self) -> str:
        return "cwebp " + tool_version(["cwebp", "-version"])

    def _encode_argv(self, src, dst, quality):
        return ["cwebp", "-quiet", "-m", "6", "-q", str(int(quality)), "-metadata", "none", src, "-o", dst]

    def _decode_argv(self, src, dst):
        return ["dwebp", "-quiet", src, "-o", dst]


class AVIF(_FileCodec):
    name, label, package = "avif", "AVIF", "libavif-bin"
    tools = ("avifenc", "avifdec")
    suffix = ".avif"
    qmin, qmax = 0, 63
    higher_is_larger = False
    description = "AVIF (avifenc/libaom, speed 6), 4:2:0 full range, constant quantizer; quality = Q (0-63, lower is better)"

    @functools.cached_property
    def version(self) -> str:
        return "avifenc " + tool_version(["avifenc", "--version"])

    def _encode_argv(self, src, dst, quality):
        q = str(int(quality))
        return ["avifenc", "--codec", "aom", "-s", "6", "-j", "1", "-y", "420", "-r", "full", "--min", q, "--max", q,
                "--ignore-exif", "--ignore-xmp", "--ignore-icc", src, dst]

    def _decode_argv(self, src, dst):
        return ["avifdec", "-d", "8", src, dst]


class JXL(_FileCodec):
    name, label, package = "jxl", "JPEG XL", "libjxl-tools"
    tools = ("cjxl", "djxl")
    suffix = ".jxl"
    qmin, qmax = 1, 250  # distance x 10: 0.1 ... 25
    higher_is_larger = False
    description = "JPEG XL (cjxl, VarDCT, effort 7); quality = 10 x butteraugli distance (lower is better)"

    @functools.cached_property
    def version(self) -> str:
        return "cjxl " + tool_version(["cjxl", "--version"])

    def params(self, quality: int) -> dict:
        return {"distance": quality / 10}

    def _encode_argv(self, src, dst, quality):
        return ["cjxl", "--quiet", "-e", "7", "-d", f"{quality / 10:.1f}", src, dst]

    def _decode_argv(self, src, dst):
        return ["djxl", "--quiet", src, dst]


class HEVC(_FileCodec):
    name, label, package = "x265", "HEVC (x265)", "ffmpeg"
    tools = ("ffmpeg",)
    suffix = ".hevc"
    qmin, qmax = 0, 51
    higher_is_larger = False
    description = ("HEVC intra (ffmpeg libx265, preset medium), one frame, yuv420p 8-bit BT.709 full range; "
                   "quality = x265 QP (lower is better)")

    @functools.cached_property
    def version(self) -> str:
        return tool_version(["ffmpeg", "-version"])

    def params(self, quality: int) -> dict:
        return {"qp": quality}

    def _prepare(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        return np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")

    def _encode_argv(self, src, dst, quality):
        x265 = f"qp={int(quality)}:keyint=1:info=0:range=full:colorprim=bt709:transfer=bt709:colormatrix=bt709:log-level=error"
        return ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", src,
                "-vf", "scale=out_color_matrix=bt709:out_range=full:flags=bicubic+accurate_rnd+full_chroma_int,format=yuv420p",
                "-color_range", "pc", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
                "-frames:v", "1", "-c:v", "libx265", "-preset", "medium", "-x265-params", x265, "-f", "hevc", dst]

    def _decode_argv(self, src, dst):
        return ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "hevc", "-i", src,
                "-vf", "scale=in_color_matrix=bt709:in_range=full:flags=bicubic+accurate_rnd+full_chroma_int,format=rgb24",
                "-frames:v", "1", "-update", "1", dst]


REGISTRY: dict[str, type[Codec]] = {c.name: c for c in (JPEG, WebP, AVIF, JXL, HEVC)}


def get(name: str) -> Codec:
    try:
        return REGISTRY[name]()
    except KeyError:
        raise UsageError(f"unknown codec {name!r}; known: vov, {', '.join(REGISTRY)}") from None
