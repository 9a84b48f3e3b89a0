"""The .vov container: a declared list of fields, a table of segments (one per clip), a CRC-32.

docs/format.md is the normative description; `HEADER_FIELDS` and `SEGMENT_FIELDS` below are its
tables in code (and `V1_HEADER_FIELDS` the layout of format 1.0, which this module still reads).
Every read checks the bytes that remain before it allocates, and every field is range-checked, so
a truncated, corrupted or hostile file ends in `BitstreamError`, never a crash, a hang or a large
allocation.

Format 2.0 holds an image (one frame, one segment) or a video cut into clips of `clip_frames`
frames (the last may be shorter), each clip one segment with its own coded vector, prior and
best-of-N indices, so each clip decodes on its own. File-level fields (the backbone, the adapter's
hash, the sampler, the media's size and rate, the caption) are shared by every clip.

Format 2.1 adds the tile grid of best-of-N per tile (`search_tile`, `tile_rows`, `tile_cols`: a
tile's side in latent cells and the grid it makes on the clip's latent), so a clip's search
section holds `sde_steps x tile_rows x tile_cols` indices. A file without tiles is written as 2.0,
byte for byte what earlier versions wrote.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field

from vov.errors import BitstreamError

MAGIC = b"\x89VOV"
MAJOR, MINOR = 2, 1
READS = (1, 2)  # the major versions this decoder reads
MINORS = {1: 0, 2: 1}  # the newest minor version of each major that this decoder reads
ADAPTER_KINDS = ("one-vector", "lora")
SAMPLERS = ("ode", "sde")  # 0: Euler steps of the flow ODE; 1: SDE steps, the chosen best-of-N noise replayed
MAX_SIDE = 16384
MAX_FRAMES = 10000
MAX_D = 1 << 22
MAX_RANK = 64
MAX_CAPTION = 16384
MAX_THETA = 256.0  # |theta_hat| = qmax * step_size is at most this: larger vectors are not adaptations
MAX_SHIFT = 64.0
MAX_SEARCH_BITS = 16
# the best-of-N fields of a file whose decode is the plain ODE (sampler 0): the format fixes them
ODE_FIELDS = {"sampler": 0, "search_bits": 0, "sde_start": 0, "sde_steps": 0, "g_kind": 0, "g_cap": 1.0,
              "search_tile": 0, "tile_rows": 1, "tile_cols": 1}
# best-of-N with one index a step (format 2.0): no tile grid
UNTILED = {"search_tile": 0, "tile_rows": 1, "tile_cols": 1}
MAX_TILES = 256


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

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos


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
SEED = (0, (1 << 32) - 1)

# (name, type, part, (min, max) or None): `part` groups the bytes for `vov info`
HEADER_FIELDS = [
    ("backbone", _text(64), "header", None),
    ("backbone_hash", HASH, "header", None),
    ("adapter_kind", U8, "header", (0, len(ADAPTER_KINDS) - 1)),
    ("rank", U8, "header", (1, MAX_RANK)),
    ("d", VARINT, "header", (1, MAX_D)),
    ("adapter_seed", VARINT, "header", SEED),
    ("targets", _text(512), "header", None),
    ("sampler_steps", U16, "header", (1, 10000)),
    ("noise_seed", VARINT, "header", SEED),
    ("schedule", U8, "header", (0, 1)),  # 0 uniform, 1 flow-shifted (vov.backbones.schedule.Schedule)
    ("shift", F32, "header", None),
    ("guidance", F32, "header", None),
    ("sampler", U8, "header", (0, len(SAMPLERS) - 1)),
    ("search_bits", U8, "search", (0, MAX_SEARCH_BITS)),  # log2 of best-of-N candidates; 0: one (plain SDE)
    ("sde_start", U16, "search", (0, 9999)),
    ("sde_steps", U16, "search", (0, 9999)),
    ("g_kind", U8, "search", (0, 1)),
    ("g_cap", F32, "search", None),
    ("frames", VARINT, "header", (1, MAX_FRAMES)),
    ("height", VARINT, "header", (1, MAX_SIDE)),
    ("width", VARINT, "header", (1, MAX_SIDE)),
    ("fps_num", VARINT, "header", (0, 1 << 20)),
    ("fps_den", VARINT, "header", (1, 1 << 20)),
    ("colour", U8, "header", (0, 1)),  # 0 RGB, 1 grey
    ("caption_z", _blob(4096), "header", None),
    ("clip_frames", VARINT, "header", (1, MAX_FRAMES)),
]
# format 2.1: the tile grid of best-of-N per tile, after the other search fields
_TILE_FIELDS = [
    ("search_tile", U8, "search", (1, 255)),
    ("tile_rows", U8, "search", (1, 255)),
    ("tile_cols", U8, "search", (1, 255)),
]
_AFTER_G_CAP = [name for name, *_ in HEADER_FIELDS].index("g_cap") + 1
HEADER_FIELDS_2_1 = HEADER_FIELDS[:_AFTER_G_CAP] + _TILE_FIELDS + HEADER_FIELDS[_AFTER_G_CAP:]
SEGMENT_FIELDS = [
    ("frames", VARINT, "header", (1, MAX_FRAMES)),
    ("step_size", F32, "prior", None),
    ("prior_weights", _small_ints(False), "prior", None),
    ("prior_scale_codes", _small_ints(True), "prior", None),
    ("qmax", VARINT, "prior", (0, 1 << 15)),
]
SEGMENT_SECTIONS = [("payload", "payload"), ("search", "search")]

# format 1.0: one image, every field in one list (read only)
V1_HEADER_FIELDS = [
    *HEADER_FIELDS[:10],
    ("guidance", F32, "header", None),
    ("frames", VARINT, "header", (1, MAX_FRAMES)),
    ("height", VARINT, "header", (1, MAX_SIDE)),
    ("width", VARINT, "header", (1, MAX_SIDE)),
    ("fps_num", VARINT, "header", (0, 1 << 20)),
    ("fps_den", VARINT, "header", (1, 1 << 20)),
    ("colour", U8, "header", (0, 1)),
    ("caption_z", _blob(4096), "header", None),
    *SEGMENT_FIELDS[1:],
    ("search_bits", U8, "search", (0, 16)),
]
V1_SECTIONS = [("payload", "payload"), ("search", "search")]


@dataclass
class Segment:
    """One clip's coded vector: its quantiser, prior and ANS payload, and its best-of-N indices."""

    frames: int
    step_size: float
    prior_weights: tuple[int, ...]
    prior_scale_codes: tuple[int, ...]
    qmax: int
    payload: bytes
    search: bytes = b""


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
    segments: list[Segment]
    schedule: int = 0
    shift: float = 1.0
    guidance: float = 0.0
    sampler: int = 0
    search_bits: int = 0
    sde_start: int = 0
    sde_steps: int = 0
    g_kind: int = 0
    g_cap: float = 1.0
    search_tile: int = 0  # 0: one index a step (format 2.0); else a tile's side in latent cells (2.1)
    tile_rows: int = 1
    tile_cols: int = 1
    fps_num: int = 0
    fps_den: int = 1
    colour: int = 0
    caption_z: bytes = b""
    clip_frames: int = 1
    version: tuple[int, int] = field(default=(MAJOR, 0))  # what `load` read; `dump` writes `layout`'s

    @property
    def caption(self) -> str:
        if not self.caption_z:
            return ""
        d = zlib.decompressobj()
        try:
            raw = d.decompress(self.caption_z, MAX_CAPTION)
        except zlib.error:
            raise BitstreamError("caption: corrupt") from None
        if d.unconsumed_tail or not d.eof:
            raise BitstreamError(f"caption: corrupt or longer than {MAX_CAPTION} bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BitstreamError("caption: not UTF-8") from None

    @staticmethod
    def pack_caption(caption: str) -> bytes:
        return zlib.compress(caption.encode("utf-8"), 9) if caption else b""

    @property
    def adapter_name(self) -> str:
        return ADAPTER_KINDS[self.adapter_kind]

    @property
    def sampler_name(self) -> str:
        return SAMPLERS[self.sampler]

    @property
    def pixels(self) -> int:
        return self.frames * self.height * self.width

    @property
    def tiles(self) -> int:
        """Indices a searched step holds: one, or one per tile."""
        return self.tile_rows * self.tile_cols

    @property
    def index_count(self) -> int:
        """Indices of each clip's search section."""
        return self.sde_steps * self.tiles if self.sampler == 1 else 0

    @property
    def layout(self) -> tuple[int, list]:
        """The minor version and the header fields this file is written with: 2.1 only with tiles."""
        return (1, HEADER_FIELDS_2_1) if self.search_tile else (0, HEADER_FIELDS)

    @property
    def is_image(self) -> bool:
        return self.frames == 1


def _check_range(name: str, value, bounds) -> None:
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise BitstreamError(f"{name} = {value} is outside [{bounds[0]}, {bounds[1]}]")


def clip_count(frames: int, clip_frames: int) -> int:
    return -(-frames // clip_frames)


def clip_lengths(frames: int, clip_frames: int) -> list[int]:
    """Frames of each clip: `clip_frames` each, the last what remains."""
    return [min(clip_frames, frames - start) for start in range(0, frames, clip_frames)]


# ---- writing


def dump(f: VovFile, check: bool = True) -> bytes:
    """The file's bytes. `check=False` writes whatever the fields hold (for making hostile test files)."""
    return b"".join(data for _, data in dump_parts(f, check))


def _segment_parts(s: Segment, check: bool = True) -> list[tuple[str, bytes]]:
    parts = []
    for name, (write, _), part, bounds in SEGMENT_FIELDS:
        value = getattr(s, name)
        if check:
            _check_range(name, value, bounds)
        parts.append((part, write(value)))
    for name, part in SEGMENT_SECTIONS:
        data = getattr(s, name)
        parts.append((part, varint(len(data)) + data))
    return parts


def dump_parts(f: VovFile, check: bool = True) -> list[tuple[str, bytes]]:
    """The file as (part, bytes) pieces, in order: what `vov info` adds up. Always format 2.0."""
    if check:
        check_file(f)
    minor, fields_ = f.layout
    parts = [("header", MAGIC + bytes([MAJOR, minor]))]
    for name, (write, _), part, bounds in fields_:
        value = getattr(f, name)
        if check:
            _check_range(name, value, bounds)
        parts.append((part, write(value)))
    parts.append(("header", varint(len(f.segments))))
    for s in f.segments:
        inner = _segment_parts(s, check)
        parts.append(("header", varint(sum(len(b) for _, b in inner))))
        parts.extend(inner)
    body = b"".join(p for _, p in parts)
    parts.append(("checksum", struct.pack("<I", zlib.crc32(body))))
    return parts


def part_sizes(f: VovFile) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for part, data in dump_parts(f):
        sizes[part] = sizes.get(part, 0) + len(data)
    return sizes


def segment_sizes(f: VovFile) -> list[int]:
    """Bytes of each clip's segment (its length prefix included): what `vov info` lists per clip."""
    sizes = []
    for s in f.segments:
        inner = sum(len(b) for _, b in _segment_parts(s))
        sizes.append(inner + len(varint(inner)))
    return sizes


def dump_segment(s: Segment) -> bytes:
    """One segment's bytes (without its length prefix), as they sit in a file."""
    return b"".join(b for _, b in _segment_parts(s))


def load_segment(data: bytes, what: str = "segment") -> Segment:
    """The inverse of `dump_segment`, as defensive as `load`."""
    inner = Reader(data)
    seg: dict = {}
    _read_fields(inner, SEGMENT_FIELDS, seg)
    for name, _ in SEGMENT_SECTIONS:
        seg[name] = _blob(len(data))[1](inner, f"{what} {name}")
    if inner.remaining:
        raise BitstreamError(f"{what}: {inner.remaining} unexpected bytes at its end")
    return _segment_from(seg)


# ---- reading


def _read_fields(r: Reader, fields_: list, values: dict) -> None:
    for name, (_, read), _, bounds in fields_:
        value = read(r, name)
        _check_range(name, value, bounds)
        values[name] = value


def _segment_from(values: dict) -> Segment:
    return Segment(values.get("frames", 1), values["step_size"], values["prior_weights"], values["prior_scale_codes"],
                   values["qmax"], values["payload"], values["search"])


def load(data: bytes) -> VovFile:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError("not bytes")
    data = bytes(data)
    if len(data) < len(MAGIC) + 6:
        raise BitstreamError("too short to be a .vov file")
    if data[:4] != MAGIC:
        raise BitstreamError("not a .vov file (bad magic)")
    major, minor = data[4], data[5]
    if major not in READS:
        raise BitstreamError(f"format version {major}.{minor} is not supported by this decoder "
                             f"(reads {', '.join(f'{m}.x' for m in READS)})")
    if minor > MINORS[major]:
        raise BitstreamError(f"format version {major}.{minor} is newer than this decoder, which reads up to "
                             f"{major}.{MINORS[major]}: its new fields cannot be honoured")
    (crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != crc:
        raise BitstreamError("checksum mismatch: the file is corrupted")
    r = Reader(data[:-4])
    r.pos = 6
    values: dict = {}
    if major == 1:
        _read_fields(r, V1_HEADER_FIELDS, values)
        if values["schedule"] != 0:
            raise BitstreamError(f"schedule = {values['schedule']}: format 1.0 defines only 0")
        for name, _ in V1_SECTIONS:
            values[name] = _blob(len(data))[1](r, name)
        if values["search_bits"] or values["search"]:
            raise BitstreamError("a format 1.0 file with best-of-N indices: 1.0 never defined their meaning")
        segments = [_segment_from(values)]
        header = {k: v for k, v in values.items() if k in HEADER_NAMES and k != "search_bits"}
        header["clip_frames"] = values["frames"]
    else:
        _read_fields(r, HEADER_FIELDS_2_1 if minor >= 1 else HEADER_FIELDS, values)
        count = r.varint("segment count")
        expected = clip_count(values["frames"], values["clip_frames"])
        if count != expected:
            raise BitstreamError(f"segment table: {count} segments for {values['frames']} frames in clips of "
                                 f"{values['clip_frames']} (expected {expected})")
        segments = []
        for i in range(count):
            length = r.varint("segment length")
            if length > r.remaining:
                raise BitstreamError(f"segment {i}: {length} bytes declared, {r.remaining} remain (truncated?)")
            segments.append(load_segment(r.take(length, f"segment {i}"), f"segment {i}"))
        header = values
    if r.remaining:
        raise BitstreamError(f"{r.remaining} unexpected bytes after the last section")
    f = VovFile(**{k: v for k, v in header.items() if k in HEADER_NAMES}, segments=segments, version=(major, minor))
    check_file(f)
    _ = f.caption  # a corrupt caption is refused now, not when someone reads it
    return f


HEADER_NAMES = {name for name, *_ in HEADER_FIELDS_2_1}


def _finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise BitstreamError(f"{name} is not a finite number")


def check_file(f: VovFile) -> None:
    """The rules that tie fields together (the ranges are checked field by field)."""
    _finite("guidance", f.guidance)
    _finite("shift", f.shift)
    _finite("g_cap", f.g_cap)
    if f.schedule == 0 and f.shift != 1.0:
        raise BitstreamError("schedule: the uniform schedule has no shift (shift must be 1)")
    if not 1.0 / MAX_SHIFT <= f.shift <= MAX_SHIFT:
        raise BitstreamError(f"schedule: shift {f.shift:g} is outside [1/{MAX_SHIFT:g}, {MAX_SHIFT:g}]")
    if f.sampler == 0 and any(getattr(f, name) != value for name, value in ODE_FIELDS.items()):
        raise BitstreamError("an ODE decode has no best-of-N fields (they must be 0, and g_cap 1)")
    if f.search_tile == 0 and (f.tile_rows, f.tile_cols) != (1, 1):
        raise BitstreamError("a tile grid without tiles: search_tile 0 has one tile")
    if f.tiles > MAX_TILES:
        raise BitstreamError(f"tile grid: {f.tile_rows} x {f.tile_cols} tiles, at most {MAX_TILES}")
    if f.sampler == 1:
        if not 0 < f.g_cap <= 1e3:
            raise BitstreamError(f"g_cap = {f.g_cap:g} is outside (0, 1000]")
        if f.sde_start + f.sde_steps > f.sampler_steps - 1:
            raise BitstreamError(f"best-of-N: steps {f.sde_start} .. {f.sde_start + f.sde_steps - 1} leave no "
                                 f"deterministic last step of {f.sampler_steps}")
    if f.clip_frames > f.frames:
        raise BitstreamError(f"clip_frames = {f.clip_frames} exceeds the {f.frames} frames")
    lengths = clip_lengths(f.frames, f.clip_frames)
    if len(f.segments) != len(lengths):
        raise BitstreamError(f"segment table: {len(f.segments)} segments for {len(lengths)} clips")
    for i, (s, frames) in enumerate(zip(f.segments, lengths)):
        if s.frames != frames:
            raise BitstreamError(f"segment {i}: {s.frames} frames declared, the clip has {frames}")
        _finite(f"segment {i} step_size", s.step_size)
        if s.step_size <= 0:
            raise BitstreamError(f"segment {i}: step_size must be positive")
        if s.qmax * s.step_size > MAX_THETA:
            raise BitstreamError(f"segment {i} quantiser: qmax x step_size = {s.qmax * s.step_size:.3g} exceeds "
                                 f"{MAX_THETA:g}, the largest vector entry a file may hold")
        if len(s.prior_weights) != len(s.prior_scale_codes):
            raise BitstreamError(f"segment {i} prior: weights and scales differ in count")
        if f.sampler == 0 and s.search:
            raise BitstreamError(f"segment {i}: best-of-N indices in a file whose decode is the ODE")
