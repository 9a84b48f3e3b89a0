"""The two file formats some sources keep their photos in, read defensively.

- Qt resource bundles (`.rcc`): the magic `qres`, a format version, then the offsets of three tables
  (a tree of nodes, the data, the names; big-endian u32). A name is a u16 length, a u32 hash and
  UTF-16BE characters. A node is 14 bytes (version 1) or 22 (versions 2 and 3: an 8-byte
  modification time follows): the name's offset, u16 flags (1: zlib-compressed, 2: a directory,
  4: zstd), then for a directory the child count and the first child's index, for a file the locale
  (two u16) and the data's offset. Data is a u32 length and the bytes; compressed data begins with
  the u32 size it expands to.
- Enlightenment theme files (`.edj`): a background holds its picture as several JPEG streams of
  different sizes; the largest that decodes is the photo.

Every offset, count and size is checked against the file before it is used; anything else is a
UsageError.
"""

from __future__ import annotations

import io
import struct
import zlib

from vov.errors import UsageError

MAX_MEMBER_BYTES = 64 << 20
MAX_NODES = 200_000
MAX_DEPTH = 32


def _u32(blob: bytes, at: int) -> int:
    if not 0 <= at <= len(blob) - 4:
        raise UsageError("rcc: an offset points outside the file")
    return struct.unpack_from(">I", blob, at)[0]


def _u16(blob: bytes, at: int) -> int:
    if not 0 <= at <= len(blob) - 2:
        raise UsageError("rcc: an offset points outside the file")
    return struct.unpack_from(">H", blob, at)[0]


def rcc_member(blob: bytes, member: str) -> bytes:
    """The bytes of `member` (a path such as "a/b/c.webp") inside a Qt resource bundle."""
    if blob[:4] != b"qres":
        raise UsageError("rcc: not a Qt resource bundle")
    version, tree, data, names = (_u32(blob, 4 + 4 * i) for i in range(4))
    if version not in (1, 2, 3):
        raise UsageError(f"rcc: format version {version} is not known")
    node_size = 14 if version == 1 else 22

    def name_of(offset: int) -> str:
        at = names + offset
        length = _u16(blob, at)
        end = at + 6 + 2 * length
        if end > len(blob):
            raise UsageError("rcc: a name runs past the end of the file")
        return blob[at + 6:end].decode("utf-16-be", errors="replace")

    def node(index: int) -> int:
        if not 0 <= index < MAX_NODES:
            raise UsageError("rcc: a node index is out of range")
        return tree + index * node_size

    index = 0
    parts = [p for p in member.split("/") if p]
    if not parts or len(parts) > MAX_DEPTH:
        raise UsageError("rcc: an empty or too deep member path")
    for depth, part in enumerate(parts):
        at = node(index)
        if not _u16(blob, at + 4) & 2:
            raise UsageError(f"rcc: {'/'.join(parts[:depth])} is not a directory")
        count, first = _u32(blob, at + 6), _u32(blob, at + 10)
        if count > MAX_NODES:
            raise UsageError("rcc: a directory with too many children")
        for child in range(first, first + count):
            if name_of(_u32(blob, node(child))) == part:
                index = child
                break
        else:
            raise UsageError(f"rcc: no member {member}")
    at = node(index)
    flags = _u16(blob, at + 4)
    if flags & 2:
        raise UsageError(f"rcc: {member} is a directory")
    start = data + _u32(blob, at + 10)
    length = _u32(blob, start)
    if length > MAX_MEMBER_BYTES or start + 4 + length > len(blob):
        raise UsageError(f"rcc: {member} runs past the end of the file")
    raw = blob[start + 4:start + 4 + length]
    if flags & 4:
        raise UsageError(f"rcc: {member} is zstd-compressed, which this reader does not take")
    if flags & 1:
        expected = _u32(raw, 0)
        if expected > MAX_MEMBER_BYTES:
            raise UsageError(f"rcc: {member} expands past {MAX_MEMBER_BYTES} bytes")
        inflater = zlib.decompressobj()
        raw = inflater.decompress(raw[4:], MAX_MEMBER_BYTES)
        if len(raw) != expected:
            raise UsageError(f"rcc: {member} does not expand to its declared size")
    return raw


def largest_jpeg(blob: bytes, max_streams: int = 64) -> bytes:
    """The JPEG stream of largest area inside `blob` (an Enlightenment theme file)."""
    from PIL import Image

    starts, at = [], blob.find(b"\xff\xd8\xff")
    while at >= 0 and len(starts) < max_streams:
        starts.append(at)
        at = blob.find(b"\xff\xd8\xff", at + 3)
    best, best_area = None, 0
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(blob)
        try:
            with Image.open(io.BytesIO(blob[start:end])) as img:
                if img.format != "JPEG":
                    continue
                area = img.size[0] * img.size[1]
        except Exception:  # a marker inside other data: not a picture
            continue
        if area > best_area:
            best, best_area = blob[start:end], area
    if best is None:
        raise UsageError("edj: no JPEG inside")
    return best
