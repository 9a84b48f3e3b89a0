"""Reading and writing the clips people have: one entry for every kind of file, chosen by content or target.

Accepted (each format in its own module):
- Y4M (`vov.media.y4m`): 4:2:0, 4:2:2, 4:4:4 and mono, 8 to 16 bits, read and written byte-exactly.
- MP4, MOV, MKV, WebM (and AVI, MPEG-TS, IVF, Ogg) through PyAV (`vov.media.pyav`).
- Folders of numbered PNG frames (`vov.media.png_frames`), at `fps` (default `DEFAULT_FPS`).

A `Clip` (`vov.media.clip`) holds float32 RGB frames, the exact rate and what the source was;
colour conversion is `vov.media.colour`, the bounds `vov.media.bounds` (checked from headers before
any frame is allocated), writers stream (`vov.media.writer`). Every failure is a one-line
`MediaError`.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterable

from vov.errors import MediaError
from vov.media.bounds import DEFAULT_FPS, VideoLimits
from vov.media.clip import Clip
from vov.media.image import Picture, load_image
from vov.media.png_frames import PNGFramesWriter, read_png_frames
from vov.media.pyav import VIDEO_CONTAINER_SUFFIXES, AVWriter, read_av
from vov.media.writer import VideoWriter
from vov.media.y4m import Y4M_MAGIC, Y4MWriter, read_y4m


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
