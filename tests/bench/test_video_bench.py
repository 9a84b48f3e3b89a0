"""The video benchmark: vov and the video baselines on tiny synthetic clips, the JSON, the report."""

import base64
import io
import json
import time
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

from vov.bench import report, video_runner
from vov.bench.baselines import ToolMissing
from vov.bench.runner import one_thread
from vov.cli import main
from vov.media import camera_move, save_video


@pytest.fixture(autouse=True)
def one_torch_thread():
    """MS-SSIM on tiny frames is fastest on one thread."""
    with one_thread():
        yield


def photo(h=72, w=96, seed=0):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([0.5 + 0.35 * np.sin(x / (7 + seed)) * np.cos(y / 11), 0.5 + 0.3 * np.cos(y / 5),
                    0.2 + 0.6 * x / w], -1)
    return np.clip(img + np.random.default_rng(seed).normal(0, 0.03, img.shape), 0, 1).astype(np.float32)


def write_clip(path, frames, kind="pan", seed=0, size=(48, 32)):
    save_video(camera_move(photo(seed=seed), frames, kind, size=size), str(path), chroma="420", range="limited")
    return str(path)


def need(*names):
    from vov.bench import video_baselines

    for name in names:
        try:
            video_baselines.get(name).check()
        except ToolMissing as e:
            pytest.skip(str(e))


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags_of(path):
    parser = Collect()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.tags


def image_of(uri):
    head, body = uri.split(",", 1)
    assert head in ("data:image/png;base64", "data:image/webp;base64")
    img = Image.open(io.BytesIO(base64.b64decode(body)))
    assert img.format == head.split("/")[1].split(";")[0].upper()
    return img


@pytest.fixture(scope="module")
def vov_run(tmp_path_factory):
    """One run with vov: a 20-frame clip on the tiny backbone (clips of 17 and 3 frames) and x264."""
    need("x264")
    root = tmp_path_factory.mktemp("vbench")
    video = write_clip(root / "zoom.y4m", 20, "zoom-in")
    out = root / "out"
    argv = ["bench", video, "-o", str(out), "--rates", "2", "--codecs", "vov,x264", "--backbone", "tiny",
            "--steps", "3", "--sampler-steps", "2", "-q"]
    assert main(argv) == 0
    return argv, out


def test_vov_points_carry_clips_times_and_frames(vov_run):
    _, out = vov_run
    points = json.loads((out / "per_clip.json").read_text())["points"]
    vov = next(p for p in points if p["codec"] == "vov")
    assert vov["clip"] == "zoom" and vov["reached"]
    assert vov["bpp"] == pytest.approx(8 * vov["bytes"] / (20 * 48 * 32))
    assert [s["frames"] for s in vov["segments"]] == [17, 3]  # a short last clip, never padded into the count
    assert sum(s["bytes"] for s in vov["segments"]) < vov["bytes"]  # the header counts too
    assert 0 < vov["first_frame_s"] <= vov["segments"][1]["decoded_at_s"] == vov["decode_s"]
    assert vov["encode_s"] >= sum(s["fit_s"] for s in vov["segments"]) * 0.99
    m = vov["metrics"]
    assert len(m["psnr-rgb-frames"]) == len(m["ms-ssim-frames"]) == 20
    assert m["psnr-rgb"] == pytest.approx(np.mean(m["psnr-rgb-frames"]))
    # x264 once at the target and once at the size vov reached
    x264 = [p for p in points if p["codec"] == "x264"]
    assert {p["role"] for p in x264} == {"target", "vov-match"}
    match = next(p for p in x264 if p["role"] == "vov-match")
    assert match["matched_bpp"] == vov["bpp"] and match["first_frame_s"] > 0


def test_video_json_is_compressai_style(vov_run):
    _, out = vov_run
    data = json.loads((out / "x264.json").read_text())
    assert data["name"] == "H.264 (x264)" and "per frame" in data["averaging"]
    r = data["results"]
    for key in ("bpp", "psnr-rgb", "ms-ssim", "encode-s", "decode-s", "first-frame-s", "reached"):
        assert len(r[key]) == 1
    vov = json.loads((out / "vov.json").read_text())
    assert "3 fitting steps per clip" in vov["description"] and "warm start off" in vov["description"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clips"][0]["frames"] == 20 and summary["clips"][0]["fps"] == [25, 1]
    assert "FVD" in summary["not_measured"] and "RGB" in summary["averaging"]
    (row,) = summary["matched"]
    assert [e["codec"] for e in row["entries"]] == ["vov", "x264"]
    assert (out / "summary.txt").read_text().startswith("vov bench (video)")


def test_video_report_structure(vov_run):
    _, out = vov_run
    tags = tags_of(out / "report.html")
    ids = {a.get("id") for t, a in tags if t == "section"}
    assert {"setup", "rd", "matched", "bd", "timing", "clips", "summary"} <= ids
    (player,) = [a for t, a in tags if t == "div" and a.get("class") == "player"]
    assert player["data-frames"] == "20" and player["data-fps"] == "25"
    assert json.loads(player["data-names"]) == ["vov", "H.264 (x264)"]
    strips = [a for t, a in tags if t == "img" and a.get("alt") in ("original", "vov", "H.264 (x264)")]
    assert [a["alt"] for a in strips] == ["original", "vov", "H.264 (x264)"]
    for a in strips:
        assert image_of(a["src"]).size == (48, 32 * 20)  # every frame, stacked
    sliders = [a for t, a in tags if t == "input" and a.get("class") == "frame"]
    assert sliders == [{"class": "frame", "type": "range", "min": "0", "max": "19", "value": "0", "step": "1"}]


def test_a_rerun_takes_every_point_from_the_cache(vov_run, monkeypatch):
    argv, out = vov_run
    from vov import codec
    from vov.bench import video_baselines

    def boom(*args, **kwargs):
        raise AssertionError("recomputed a cached point")

    monkeypatch.setattr(codec, "compress", boom)
    monkeypatch.setattr(video_baselines.VideoCodec, "encode", boom)
    before = json.loads((out / "vov.json").read_text())
    assert main(argv) == 0
    assert json.loads((out / "vov.json").read_text())["results"]["bpp"] == before["results"]["bpp"]


def test_video_report_renders_in_chromium(vov_run, tmp_path):
    if report.find_chromium() is None:
        pytest.skip("Chromium is not installed (Debian package chromium)")
    _, out = vov_run
    shot = report.screenshot(str(out / "report.html"), str(tmp_path / "shot.png"), height=1400)
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert img.shape == (1400, 1200)
    assert img.std() > 10


def test_time_to_first_frame_is_the_first_clip(monkeypatch):
    """Measured at decode_clips' first yield, not at its end."""
    from vov import codec
    from vov.codec import DecodedClip

    def slow_clips(data, backbone=None):
        for i, pause in enumerate((0.15, 0.4)):
            time.sleep(pause)
            yield DecodedClip(i, np.full((2, 4, 4, 3), i, np.float32))

    monkeypatch.setattr(codec, "decode_clips", slow_clips)
    frames, yielded = video_runner.timed_decode(b"", None)
    assert frames.shape == (4, 4, 4, 3) and frames[2:].min() == 1
    assert 0.15 <= yielded[0] < 0.4 and yielded[1] >= 0.55


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # two windows a side: a singular covariance, as expected
def test_baselines_on_several_videos_and_fvd(tmp_path):
    """Two videos, x264 only; FVD over their windows with random I3D weights (the code path)."""
    need("x264")
    from safetensors.torch import save_file

    from vov.bench.fvd import I3D

    torch.manual_seed(0)
    weights = tmp_path / "i3d.safetensors"
    save_file({k: v.contiguous() for k, v in I3D().state_dict().items()}, str(weights))
    videos = [write_clip(tmp_path / "a.y4m", 9, "pan", 0), write_clip(tmp_path / "b.y4m", 10, "rotate", 1)]
    config = video_runner.VideoBenchConfig(videos=videos, out=str(tmp_path / "out"), rates=[0.3, 1.5],
                                           codecs=["x264"], points=[0.5], fvd_weights=str(weights), quiet=True,
                                           report=False)
    result = video_runner.VideoRunner(config).run()
    r = result["curves"]["x264"]["results"]
    assert r["clips"] == [2, 2] and r["bpp"][0] < r["bpp"][1]
    assert r["psnr-rgb"][0] < r["psnr-rgb"][1]
    assert all(v is not None and v >= 0 for v in r["fvd"])
    points = json.loads((tmp_path / "out" / "per_clip.json").read_text())["points"]
    assert sorted(p["clip"] for p in points) == ["a", "a", "b", "b"]
    for p in points:
        assert p["decode_s"] > 0 and p["first_frame_s"] > 0


def test_fvd_weights_missing_is_one_line(tmp_path, capsys):
    video = write_clip(tmp_path / "a.y4m", 9)
    argv = ["bench", video, "-o", str(tmp_path / "out"), "--codecs", "x264", "--fvd-weights", "/missing/i3d.pt"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vov: error: FVD") and "/missing/i3d.pt not found" in err[0]


def test_routing_videos_frames_and_images(tmp_path, capsys):
    video = write_clip(tmp_path / "a.y4m", 9)
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "still.png")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 48, 3), 40 * i, np.uint8)).save(frames / f"{i + 1:04d}.png")
    assert video_runner.is_video(video) and not video_runner.is_video(str(tmp_path / "still.png"))
    cases = [
        ([video, str(tmp_path / "still.png")], "still.png is not a video"),
        ([str(tmp_path / "still.png"), "--codecs", "x264"], "x264 codes videos"),
        ([str(tmp_path / "still.png"), "--warm-start"], "--warm-start applies to videos"),
        ([video, "--codecs", "jpeg"], "'jpeg' is not a video codec"),
        ([str(frames), video, "--video", "--codecs", "x264", "--lpips-weights", "x.pth"], "--lpips-weights measures"),
    ]
    for args, message in cases:
        assert main(["bench", *args, "-o", str(tmp_path / "out"), "-q"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_a_folder_of_frames_is_a_video_with_the_flag(tmp_path):
    need("x264")
    frames = tmp_path / "frames"
    frames.mkdir()
    clip = camera_move(photo(), 4, "tilt", size=(48, 32)).to_uint8()
    for i, frame in enumerate(clip):
        Image.fromarray(frame).save(frames / f"{i + 1:04d}.png")
    out = tmp_path / "out"
    assert main(["bench", str(frames), "--video", "-o", str(out), "--codecs", "x264", "--rates", "1", "-q",
                 "--no-report"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clips"][0]["frames"] == 4 and summary["clips"][0]["source"]["chroma"] == "444"


def test_fvd_windows():
    frames = np.zeros((40, 8, 8, 3), np.uint8)
    assert [len(w) for w in video_runner.fvd_windows(frames)] == [16, 16]
    assert [len(w) for w in video_runner.fvd_windows(frames[:12])] == [12]
    assert video_runner.fvd_windows(frames[:8]) == []


def test_frame_strips_are_lossless():
    from vov.bench.report import WEBP_MAX_SIDE, strip_uri

    rng = np.random.default_rng(0)
    short = rng.integers(0, 256, (5, 24, 16, 3), dtype=np.uint8)
    tall = rng.integers(0, 256, (WEBP_MAX_SIDE // 100 + 1, 100, 8, 3), dtype=np.uint8)
    for frames, kind in ((short, "WEBP"), (tall, "PNG")):
        img = image_of(strip_uri(frames))
        assert img.format == kind
        assert np.array_equal(np.asarray(img.convert("RGB")), frames.reshape(-1, *frames.shape[2:]))
