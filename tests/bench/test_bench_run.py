import base64
import io
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from vov.bench import image_runner, report
from vov.cli import main


@pytest.fixture
def image_path(tmp_path):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:64].astype(np.float64)
    img = np.stack([120 + 70 * np.sin(x / 6) * np.cos(y / 9), 110 + 60 * np.cos(y / 4), 90 + 1.5 * x], -1)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "test-image.png"
    Image.fromarray(img).save(path)
    return str(path)


class Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(path):
    parser = Collect()
    with open(path, encoding="utf-8") as f:
        parser.feed(f.read())
    return parser.tags


def decode_data_uri(uri):
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def baseline_run(image_path, out, codecs=("jpeg", "webp"), rates=(0.5, 1.0)):
    config = image_runner.BenchConfig(images=[image_path], out=str(out), rates=list(rates), codecs=list(codecs),
                                      points=[0.5, 1.0], quiet=True)
    return image_runner.ImageRunner(config).run()


def test_report_structure(image_path, tmp_path):
    out = tmp_path / "out"
    result = baseline_run(image_path, out)
    tags = parse(out / "report.html")
    ids = {a.get("id") for t, a in tags if t == "section"}
    assert {"setup", "rd", "bd", "fixed", "timing", "images", "summary"} <= ids
    plots = [a for t, a in tags if t == "img" and a.get("class") == "rd"]
    assert len(plots) == len(result["summary"]["metrics"]) == 3
    for a in plots:
        assert decode_data_uri(a["src"]).size[0] > 300
    compares = [a for t, a in tags if t == "div" and a.get("class") == "compare"]
    assert [c["data-rate"] for c in compares] == ["0.5", "1"]
    layers = [a for t, a in tags if t == "img" and a.get("class") in ("base", "layer vov", "layer orig")]
    assert len(layers) == 3 * len(compares)
    for a in layers:
        assert decode_data_uri(a["src"]).size == (64, 48)
    assert any(t == "script" for t, _ in tags)


def test_json_outputs_are_compressai_style(image_path, tmp_path):
    out = tmp_path / "out"
    baseline_run(image_path, out)
    data = json.loads((out / "jpeg.json").read_text())
    assert data["name"] == "JPEG" and data["description"]
    r = data["results"]
    assert len(r["bpp"]) == len(r["psnr-rgb"]) == len(r["ms-ssim"]) == len(r["gmsd"]) == 2
    assert r["bpp"][0] < r["bpp"][1]
    per_image = json.loads((out / "per_image.json").read_text())["points"]
    assert len(per_image) == 4 and {p["codec"] for p in per_image} == {"jpeg", "webp"}
    summary = json.loads((out / "summary.json").read_text())
    assert "per image, then averaged" in summary["averaging"]
    assert "FVD" in summary["not_measured"]
    assert (out / "summary.txt").read_text().startswith("vov bench")


def test_rerun_uses_the_cache(image_path, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = baseline_run(image_path, out)
    from vov.bench import image_baselines

    def boom(*args, **kwargs):
        raise AssertionError("recomputed a cached point")

    monkeypatch.setattr(image_baselines.JPEG, "encode", boom)
    monkeypatch.setattr(image_baselines.WebP, "encode", boom)
    second = baseline_run(image_path, out)
    assert second["curves"]["jpeg"]["results"]["bpp"] == first["curves"]["jpeg"]["results"]["bpp"]


def test_report_renders_in_chromium(image_path, tmp_path):
    if report.find_chromium() is None:
        pytest.skip("Chromium is not installed (Debian package chromium)")
    out = tmp_path / "out"
    baseline_run(image_path, out)
    shot = report.screenshot(str(out / "report.html"), str(tmp_path / "shot.png"), height=1600)
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert img.shape == (1600, 1200)
    assert img.std() > 10  # not a blank page


@pytest.mark.parametrize("argv,message", [
    (["bench", "/nonexistent.png", "-o", "OUT", "--codecs", "jpeg"], "no such file"),
    (["bench", "IMG", "-o", "OUT", "--codecs", "jpeg", "--lpips-weights", "/missing/alex.pth"],
     "alex.pth not found; provide"),
])
def test_bad_input_is_one_line(argv, message, image_path, tmp_path, capsys):
    argv = [a.replace("IMG", image_path).replace("OUT", str(tmp_path / "out")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vov: error:") and message in err[0]


@pytest.mark.parametrize("flag,value", [("--rates", "0.1,abc"), ("--rates", "-1"), ("--codecs", "jpeg,png")])
def test_bad_arguments_are_usage_errors(flag, value, image_path, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", image_path, "-o", str(tmp_path / "o"), flag, value])
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_folder_means_its_images(tmp_path):
    from vov.cli.bench import expand_images
    from vov.errors import UsageError

    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert expand_images([str(tmp_path)]) == [str(tmp_path / "a.jpg"), str(tmp_path / "b.png")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images"):
        expand_images([str(tmp_path / "empty")])


@pytest.mark.slow
def test_end_to_end_with_the_tiny_backbone(image_path, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    argv = ["bench", image_path, "-o", str(out), "--rates", "0.6,1.2", "--codecs", "vov,jpeg,x265",
            "--backbone", "tiny", "--steps", "8", "--sampler-steps", "2", "-q"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "BD-rate of vov" in printed and "report.html" in printed
    vov = json.loads((out / "vov.json").read_text())
    assert vov["name"] == "vov" and len(vov["results"]["bpp"]) == 2
    assert all(b > 0 for b in vov["results"]["bpp"])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["bd_rate"]["values"]) == {"jpeg", "x265"}
    tags = parse(out / "report.html")
    assert len([a for t, a in tags if t == "div" and a.get("class") == "compare"]) == 2
    # the first run already shows vov between the original and the baseline
    assert [a["alt"] for t, a in tags if t == "img" and a.get("class") == "layer vov"] == ["vov", "vov"]
    # a second run computes nothing
    from vov import codec

    def boom(*args, **kwargs):
        raise AssertionError("vov point recomputed")

    monkeypatch.setattr(codec, "compress", boom)
    assert main(argv) == 0
