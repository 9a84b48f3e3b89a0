"""The vov command as a person uses it: exit status 0 on success, 2 with one clear line on bad input."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

GOLDEN = Path(__file__).parent / "golden" / "tiny-v1.vov"
FAST = ["--backbone", "tiny", "--steps", "6", "--sampler-steps", "3", "--dim", "256", "--rank", "2", "-q"]


def vov(*args):
    return subprocess.run([sys.executable, "-m", "vov.cli", *map(str, args)], capture_output=True, text=True)


def assert_clean_error(result, *words):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vov: error: "), result.stderr
    for word in words:
        assert word in lines[0]


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "photo.png"
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 37 * 53).reshape(37, 53)
    arr = np.stack([base, base[::-1], rng.integers(0, 255, (37, 53))], -1).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


@pytest.mark.slow
def test_compress_info_decompress(photo, tmp_path):
    out, png = tmp_path / "x.vov", tmp_path / "y.png"
    r = vov("compress", photo, "-o", out, "--bpp", "3", *FAST)
    assert r.returncode == 0, r.stderr
    assert "bpp" in r.stdout
    r = vov("info", out)
    assert r.returncode == 0 and "53x37" in r.stdout and "rate" in r.stdout
    size_line = next(line for line in r.stdout.splitlines() if line.startswith("size"))
    total = int(size_line.split()[1])
    parts = [int(p.split()[-1]) for p in size_line.split("=")[1].split("+")]
    assert total == sum(parts) == out.stat().st_size
    r = vov("decompress", out, "-o", png, "-q")
    assert r.returncode == 0, r.stderr
    assert Image.open(png).size == (53, 37)
    assert not Path(f"{out}.partial").exists()


def test_best_of_n_from_the_command_line(photo, tmp_path):
    out, png = tmp_path / "x.vov", tmp_path / "y.png"
    r = vov("compress", photo, "-o", out, "--bpp", "3", "--best-of", "8", "--scaling-steps", "6", "--best-of-tile", "0",
            *FAST)
    assert r.returncode == 0, r.stderr
    assert "best-of-N indices 16 bits" in r.stdout  # 5 searched steps of 3 bits, packed into 2 bytes
    r = vov("info", out)
    assert r.returncode == 0
    assert "N = 8, 5 scaled steps from step 0" in r.stdout and "indices 16 bits in all (3 bits each)" in r.stdout
    r = vov("decompress", out, "-o", png, "-q")
    assert r.returncode == 0 and Image.open(png).size == (53, 37), r.stderr
    assert_clean_error(vov("compress", photo, "-o", out, "--best-of", "3", *FAST), "power of two")


def test_info_golden():
    r = vov("info", GOLDEN)
    assert r.returncode == 0 and "64x48" in r.stdout and "one-vector" in r.stdout


@pytest.mark.parametrize("name", ["tiny-v1", "tiny-v2-best-of-8", "tiny-v2-clip"])
def test_info_parts_add_up_to_the_file(name):
    path = Path(GOLDEN).parent / f"{name}.vov"
    r = vov("info", path)
    assert r.returncode == 0, r.stderr
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("size ")]
    total, parts = line.split(" bytes = ")
    assert int(total.split()[-1]) == path.stat().st_size == sum(int(p.split()[-1]) for p in parts.split(" + "))


def test_missing_input(tmp_path):
    assert_clean_error(vov("compress", tmp_path / "nope.png", "-o", tmp_path / "x.vov", *FAST), "no such file")
    assert_clean_error(vov("decompress", tmp_path / "nope.vov", "-o", tmp_path / "x.png"), "no such file")


def test_not_an_image(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    assert_clean_error(vov("compress", bad, "-o", tmp_path / "x.vov", *FAST), "neither an image nor a video")


def test_a_clip_file_with_a_cut_last_payload_is_refused_at_once(tmp_path):
    """The second clip's payload, cut by 4 bytes, is found before the first clip is sampled."""
    import time

    from vov.format import bitstream

    f = bitstream.load((GOLDEN.parent / "tiny-v2-clip.vov").read_bytes())
    f.segments[1].payload = f.segments[1].payload[:-4]
    bad = tmp_path / "cut.vov"
    bad.write_bytes(bitstream.dump(f, check=False))
    start = time.perf_counter()
    r = vov("decompress", bad, "-o", tmp_path / "x.y4m")
    assert time.perf_counter() - start < 5.0
    assert_clean_error(r, "segment 1", "payload")
    assert not (tmp_path / "x.y4m").exists()


def test_corrupt_file(tmp_path):
    data = bytearray(GOLDEN.read_bytes())
    data[30] ^= 0xFF
    bad = tmp_path / "bad.vov"
    bad.write_bytes(bytes(data))
    assert_clean_error(vov("decompress", bad, "-o", tmp_path / "x.png"), "corrupt")
    assert_clean_error(vov("info", bad), "corrupt")
    truncated = tmp_path / "short.vov"
    truncated.write_bytes(GOLDEN.read_bytes()[:20])
    assert_clean_error(vov("decompress", truncated, "-o", tmp_path / "x.png"))


def test_not_a_vov_file(photo, tmp_path):
    assert_clean_error(vov("decompress", photo, "-o", tmp_path / "x.png"), "not a .vov file")


def test_wrong_backbone(tmp_path):
    from vov.format import bitstream

    f = bitstream.load(GOLDEN.read_bytes())
    f.backbone_hash = b"\x00" * 8
    other = tmp_path / "other.vov"
    other.write_bytes(bitstream.dump(f))
    assert_clean_error(vov("decompress", other, "-o", tmp_path / "x.png"), "backbone")


def test_rate_too_low_for_tiny_image(photo, tmp_path):
    assert_clean_error(vov("compress", photo, "-o", tmp_path / "x.vov", "--bpp", "0.01", *FAST), "too low",
                       "smallest rate that works")


@pytest.mark.slow
def test_the_default_rate_adapts_to_a_small_image_and_says_so(photo, tmp_path):
    out = tmp_path / "x.vov"
    r = vov("compress", photo, "-o", out, *FAST)
    assert r.returncode == 0, r.stderr
    assert "vov: note: the default 0.05 bpp is too low" in r.stderr
    stated = float(r.stderr.split("using ")[1].split(" bpp")[0])
    assert 8 * out.stat().st_size / (37 * 53) <= stated


def test_the_output_is_checked_before_any_work(photo, tmp_path):
    assert_clean_error(vov("compress", photo, "-o", tmp_path / "missing" / "x.vov", "--bpp", "3", *FAST), "does not exist")
    assert_clean_error(vov("decompress", GOLDEN, "-o", tmp_path), "is a directory")


def test_decode_limits_from_flags_and_environment(tmp_path):
    assert_clean_error(vov("decompress", GOLDEN, "-o", tmp_path / "y.png", "--max-sampler-steps", "2"),
                       "sampler steps", "VOV_MAX_SAMPLER_STEPS")
    r = subprocess.run([sys.executable, "-m", "vov.cli", "decompress", str(GOLDEN), "-o", str(tmp_path / "y.png")],
                       capture_output=True, text=True, env={**__import__("os").environ, "VOV_MAX_PIXELS": "100"})
    assert_clean_error(r, "pixels a frame")


def test_unknown_backbone(photo, tmp_path):
    r = vov("compress", photo, "-o", tmp_path / "x.vov", "--backbone", "giant", "--steps", "2", "--bpp", "3")
    assert_clean_error(r, "unknown backbone")


def test_bad_option_values(photo, tmp_path):
    r = vov("compress", photo, "-o", tmp_path / "x.vov", "--steps", "0")
    assert r.returncode == 2 and "must be a positive" in r.stderr
    r = vov("compress", photo, "-o", tmp_path / "x.vov", "--bpp", "inf")
    assert r.returncode == 2 and "must be a positive finite" in r.stderr
    assert_clean_error(vov("compress", photo, "-o", tmp_path / "x.vov", "--seed", str(2**64 - 1), *FAST), "seed")
    assert_clean_error(vov("compress", photo, "-o", tmp_path / "x.vov", "--targets", "(", "--bpp", "3", *FAST), "target")
    assert_clean_error(vov("compress", photo, "-o", tmp_path / "x.vov", "--draws", "65", *FAST), "noise draws", "64")
    r = vov("compress", photo, "-o", tmp_path / "x.vov", "--draws", "0")
    assert r.returncode == 2 and "must be a positive" in r.stderr


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory):
    from vov.backbones import testing

    root = tmp_path_factory.mktemp("models")
    return {"wan": testing.write_wan_folder(root / "wan"), "image": testing.write_qwen_image_folder(root / "image")}


@pytest.mark.slow
@pytest.mark.parametrize("backbone,source", [("wan", "clip.y4m"), ("image", "photo.png")])
def test_foundation_backbones_from_a_folder_round_trip_identically_twice(backbone, source, model_folders, photo, tmp_path):
    """The same loading path as a downloaded model: a diffusers folder given with --model."""
    from vov.media import Clip, save_video

    if source == "clip.y4m":
        f, y, x = np.mgrid[0:9, 0:32, 0:48].astype(np.float32)
        clip = Clip(np.stack([(x + 2 * f) % 48 / 48, y / 32, 0.5 + 0.3 * np.sin((x - f) / 5)], -1).astype(np.float32),
                    fps=(24, 1))
        src = tmp_path / source
        save_video(clip, src)
        out_names = ("a.y4m", "b.y4m")
    else:
        src, out_names = photo, ("a.png", "b.png")
    model = str(model_folders[backbone])
    files = []
    for name in ("a.vov", "b.vov"):
        r = vov("compress", src, "-o", tmp_path / name, "--backbone", backbone, "--model", model, "--caption",
                "a slow drift of colour", "--steps", "4", "--sampler-steps", "3", "--bpp", "4", "-q")
        assert r.returncode == 0, r.stderr
        files.append((tmp_path / name).read_bytes())
    assert files[0] == files[1]
    outputs = []
    for out in out_names:
        r = vov("decompress", tmp_path / "a.vov", "-o", tmp_path / out, "--model", model, "-q")
        assert r.returncode == 0, r.stderr
        outputs.append((tmp_path / out).read_bytes())
    assert outputs[0] == outputs[1]
    r = vov("info", tmp_path / "a.vov")
    assert f"backbone    {backbone}" in r.stdout and "caption     a slow drift of colour" in r.stdout
    assert_clean_error(vov("compress", src, "-o", tmp_path / "c.vov", "--backbone", backbone, "--model",
                           str(tmp_path / "missing"), "-q"), "no such folder")
