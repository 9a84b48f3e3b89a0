import os
import shutil
import subprocess
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vov.errors import MediaError
from vov.media import Clip, Picture, camera_move, crop_frames, load_media, load_video, pad_frames, save_video
from vov.media import bounds
from vov.media.bounds import VideoLimits
from vov.media.camera import CAMERA_MOVES
from vov.media.colour import LUMA_WEIGHTS, RGB_TO_YPBPR, YPBPR_TO_RGB, YCbCrFormat, rgb_to_ycbcr, ycbcr_to_rgb
from vov.media.png_frames import read_png_frames
from vov.media.pyav import read_av
from vov.media.video import open_video_writer
from vov.media.y4m import parse_y4m_header, read_y4m

FORMATS = [YCbCrFormat(m, r, c, b) for m in ("bt601", "bt709") for r in ("limited", "full")
           for c in ("420", "422", "444", "400") for b in (8, 10, 16)]


def ffmpeg():
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        exe = shutil.which("ffmpeg")
        if exe is None:
            pytest.skip("no ffmpeg (pip install imageio-ffmpeg or apt-get install ffmpeg) to compare with")
        return exe


def run_ffmpeg(args, data=b""):
    return subprocess.run([ffmpeg(), "-nostdin", "-hide_banner", "-v", "error", *args], input=data,
                          capture_output=True, check=True, timeout=60).stdout


def smooth_photo(h=96, w=128, seed=0):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    img = np.stack([0.5 + 0.4 * np.sin(x / 9 + y / 23), 0.5 + 0.4 * np.cos(y / 7), (x + y) / (w + h)], -1)
    return np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1).astype(np.float32)


def random_planes(fmt, h, w, frames=1, seed=0, in_range=False):
    rng = np.random.default_rng(seed)
    top = 2**fmt.bits
    shapes = [(h, w)] + ([fmt.chroma_shape(h, w)] * 2 if fmt.chroma != "400" else [])
    out = []
    for _ in range(frames):
        planes = []
        for i, shape in enumerate(shapes):
            lo, hi = 0, top
            if in_range and fmt.range == "limited":
                unit = 2 ** (fmt.bits - 8)
                lo, hi = 16 * unit, (236 if i == 0 else 241) * unit
            planes.append(rng.integers(lo, hi, shape).astype(fmt.dtype))
        out.append(tuple(planes))
    return out


def y4m_bytes(header: str, frames, frame_header=b"FRAME\n") -> bytes:
    body = b"".join(frame_header + b"".join(p.astype(p.dtype.newbyteorder("<")).tobytes() for p in planes)
                    for planes in frames)
    return header.encode() + b"\n" + body


# ---- colour


def test_matrices_follow_from_the_luma_weights():
    for matrix, (kr, kb) in LUMA_WEIGHTS.items():
        kg = 1 - kr - kb
        m = RGB_TO_YPBPR[matrix]
        np.testing.assert_allclose(m[0], [kr, kg, kb], atol=1e-12)
        np.testing.assert_allclose(m[1], [-kr / (2 - 2 * kb), -kg / (2 - 2 * kb), 0.5], atol=1e-6)
        np.testing.assert_allclose(m[2], [0.5, -kg / (2 - 2 * kr), -kb / (2 - 2 * kr)], atol=1e-6)
        np.testing.assert_allclose(m.sum(axis=1), [1, 0, 0], atol=1e-12)  # grey stays grey
        np.testing.assert_allclose(YPBPR_TO_RGB[matrix] @ m, np.eye(3), atol=2e-6)


@pytest.mark.parametrize("matrix, colour_range, rgb, expected", [
    ("bt601", "limited", (255, 0, 0), (81, 90, 240)),
    ("bt601", "limited", (0, 255, 0), (145, 54, 34)),
    ("bt601", "limited", (0, 0, 255), (41, 240, 110)),
    ("bt601", "limited", (255, 255, 255), (235, 128, 128)),
    ("bt601", "limited", (0, 0, 0), (16, 128, 128)),
    ("bt709", "limited", (255, 0, 0), (63, 102, 240)),
    ("bt709", "limited", (0, 255, 0), (173, 42, 26)),
    ("bt709", "limited", (0, 0, 255), (32, 240, 118)),
    ("bt601", "full", (255, 0, 0), (76, 85, 255)),
    ("bt601", "full", (255, 255, 255), (255, 128, 128)),
    ("bt709", "full", (0, 0, 0), (0, 128, 128)),
    ("bt709", "full", (0, 0, 255), (18, 255, 116)),
])
def test_known_values(matrix, colour_range, rgb, expected):
    pixels = np.broadcast_to(np.array(rgb, np.float32) / 255, (4, 4, 3))
    y, cb, cr = rgb_to_ycbcr(pixels, YCbCrFormat(matrix, colour_range, "420", 8))
    assert (int(y[0, 0]), int(cb[0, 0]), int(cr[0, 0])) == expected


def test_deeper_samples_scale_the_limited_range():
    white = np.ones((2, 2, 3), np.float32)
    for bits, (y, c) in {10: (940, 512), 16: (60160, 32768)}.items():
        planes = rgb_to_ycbcr(white, YCbCrFormat("bt709", "limited", "444", bits))
        assert int(planes[0][0, 0]) == y and int(planes[1][0, 0]) == c and planes[0].dtype == np.dtype("<u2")


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f"{f.matrix}-{f.range}-{f.chroma}-{f.bits}")
def test_samples_to_rgb_and_back_are_exact(fmt):
    """Any Y'CbCr samples (out-of-gamut ones too) survive RGB and back: what makes Y4M exact."""
    for h, w in ((6, 8), (5, 7)):
        planes = random_planes(fmt, h, w, seed=h)[0]
        rgb = ycbcr_to_rgb(planes, fmt)
        assert rgb.shape == (h, w, 3) and rgb.dtype == np.float32
        back = rgb_to_ycbcr(rgb, fmt)
        assert len(back) == len(planes)
        for a, b in zip(planes, back):
            np.testing.assert_array_equal(a, b)


def test_rgb_through_samples_stays_within_quantisation():
    rgb = smooth_photo(16, 20)
    for fmt in (YCbCrFormat("bt709", "full", "444", 16), YCbCrFormat("bt601", "limited", "444", 16)):
        np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb, fmt), fmt), rgb, atol=1e-4)
    grey = np.repeat(rgb[..., :1], 3, -1)
    fmt = YCbCrFormat("bt709", "full", "400", 8)
    out = ycbcr_to_rgb(rgb_to_ycbcr(grey, fmt), fmt)
    assert np.abs(out - grey).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
@pytest.mark.parametrize("colour_range", ["limited", "full"])
def test_matches_ffmpeg_within_one_code(matrix, colour_range):
    h, w = 32, 48
    rng = np.random.default_rng(1)
    r = "tv" if colour_range == "limited" else "pc"
    fmt444, fmt420 = YCbCrFormat(matrix, colour_range, "444", 8), YCbCrFormat(matrix, colour_range, "420", 8)
    # RGB -> 4:4:4, and -> 4:2:0 on a pattern whose colour is constant on each 2x2 block (swscale's
    # "area" filter is the same block average)
    for fmt, flags, src in (
            (fmt444, "accurate_rnd+full_chroma_int+bitexact", rng.integers(0, 256, (h, w, 3), dtype=np.uint8)),
            (fmt420, "area+accurate_rnd+full_chroma_int+bitexact",
             np.repeat(np.repeat(rng.integers(0, 256, (h // 2, w // 2, 3), dtype=np.uint8), 2, 0), 2, 1))):
        theirs = run_ffmpeg(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-i", "-", "-vf",
                             f"scale=out_color_matrix={matrix}:out_range={r}:flags={flags},format=yuv{fmt.chroma}p",
                             "-f", "rawvideo", "-"], src.tobytes())
        mine = np.concatenate([p.ravel() for p in rgb_to_ycbcr(src.astype(np.float32) / 255, fmt)])
        assert np.abs(mine.astype(int) - np.frombuffer(theirs, np.uint8).astype(int)).max() <= 1
    # 4:2:0 -> RGB, chroma repeated over its block (swscale's "neighbor")
    planes = random_planes(fmt420, h, w, seed=2, in_range=True)[0]
    theirs = run_ffmpeg(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{w}x{h}", "-i", "-", "-vf",
                         f"scale=in_color_matrix={matrix}:in_range={r}:flags=neighbor+accurate_rnd+full_chroma_int"
                         "+bitexact,format=rgb24", "-f", "rawvideo", "-"], b"".join(p.tobytes() for p in planes))
    mine = (np.clip(ycbcr_to_rgb(planes, fmt420), 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.abs(mine.astype(int) - np.frombuffer(theirs, np.uint8).reshape(h, w, 3).astype(int)).max() <= 1


# ---- Y4M


HEADERS = [
    "YUV4MPEG2 W8 H6 F30000:1001 Ip A1:1 C420jpeg XYSCSS=420JPEG",
    "YUV4MPEG2 W7 H5 F25:1 It A128:117 C420mpeg2 XYSCSS=420MPEG2 XCOLORRANGE=FULL XVENDOR=anything",
    "YUV4MPEG2 W9 H4 F24:1",  # no C: 4:2:0 8-bit, limited
    "YUV4MPEG2 W5 H3 F50:2 C420paldv",
    "YUV4MPEG2 W6 H6 F60:1 C422",
    "YUV4MPEG2 W5 H5 F1:1 C444 XCOLORRANGE=LIMITED",
    "YUV4MPEG2 W7 H3 F0:0 Cmono",
    "YUV4MPEG2 W6 H4 F30:1 C420p10 XYSCSS=420P10",
    "YUV4MPEG2 W3 H5 F30:1 C444p16",
    "YUV4MPEG2 W4 H4 F10:1 Cmono12 XCOLORRANGE=FULL",
]


@pytest.fixture
def small_frames(monkeypatch):
    """Let tiny hand-made frames through (the limits' smallest side is for coding, not for parsing)."""
    monkeypatch.setattr(bounds, "MIN_SIDE", 1)


@pytest.mark.parametrize("header", HEADERS)
def test_y4m_read_then_written_is_byte_exact(header, tmp_path, small_frames):
    parsed = parse_y4m_header(header.encode() + b"\n")
    fmt = YCbCrFormat("bt601", parsed.range, parsed.chroma, parsed.bits)
    data = y4m_bytes(header, random_planes(fmt, parsed.height, parsed.width, frames=3))
    src, dst = tmp_path / "in.y4m", tmp_path / "out.y4m"
    src.write_bytes(data)
    clip = read_y4m(src)
    assert (clip.num_frames, clip.height, clip.width) == (3, parsed.height, parsed.width)
    assert clip.fps == parsed.fps and (clip.chroma, clip.bits, clip.range) == (parsed.chroma, parsed.bits, parsed.range)
    assert clip.grey == (parsed.chroma == "400")
    save_video(clip, dst)
    assert dst.read_bytes() == data
    assert set(os.listdir(tmp_path)) == {"in.y4m", "out.y4m"}  # no temporary left behind


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuvj420p", "yuv422p", "yuv444p", "gray", "yuv420p10le"])
def test_y4m_from_ffmpeg_round_trips(pix_fmt, tmp_path):
    src, dst = tmp_path / "a.y4m", tmp_path / "b.y4m"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=48x32:rate=30000/1001", "-frames:v", "4", "-pix_fmt", pix_fmt,
                "-strict", "-1", "-y", str(src)])
    clip = load_video(src)
    assert (clip.num_frames, clip.height, clip.width, clip.fps) == (4, 32, 48, (30000, 1001))
    save_video(clip, dst)
    assert dst.read_bytes() == src.read_bytes()


def test_y4m_frame_parameters_are_read_and_dropped(small_frames):
    fmt = YCbCrFormat("bt601", "limited", "420", 8)
    frames = random_planes(fmt, 4, 4, frames=2)
    clip = read_y4m(y4m_bytes("YUV4MPEG2 W4 H4 F25:1", frames, frame_header=b"FRAME Ixyz XA=1\n"))
    plain = read_y4m(y4m_bytes("YUV4MPEG2 W4 H4 F25:1", frames))
    np.testing.assert_array_equal(clip.frames, plain.frames)


def test_y4m_writer_updates_the_tags_it_changes(tmp_path):
    clip = camera_move(smooth_photo(), 3, "pan", size=(32, 24))
    first = tmp_path / "a.y4m"
    save_video(clip, first)
    head = first.read_bytes().split(b"\n", 1)[0]
    assert head == b"YUV4MPEG2 W32 H24 F25:1 Ip A1:1 C444 XCOLORRANGE=FULL"  # as the synthetic source was
    read = read_y4m(first)
    second = tmp_path / "b.y4m"
    save_video(read, second, chroma="420", bits=10, range="limited")
    assert second.read_bytes().split(b"\n", 1)[0] == b"YUV4MPEG2 W32 H24 F25:1 Ip A1:1 C420p10 XCOLORRANGE=LIMITED"
    tagged = Clip(read.frames, (30000, 1001), chroma="420", container="y4m",
                  y4m_tags=("W32", "H24", "F25:1", "Ib", "C420mpeg2", "XYSCSS=420MPEG2"))
    save_video(tagged, second, chroma="444")
    assert second.read_bytes().split(b"\n", 1)[0] == b"YUV4MPEG2 W32 H24 F30000:1001 Ib C444 XYSCSS=444"


def test_streaming_writer_is_atomic(tmp_path):
    clip = camera_move(smooth_photo(), 5, "zoom-in", size=(32, 24))
    whole, parts = tmp_path / "whole.y4m", tmp_path / "parts.y4m"
    save_video(clip, whole)
    writer = open_video_writer(parts, 32, 24, clip.fps, chroma="444", range="full")
    writer.write(clip.frames[0])
    writer.write(clip.frames[1:4])
    assert not parts.exists()  # nothing under the target's name until close
    writer.write(clip.frames[4:])
    writer.close()
    assert parts.read_bytes() == whole.read_bytes()
    with pytest.raises(RuntimeError):
        with open_video_writer(tmp_path / "aborted.y4m", 32, 24, clip.fps) as w:
            w.write(clip.frames[:2])
            raise RuntimeError("stop")
    with pytest.raises(MediaError, match="no frames"):
        open_video_writer(tmp_path / "empty.y4m", 32, 24, clip.fps).close()
    assert sorted(os.listdir(tmp_path)) == ["parts.y4m", "whole.y4m"]


def test_writers_refuse_bad_frames(tmp_path):
    with open_video_writer(tmp_path / "a.y4m", 32, 24, (25, 1)) as w:
        with pytest.raises(MediaError, match="shape"):
            w.write(np.zeros((24, 33, 3), np.float32))
        with pytest.raises(MediaError, match="NaN"):
            w.write(np.full((24, 32, 3), np.nan, np.float32))
        w.write(np.zeros((24, 32, 3), np.float32))
    with pytest.raises(MediaError, match="writes clips as"):
        open_video_writer(tmp_path / "a.gif", 32, 24, (25, 1))
    with pytest.raises(MediaError, match="frame rate"):
        open_video_writer(tmp_path / "b.y4m", 32, 24, (0, 1))
    with pytest.raises(MediaError, match="smallest side"):
        open_video_writer(tmp_path / "c.y4m", 8, 24, (25, 1))


def valid_y4m(frames=2, w=16, h=16) -> bytes:
    fmt = YCbCrFormat("bt601", "limited", "420", 8)
    return y4m_bytes(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg", random_planes(fmt, h, w, frames=frames))


@pytest.mark.parametrize("data, message", [
    (valid_y4m()[:-10], "truncated at frame 2"),
    (valid_y4m()[:len(valid_y4m(1)) + 3], "truncated at frame 2"),
    (valid_y4m().split(b"\n", 1)[0] + b"\n", "no frames"),
    (b"YUV4MPEG2 W16 H16 F25:1", "truncated Y4M header"),
    (b"YUV4MPEG2 W100000 H100000 F25:1\nFRAME\n", "vov codes up to"),
    (b"YUV4MPEG2 W4096 H4096 F25:1\nFRAME\n", "pixels a frame"),
    (b"YUV4MPEG2 W0 H16 F25:1\n", "zero width"),
    (b"YUV4MPEG2 W-5 H16 F25:1\n", "bad width"),
    (b"YUV4MPEG2 W99999999999999999999 H16\n", "bad width"),
    (b"YUV4MPEG2 H16 F25:1\n", "lacks the width"),
    (b"YUV4MPEG2 W16 W16 H16\n", "W twice"),
    (b"YUV4MPEG2 W16 H16 F25\n", "bad frame rate"),
    (b"YUV4MPEG2 W16 H16 F100000:1\n", "above the limit"),
    (b"YUV4MPEG2 W16 H16 C411\n", "C411 is not supported"),
    (b"YUV4MPEG2 W16 H16 C444alpha\n", "not supported"),
    (b"YUV4MPEG2 W16 H16 XCOLORRANGE=HALF\n", "XCOLORRANGE"),
    (b"YUV4MPEG2 W16 H16  F25:1\n", "empty"),
    (b"YUV4MPEG2 W16 H16 F25:1 \xff\n", "not ASCII"),
    (b"YUV4MPEG2" + b" XA" * 2000, "longer than"),
    (b"YUV4MPEG2 W16 H16\nFRAMX\n" + bytes(384), "does not start with FRAME"),
    (b"YUV4MPEG2 W16 H16\nFRAME" + b" x" * 600, "longer than"),
    (b"YUV4MPEG3 W16 H16\n", "not a Y4M"),
    (b"\x89PNG\r\n\x1a\n", "not a Y4M"),
])
def test_bad_y4m_gets_a_clear_error(data, message):
    with pytest.raises(MediaError, match=message) as info:
        read_y4m(data)
    assert "\n" not in str(info.value)


def test_y4m_limits_refuse_before_reading(monkeypatch):
    data = valid_y4m(frames=5)
    monkeypatch.setattr(bounds, "MAX_FRAMES", 4)
    with pytest.raises(MediaError, match="more than 4 frames"):
        read_y4m(data)
    monkeypatch.setattr(bounds, "MAX_FRAMES", 100)
    monkeypatch.setattr(bounds, "MAX_VIDEO_PIXELS", 16 * 16 * 3)
    with pytest.raises(MediaError, match="pixels in all"):
        read_y4m(data)
    monkeypatch.setattr(bounds, "MAX_VIDEO_PIXELS", 1 << 20)
    monkeypatch.setattr(bounds, "MAX_DURATION_S", 0.1)
    with pytest.raises(MediaError, match="longer than 0.1 s"):
        read_y4m(data)


FUZZ_LIMITS = VideoLimits(frames=8, frame_pixels=64 * 64, video_pixels=64 * 64 * 4, duration_s=100.0, fps=1000)
FUZZ_SEEDS = [valid_y4m(2, 16, 16), y4m_bytes("YUV4MPEG2 W17 H16 F30000:1001 C444p10 XCOLORRANGE=FULL",
                                               random_planes(YCbCrFormat("bt709", "full", "444", 10), 16, 17, 2))]


def _read_bounded(data: bytes):
    """read_y4m with small limits; returns the clip, checks only MediaError escapes and memory stays bounded."""
    tracemalloc.start()
    try:
        clip = read_y4m(data, limits=FUZZ_LIMITS)
    except MediaError as e:
        clip = None
        assert "\n" not in str(e)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # the largest clip the limits allow as float32 RGB, one frame's samples and float temporaries, the input
    bound = FUZZ_LIMITS.video_pixels * 12 + FUZZ_LIMITS.frame_pixels * 48 + 2 * len(data) + (1 << 16)
    assert peak < bound
    if clip is not None:
        assert clip.num_frames <= FUZZ_LIMITS.frames and clip.pixels <= FUZZ_LIMITS.video_pixels
        assert clip.height * clip.width <= FUZZ_LIMITS.frame_pixels
    return clip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data):
    _read_bounded(data)
    _read_bounded(b"YUV4MPEG2 " + data)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FUZZ_SEEDS), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255),
                                                        st.sampled_from(["set", "insert", "delete", "cut"])),
                                              min_size=1, max_size=6),
       st.sampled_from([b"", b"W999999", b"H65536", b"F1:0", b"F0:1", b"C420p16", b"Cmono", b"W1", b"XCOLORRANGE=",
                        b"FRAME", b"\n", b" "]))
def test_fuzz_mutated_headers(seed, edits, splice):
    data = bytearray(seed)
    for position, value, kind in edits:
        position = min(position, len(data))
        if kind == "set" and position < len(data):
            data[position] = value
        elif kind == "insert":
            data[position:position] = splice or bytes([value])
        elif kind == "delete":
            del data[position:position + 1 + value % 4]
        elif kind == "cut":
            del data[position + value:]
    _read_bounded(bytes(data))


# ---- odd sizes


def test_pad_and_crop_back():
    frames = np.random.default_rng(0).random((3, 29, 37, 3)).astype(np.float32)
    padded = pad_frames(frames, 16)
    assert padded.shape == (3, 32, 48, 3)
    np.testing.assert_array_equal(padded[:, 29:, :37], np.repeat(frames[:, -1:], 3, axis=1))
    np.testing.assert_array_equal(padded[:, :29, 37:], np.repeat(frames[:, :, -1:], 11, axis=2))
    np.testing.assert_array_equal(crop_frames(padded, 29, 37), frames)
    assert pad_frames(frames[0], 8).shape == (32, 40, 3)  # one frame works too
    assert pad_frames(frames, 1) is frames


def test_odd_sizes_round_trip_in_y4m(tmp_path):
    clip = camera_move(smooth_photo(), 3, "rotate", size=(37, 29))
    path = tmp_path / "odd.y4m"
    save_video(clip, path, chroma="420", range="limited")
    first = read_y4m(path)
    assert (first.width, first.height, first.num_frames) == (37, 29, 3)
    again = tmp_path / "again.y4m"
    save_video(first, again)
    assert again.read_bytes() == path.read_bytes()


# ---- containers through PyAV


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm", ".mov"])
@pytest.mark.parametrize("size", [(48, 32), (37, 29)])
def test_container_round_trip_keeps_size_count_and_rate(suffix, size, tmp_path):
    pytest.importorskip("av", reason="PyAV is not installed (pip install 'vov[video]')")
    clip = camera_move(smooth_photo(), 7, "mixed", size=size, fps=(30000, 1001))
    path = tmp_path / f"clip{suffix}"
    save_video(clip, path)
    out = load_video(path)
    assert (out.num_frames, out.height, out.width, out.fps) == (7, size[1], size[0], (30000, 1001))
    assert (out.matrix, out.range) == ("bt709", "limited")
    from vov.bench import metrics

    assert np.mean([metrics.psnr(a, b) for a, b in zip(clip.to_uint8(), out.to_uint8())]) > 30


def test_container_signals_matrix_and_range(tmp_path):
    pytest.importorskip("av", reason="PyAV is not installed")
    clip = camera_move(smooth_photo(), 3, "pan", size=(32, 24), fps=(24, 1))
    path = tmp_path / "a.mp4"
    save_video(clip, path, matrix="bt601", range="full", crf=0)  # CRF 0: x264 codes the samples losslessly
    out = load_video(path)
    assert (out.matrix, out.range, out.fps, out.chroma) == ("bt601", "full", (24, 1), "420")
    fmt = YCbCrFormat("bt601", "full", "420", 8)
    for frame, decoded in zip(clip.frames, out.frames):
        np.testing.assert_array_equal(decoded, ycbcr_to_rgb(rgb_to_ycbcr(frame, fmt), fmt))


def test_bad_containers_get_a_clear_error(tmp_path):
    av = pytest.importorskip("av", reason="PyAV is not installed")
    clip = camera_move(smooth_photo(), 6, "pan", size=(32, 24))
    good_mp4, good_mkv = tmp_path / "a.mp4", tmp_path / "a.mkv"
    save_video(clip, good_mp4)
    save_video(clip, good_mkv)
    cases = {
        "half.mp4": good_mp4.read_bytes()[: good_mp4.stat().st_size // 2],
        "cut.mkv": good_mkv.read_bytes()[: good_mkv.stat().st_size * 2 // 3],
        "text.mp4": b"not a video at all\n" * 40,
        "empty.mkv": b"",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(MediaError) as info:
            load_video(tmp_path / name)
        assert "\n" not in str(info.value)
    audio = tmp_path / "audio.mp4"
    with av.open(str(audio), "w") as out:
        stream = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            out.mux(packet)
    with pytest.raises(MediaError, match="no video stream"):
        load_video(audio)
    with pytest.raises(MediaError, match="more than 5 frames"):
        read_av(good_mp4, limits=VideoLimits(5, 64 * 64, 1 << 20, 100.0, 1000))
    with pytest.raises(MediaError, match="pixels a frame"):
        read_av(good_mp4, limits=VideoLimits(100, 16 * 16, 1 << 20, 100.0, 1000))


# ---- folders of PNG frames


def write_pngs(folder, names, size=(20, 16), value=None):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(len(names))
    for name in names:
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) if value is None else \
            np.full((size[1], size[0], 3), value, np.uint8)
        Image.fromarray(arr).save(folder / name)


def test_png_folder_round_trip(tmp_path):
    clip = camera_move(smooth_photo(), 12, "tilt", size=(40, 32), fps=(24, 1))
    folder = tmp_path / "frames"
    save_video(clip, folder)
    assert sorted(os.listdir(folder))[:2] == ["0001.png", "0002.png"] and len(os.listdir(folder)) == 12
    out = read_png_frames(folder)
    assert (out.num_frames, out.height, out.width, out.fps) == (12, 32, 40, (25, 1))  # a folder has no rate
    np.testing.assert_array_equal(out.to_uint8(), clip.to_uint8())
    assert load_video(folder, fps=(24, 1)).fps == (24, 1)
    save_video(out.with_frames(out.frames[:3]), folder)  # our own frames are replaced as a whole
    assert sorted(os.listdir(folder)) == ["0001.png", "0002.png", "0003.png"]
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_png_folder_natural_order(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(8, 12):
        Image.fromarray(np.full((16, 16, 3), i * 10, np.uint8)).save(folder / f"shot{i}.png")
    (folder / "notes.txt").write_text("ignored")
    clip = read_png_frames(folder)
    assert [int(v) for v in clip.to_uint8()[:, 0, 0, 0]] == [80, 90, 100, 110]


@pytest.mark.parametrize("names, message", [
    (["0001.png", "0002.png", "0004.png"], "frame 3 is missing"),
    (["a1.png", "b2.png"], "different names"),
    (["1.png", "01.png"], "both frame 1"),
    (["cover.png"], "not a numbered frame"),
    ([], "no PNG frames"),
])
def test_png_folder_errors(names, message, tmp_path):
    write_pngs(tmp_path / "f", names)
    with pytest.raises(MediaError, match=message):
        read_png_frames(tmp_path / "f")


def test_png_folder_sizes_and_fakes(tmp_path):
    write_pngs(tmp_path / "f", ["0001.png"], size=(20, 16))
    write_pngs(tmp_path / "f", ["0002.png"], size=(24, 16))
    with pytest.raises(MediaError, match="first frame is 20x16"):
        read_png_frames(tmp_path / "f")
    write_pngs(tmp_path / "g", ["0001.png"])
    (tmp_path / "g" / "0002.png").write_bytes(b"not a png")
    with pytest.raises(MediaError, match="0002.png"):
        read_png_frames(tmp_path / "g")
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "keep.txt").write_text("mine")
    with pytest.raises(MediaError, match="other files"):
        save_video(Clip(np.zeros((1, 16, 16, 3), np.float32)), tmp_path / "h")


# ---- one entry for every file


def test_load_media_sniffs_content(tmp_path):
    clip = camera_move(smooth_photo(), 3, "pan", size=(32, 24))
    y4m = tmp_path / "clip.y4m"
    save_video(clip, y4m)
    disguised = tmp_path / "clip.bin"
    disguised.write_bytes(y4m.read_bytes())
    assert isinstance(load_media(disguised), Clip)
    image = tmp_path / "photo.mp4"  # a PNG under a video's name
    Image.fromarray(clip.to_uint8()[0]).save(image, format="PNG")
    assert isinstance(load_media(image), Picture)
    with pytest.raises(MediaError, match="still image"):
        load_video(image)
    save_video(clip, tmp_path / "frames")
    assert load_media(tmp_path / "frames").num_frames == 3
    (tmp_path / "notes.txt").write_text("hello\n" * 100)
    with pytest.raises(MediaError, match="neither an image nor a video"):
        load_media(tmp_path / "notes.txt")
    with pytest.raises(MediaError, match="no such file"):
        load_media(tmp_path / "missing.y4m")
    if shutil.which("ffmpeg") or _has_av():
        mp4 = tmp_path / "clip.mp4"
        save_video(clip, mp4)
        renamed = tmp_path / "clip.dat"
        renamed.write_bytes(mp4.read_bytes())
        assert load_media(renamed).num_frames == 3


def _has_av():
    try:
        import av  # noqa: F401

        return True
    except ImportError:
        return False


# ---- synthetic camera moves


def test_camera_moves_are_deterministic_and_bounded():
    photo = smooth_photo()
    for kind in CAMERA_MOVES:
        a = camera_move(photo, 5, kind, size=(64, 48))
        b = camera_move(photo, 5, kind, size=(64, 48))
        assert a.frames.shape == (5, 48, 64, 3) and a.fps == (25, 1)
        np.testing.assert_array_equal(a.frames, b.frames)
        assert a.frames.min() >= 0 and a.frames.max() <= 1
        assert not np.array_equal(a.frames[0], a.frames[-1])
    still = camera_move(photo, 4, "zoom-in", size=(64, 48), strength=0.0)
    assert all(np.array_equal(f, still.frames[0]) for f in still.frames)


def test_pan_moves_whole_pixels():
    photo = smooth_photo(96, 160)
    clip = camera_move(photo, 5, "pan", size=(120, 96))  # 40 pixels of travel over 4 steps
    np.testing.assert_array_equal(clip.frames[0], photo[:, :120])
    for a, b in zip(clip.frames[:-1], clip.frames[1:]):
        np.testing.assert_array_equal(b[:, :-10], a[:, 10:])
    with pytest.raises(MediaError, match="does not fit"):
        camera_move(photo, 3, "pan", size=(200, 96))
    with pytest.raises(MediaError, match="not one of"):
        camera_move(photo, 3, "dolly")
