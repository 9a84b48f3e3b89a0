import numpy as np
import pytest

from vov.bench import video_baselines as vb
from vov.bench.baselines import ToolMissing
from vov.bench.runner import one_thread
from vov.media import camera_move, save_video
from vov.media.colour import YCbCrFormat, rgb_to_ycbcr, ycbcr_to_rgb
from vov.media.y4m import read_y4m


@pytest.fixture(autouse=True)
def one_torch_thread():
    """MS-SSIM on tiny frames is fastest on one thread (two spin against each other on a busy machine)."""
    with one_thread():
        yield


def photo(h=72, w=96):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([0.5 + 0.35 * np.sin(x / 7) * np.cos(y / 11), 0.5 + 0.3 * np.cos(y / 5), 0.2 + 0.6 * x / w], -1)
    return np.clip(img + np.random.default_rng(0).normal(0, 0.03, img.shape), 0, 1).astype(np.float32)


def tiny_clip(size=(64, 48), frames=5):
    return camera_move(photo(), frames, "mixed", size=size, fps=(30000, 1001))


def available(name):
    codec = vb.get(name)
    try:
        codec.check()
    except ToolMissing as e:
        pytest.skip(str(e))
    return codec


@pytest.mark.parametrize("name", list(vb.REGISTRY))
def test_each_encoder_lands_near_a_target(name):
    codec = available(name)
    clip = tiny_clip()
    sizes = {codec.qmax: len(codec.encode(clip, codec.qmax))}  # the smallest stream it makes
    target = 3 * 8 * sizes[codec.qmax] / clip.pixels
    point = vb.run_point(codec, clip, target, sizes=sizes)
    assert point.reached and 0.6 * target < point.bpp < 1.6 * target
    assert point.bytes == sizes[point.quality] and point.bpp == 8 * point.bytes / clip.pixels
    assert len(point.tried) <= 10  # a bisection, not a sweep
    decoded = point.decoded
    assert decoded.frames.shape == clip.frames.shape and decoded.fps == clip.fps
    assert 15 < point.metrics["psnr-rgb"] < 60 and 0.3 < point.metrics["ms-ssim"] <= 1
    assert len(point.metrics["psnr-rgb-frames"]) == clip.num_frames
    assert point.metrics["psnr-rgb"] == pytest.approx(np.mean(point.metrics["psnr-rgb-frames"]))
    assert point.record()["metrics"] is point.metrics


def test_odd_sizes_come_back_cropped():
    codec = available("x264")
    clip = tiny_clip(size=(37, 29), frames=3)
    out = codec.decode(codec.encode(clip, 20), clip)
    assert out.frames.shape == (3, 29, 37, 3)


def test_lossless_x264_returns_the_source_samples(tmp_path):
    """CRF 0 is lossless in x264: a clip read from 4:2:0 Y4M comes back exactly, so the colour path
    into and out of the encoders adds nothing of its own."""
    codec = available("x264")
    path = tmp_path / "src.y4m"
    save_video(tiny_clip(frames=3), path, chroma="420", range="limited")
    clip = read_y4m(path)
    out = codec.decode(codec.encode(clip, 0), clip)
    np.testing.assert_array_equal(out.frames, clip.frames)
    assert vb.measure(clip, out)["psnr-rgb"] == 100.0


def test_vvc_takes_ten_bit_input():
    codec = available("vvc")
    clip = tiny_clip(frames=2)
    out = codec.decode(codec.encode(clip, 20), clip)
    assert out.bits == 10 and out.frames.shape == clip.frames.shape
    fmt = YCbCrFormat(clip.matrix, clip.range, "420", 10)
    reference = np.stack([ycbcr_to_rgb(rgb_to_ycbcr(f, fmt), fmt) for f in clip.frames])
    assert vb.measure(clip.with_frames(reference), out)["psnr-rgb"] > 30


def test_measure_is_per_frame_then_mean():
    clip = tiny_clip(frames=3)
    noisy = clip.frames.copy()
    noisy[1] = np.clip(noisy[1] + 0.05, 0, 1)
    result = vb.measure(clip, clip.with_frames(noisy))
    assert result["psnr-rgb-frames"][0] == 100.0 and result["psnr-rgb-frames"][1] < 40
    assert result["psnr-rgb"] == pytest.approx(np.mean(result["psnr-rgb-frames"]))
    assert result["ms-ssim-frames"][0] == pytest.approx(1.0)


def test_missing_encoders_say_why(monkeypatch):
    monkeypatch.setattr(vb, "ffmpeg_exe", lambda: None)
    reasons = vb.availability()
    assert all("needs ffmpeg" in reason for reason in reasons.values())
    monkeypatch.setattr(vb, "ffmpeg_exe", lambda: "/usr/bin/true")
    monkeypatch.setattr(vb, "ffmpeg_encoders", lambda exe: frozenset({"libx264"}))
    monkeypatch.setattr(vb, "ffmpeg_version", lambda exe: "ffmpeg version test")
    reasons = vb.availability()
    assert reasons["x264"] is None
    assert "libvvenc" in reasons["vvc"] and "built without" in reasons["vvc"]
    with pytest.raises(Exception, match="unknown video codec"):
        vb.get("mpeg2")
