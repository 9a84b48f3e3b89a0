"""The .vov container: a declared list of fields, then the coded sections, then a CRC-32.

docs/format.md is the normative description; `HEADER_FIELDS` below is the same list in code. Every
read checks the bytes that remain before it allocates, and every field is range-checked, so a
truncated, corrupted or hostile file ends in `BitstreamError`, never a crash, a hang or a large
allocation.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field, fields

from vov.errors import BitstreamError

MAGIC = b"\x89VOV"
MAJOR, MINOR = 1, 0
ADAPTER_KINDS = ("one-vector", "lora")
MAX_SIDE = 16384
MAX_FRAMES = 10000
MAX_D = 1 << 22
MAX_CAPTION = 16384
MAX_THETA = 256.0  # |theta_hat| = qmax * step_size is at most this: larger vectors are not adaptations


class Reader:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise BitstreamError(f"file ends inside {what} (truncated?)")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def varint(self, what: str) -> int:
        value = shift = 0
        for _ in range(5):
            byte = self.take(1, what)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
        raise BitstreamError(f"{what}: varint longer than 5 bytes")


def varint(value: int) -> bytes:
    if value < 0 or value >= 1 << 35:
        raise ValueError("varint out of range")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


# ---- field types: (write(value) -> bytes, read(reader, name) -> value) ----

def _fixed(fmt: str):
    size = struct.calcsize(fmt)
    return (lambda v: struct.pack(fmt, v), lambda r, n: struct.unpack(fmt, r.take(size, n))[0])


def _text(limit: int):
    def write(v: str) -> bytes:
        raw = v.encode("utf-8")
        return varint(len(raw)) + raw

    def read(r: Reader, n: str) -> str:
        length = r.varint(n)
        if length > limit:
            raise BitstreamError(f"{n}: {length} bytes declared, at most {limit} allowed")
        try:
            return r.take(length, n).decode("utf-8")
        except UnicodeDecodeError:
            raise BitstreamError(f"{n}: not UTF-8") from None

    return write, read


def _small_ints(signed: bool):
    fmt = "b" if signed else "B"

    def write(v: tuple[int, ...]) -> bytes:
        return bytes([len(v)]) + struct.pack(f"<{len(v)}{fmt}", *v)

    def read(r: Reader, n: str) -> tuple[int, ...]:
        count = r.take(1, n)[0]
        return struct.unpack(f"<{count}{fmt}", r.take(count, n))

    return write, read


def _blob(limit: int):
    def write(v: bytes) -> bytes:
        return varint(len(v)) + v

    def read(r: Reader, n: str) -> bytes:
        length = r.varint(n)
        if length > limit:
            raise BitstreamError(f"{n}: {length} bytes declared, at most {limit} allowed")
        return r.take(length, n)

    return write, read


U8, U16, U32, F32 = _fixed("<B"), _fixed("<H"), _fixed("<I"), _fixed("<f")
HASH = (lambda v: bytes(v), lambda r, n: r.take(8, n))
VARINT = (varint, lambda r, n: r.varint(n))

# (name, type, part, (min, max) or None): `part` groups the bytes for `vov info`
HEADER_FIELDS = [
    ("backbone", _text(64), "header", None),
    ("backbone_hash", HASH, "header", None),
    ("adapter_kind", U8, "header", (0, len(ADAPTER_KINDS) - 1)),
    ("rank", U8, "header", (1, 64)),
    ("d", VARINT, "header", (1, MAX_D)),
    ("adapter_seed", VARINT, "header", (0, (1 << 32) - 1)),
    ("targets", _text(512), "header", None),
    ("sampler_steps", U16, "header", (1, 10000)),
    ("noise_seed", VARINT, "header", (0, (1 << 32) - 1)),
    ("schedule", U8, "header", (0, 0)),
    ("guidance", F32, "header", None),
    ("frames", VARINT, "header", (1, MAX_FRAMES)),
    ("height", VARINT, "header", (1, MAX_SIDE)),
    ("width", VARINT, "header", (1, MAX_SIDE)),
    ("fps_num", VARINT, "header", (0, 1 << 20)),
    ("fps_den", VARINT, "header", (1, 1 << 20)),
    ("colour", U8, "header", (0, 1)),  # 0 RGB, 1 grey
    ("caption_z", _blob(4096), "header", None),
    ("step_size", F32, "prior", None),
    ("prior_weights", _small_ints(False), "prior", None),
    ("prior_scale_codes", _small_ints(True), "prior", None),
    ("qmax", VARINT, "prior", (0, 1 << 15)),
    ("search_bits", U8, "search", (0, 16)),  # log2 of best-of-N candidates per step; 0 = none
]
SECTIONS = [("payload", "payload"), ("search", "search")]


@dataclass
class VovFile:
    backbone: str
    backbone_hash: bytes
    adapter_kind: int
    rank: int
    d: int
    adapter_seed: int
    targets: str
    sampler_steps: int
    noise_seed: int
    frames: int
    height: int
    width: int
    step_size: float
    prior_weights: tuple[int, ...]
    prior_scale_codes: tuple[int, ...]
    qmax: int
    payload: bytes
    schedule: int = 0
    guidance: float = 0.0
    fps_num: int = 0
    fps_den: int = 1
    colour: int = 0
    caption_z: bytes = b""
    search_bits: int = 0
    search: bytes = b""
    version: tuple[int, int] = field(default=(MAJOR, MINOR))

    @property
    def caption(self) -> str:
        if not self.caption_z:
            return ""
        d = zlib.decompressobj()
        try:
            raw = d.decompress(self.caption_z, MAX_CAPTION)
        except zlib.error:
            raise BitstreamError("caption: corrupt") from None
        if d.unconsumed_tail:
            raise BitstreamError(f"caption: longer than {MAX_CAPTION} bytes")
        return raw.decode("utf-8", errors="replace")

    @staticmethod
    def pack_caption(caption: str) -> bytes:
        return zlib.compress(caption.encode("utf-8"), 9) if caption else b""

    @property
    def adapter_name(self) -> str:
        return ADAPTER_KINDS[self.adapter_kind]

    @property
    def pixels(self) -> int:
        return self.frames * self.height * self.width


def _check_range(name: str, value, bounds) -> None:
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise BitstreamError(f"{name} = {value} is outside [{bounds[0]}, {bounds[1]}]")


def dump(f: VovFile) -> bytes:
    return b"".join(data for _, data in dump_parts(f))


def dump_parts(f: VovFile) -> list[tuple[str, bytes]]:
    """The file as (part, bytes) pieces, in order: what `vov info` adds up."""
    parts = [("header", MAGIC + bytes([MAJOR, MINOR]))]
    for name, (write, _), part, bounds in HEADER_FIELDS:
        value = getattr(f, name)
        _check_range(name, value, bounds)
        parts.append((part, write(value)))
    for name, part in SECTIONS:
        data = getattr(f, name)
        parts.append((part, varint(len(data)) + data))
    body = b"".join(p for _, p in parts)
    parts.append(("checksum", struct.pack("<I", zlib.crc32(body))))
    return parts


def part_sizes(f: VovFile) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for part, data in dump_parts(f):
        sizes[part] = sizes.get(part, 0) + len(data)
    return sizes


def load(data: bytes) -> VovFile:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError("not bytes")
    data = bytes(data)
    if len(data) < len(MAGIC) + 6:
        raise BitstreamError("too short to be a .vov file")
    if data[:4] != MAGIC:
        raise BitstreamError("not a .vov file (bad magic)")
    major, minor = data[4], data[5]
    if major != MAJOR:
        raise BitstreamError(f"format version {major}.{minor} is not supported by this decoder (reads {MAJOR}.x)")
    (crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != crc:
        raise BitstreamError("checksum mismatch: the file is corrupted")
    r = Reader(data[:-4])
    r.pos = 6
    values = {}
    for name, (_, read), _, bounds in HEADER_FIELDS:
        value = read(r, name)
        _check_range(name, value, bounds)
        values[name] = value
    for name, _ in SECTIONS:
        values[name] = _blob(len(data))[1](r, name)
    if r.pos != len(r.data):
        raise BitstreamError(f"{len(r.data) - r.pos} unexpected bytes after the last section")
    for name in ("step_size", "guidance"):
        if values[name] != values[name] or abs(values[name]) == float("inf"):
            raise BitstreamError(f"{name} is not a finite number")
    if values["step_size"] <= 0:
        raise BitstreamError("step_size must be positive")
    if values["qmax"] * values["step_size"] > MAX_THETA:
        raise BitstreamError(f"quantiser: qmax x step_size = {values['qmax'] * values['step_size']:.3g} "
                             f"exceeds {MAX_THETA:g}, the largest vector entry a file may hold")
    if len(values["prior_weights"]) != len(values["prior_scale_codes"]):
        raise BitstreamError("prior: weights and scales differ in count")
    known = {f.name for f in fields(VovFile)}
    f = VovFile(**{k: v for k, v in values.items() if k in known}, version=(major, minor))
    _ = f.caption  # a corrupt caption is refused now, not when someone reads it
    return f
