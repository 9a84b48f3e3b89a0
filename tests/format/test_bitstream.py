import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vov.format import bitstream
from vov.format.bitstream import Segment, VovFile, dump, load
from vov.errors import BitstreamError


def sample_segment(**changes) -> Segment:
    fields = dict(frames=1, step_size=float(np.float32(0.0123)), prior_weights=(100, 155), prior_scale_codes=(-3, 12),
                  qmax=17, payload=bytes(range(256)) * 3)
    fields.update(changes)
    return Segment(**fields)


def sample_file(segment: dict | None = None, **changes) -> VovFile:
    fields = dict(backbone="tiny", backbone_hash=bytes(range(8)), adapter_kind=0, rank=4, d=16384, adapter_seed=7,
                  targets="attn", sampler_steps=50, noise_seed=3, frames=1, height=512, width=768,
                  segments=[sample_segment(**(segment or {}))], caption_z=VovFile.pack_caption("a red boat"))
    fields.update(changes)
    return VovFile(**fields)


def clip_file(frames: int = 40, clip_frames: int = 17, **changes) -> VovFile:
    segments = [sample_segment(frames=n, payload=bytes([i]) * (10 + i)) for i, n in
                enumerate(bitstream.clip_lengths(frames, clip_frames))]
    return sample_file(frames=frames, clip_frames=clip_frames, fps_num=30000, fps_den=1001, segments=segments, **changes)


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_round_trip():
    f = sample_file()
    g = load(dump(f))
    assert g == f
    assert g.caption == "a red boat"


def test_parts_add_up_to_file_size():
    f = sample_file()
    sizes = bitstream.part_sizes(f)
    assert sum(sizes.values()) == len(dump(f))
    assert sizes["payload"] == len(f.segments[0].payload) + 2 and sizes["checksum"] == 4


def test_out_of_range_field_not_written():
    with pytest.raises(BitstreamError):
        dump(sample_file(rank=0))


def test_refuses_other_major_version():
    data = bytearray(dump(sample_file()))
    data[4] = 3
    with pytest.raises(BitstreamError, match="version"):
        load(with_crc(bytes(data[:-4])))


def test_refuses_corruption_by_checksum():
    data = bytearray(dump(sample_file()))
    data[40] ^= 0x10
    with pytest.raises(BitstreamError, match="checksum"):
        load(bytes(data))


def test_hostile_lengths_with_valid_checksum():
    # a payload length of 2**34 with a correct checksum: refused before allocating anything
    good = dump(sample_file(segment=dict(payload=b"")))
    body = good[:-4]
    cut = body.rfind(b"\x00\x00")  # the two empty-section lengths at the end of the one segment
    hostile = body[:cut] + bitstream.varint(1 << 34) + b"\x00"
    with pytest.raises(BitstreamError):
        load(with_crc(hostile))


def test_hostile_dimensions():
    parts = bitstream.dump_parts(sample_file())
    body = b"".join(p for _, p in parts[:-1])
    huge = body.replace(bitstream.varint(768), bitstream.varint(1 << 30), 1)
    with pytest.raises(BitstreamError, match="width|height"):
        load(with_crc(huge))


def test_trailing_bytes_refused():
    body = dump(sample_file())[:-4] + b"\x00"
    with pytest.raises(BitstreamError, match="unexpected bytes"):
        load(with_crc(body))


@pytest.mark.parametrize("bad", [b"", b"\x89VOV", b"GIF89a" + bytes(20), bytes(100)])
def test_garbage(bad):
    with pytest.raises(BitstreamError):
        load(bad)


VALID = dump(sample_file())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes(data):
    try:
        load(data)
    except BitstreamError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(VALID) - 1))
def test_fuzz_truncation(n):
    with pytest.raises(BitstreamError):
        load(VALID[:n])


@settings(max_examples=400, deadline=None)
@given(st.integers(6, len(VALID) - 5), st.integers(1, 255))
def test_fuzz_flip_with_repaired_checksum(pos, mask):
    # past the checksum: a hostile writer who recomputes the CRC; any outcome but a typed error or a
    # well-formed file is a bug
    body = bytearray(VALID[:-4])
    body[pos] ^= mask
    try:
        f = load(with_crc(bytes(body)))
    except BitstreamError:
        return
    assert isinstance(f, VovFile)
    assert len(f.caption) <= bitstream.MAX_CAPTION


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=600))
def test_fuzz_hostile_body_with_valid_header(tail):
    try:
        load(with_crc(bitstream.MAGIC + bytes([2, 0]) + tail))
    except BitstreamError:
        pass


def test_vector_entries_beyond_the_format_range_refused():
    with pytest.raises(BitstreamError, match="qmax x step_size"):
        dump(sample_file(segment=dict(step_size=3.4e38)))
    with pytest.raises(BitstreamError, match="qmax x step_size"):
        dump(sample_file(segment=dict(qmax=1 << 15, step_size=0.01)))
    body = dump(sample_file())[:-4]
    big = body.replace(struct.pack("<f", np.float32(0.0123)), struct.pack("<f", 3.4e38))
    with pytest.raises(BitstreamError, match="qmax x step_size"):
        load(with_crc(big))


def test_clips_round_trip_with_a_segment_each():
    f = clip_file()
    g = load(dump(f))
    assert g == f and [s.frames for s in g.segments] == [17, 17, 6]
    sizes = bitstream.segment_sizes(g)
    assert len(sizes) == 3 and sizes[0] < sizes[1] < sizes[2] and sum(sizes) < len(dump(f))


@pytest.mark.parametrize("change,match", [
    (dict(clip_frames=16), "the clip has 16"),  # 40 frames in clips of 16: 3 clips, but 17 declared
    (dict(frames=60), "segment"),
    (dict(shift=3.0), "uniform schedule"),
    (dict(schedule=1, shift=1000.0), "shift"),
    (dict(sampler=0, search_bits=4), "ODE"),
    (dict(sampler=1, sde_start=40, sde_steps=20), "deterministic last step"),
    (dict(clip_frames=41), "exceeds|segment table"),
])
def test_inconsistent_fields_refused(change, match):
    f = clip_file()
    for name, value in change.items():
        setattr(f, name, value)
    with pytest.raises(BitstreamError, match=match):
        load(dump_unchecked(f))


def dump_unchecked(f: VovFile, layout: tuple[int, list] | None = None) -> bytes:
    """What a hostile writer makes: the fields as given (in `layout`: minor version and header fields),
    the checksum fixed."""
    minor, fields = layout or f.layout
    parts = [bitstream.MAGIC + bytes([bitstream.MAJOR, minor])]
    for name, (write, _), _, _ in fields:
        parts.append(write(getattr(f, name)))
    parts.append(bitstream.varint(len(f.segments)))
    for s in f.segments:
        raw = bitstream.dump_segment(s)
        parts.append(bitstream.varint(len(raw)) + raw)
    return with_crc(b"".join(parts))


def test_a_hostile_segment_count_is_refused_before_allocating():
    f = clip_file()
    data = dump_unchecked(f)[:-4]
    count_at = data.index(bitstream.varint(3) + bitstream.varint(len(bitstream.dump_segment(f.segments[0]))))
    with pytest.raises(BitstreamError, match="segment table"):
        load(with_crc(data[:count_at] + bitstream.varint((1 << 35) - 1) + data[count_at + 1:]))


# ---- format 2.1: the tile grid of best-of-N per tile

def tiled_file(**changes) -> VovFile:
    searched = dict(sampler=1, search_bits=2, sde_start=0, sde_steps=9, g_cap=1.0, sampler_steps=10,
                    search_tile=8, tile_rows=2, tile_cols=3)
    searched.update(changes)
    return sample_file(segment=dict(search=bytes(-(-9 * 6 * 2 // 8))), **searched)


def test_a_tiled_file_is_format_2_1_and_an_untiled_one_stays_2_0():
    tiled = dump(tiled_file())
    assert tiled[4:6] == bytes([2, 1])
    g = load(tiled)
    assert g.version == (2, 1) and (g.search_tile, g.tile_rows, g.tile_cols) == (8, 2, 3)
    assert g.tiles == 6 and g.index_count == 54
    plain = dump(sample_file())
    assert plain[4:6] == bytes([2, 0]) and load(plain).version == (2, 0) and load(plain).search_tile == 0
    untiled = tiled_file(search_tile=0, tile_rows=1, tile_cols=1)
    assert dump(untiled)[4:6] == bytes([2, 0])


@pytest.mark.parametrize("change,match", [
    (dict(search_tile=0), "search_tile = 0 is outside"),
    (dict(tile_rows=20, tile_cols=20), "at most 256"),
    (dict(tile_rows=0), "tile_rows = 0 is outside"),
])
def test_inconsistent_tile_grids_refused(change, match):
    f = tiled_file()
    for name, value in change.items():
        setattr(f, name, value)
    with pytest.raises(BitstreamError, match=match):
        load(dump_unchecked(f, (1, bitstream.HEADER_FIELDS_2_1)))
    with pytest.raises(BitstreamError):
        dump(f)


def test_a_newer_minor_version_is_refused():
    data = bytearray(dump(tiled_file())[:-4])
    data[5] = 2
    with pytest.raises(BitstreamError, match="newer than this decoder"):
        load(with_crc(bytes(data)))
