import shutil

import numpy as np
import pytest

from vov.bench import baselines, image_baselines, metrics


def photo(h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([120 + 70 * np.sin(x / 6) * np.cos(y / 9), 110 + 60 * np.cos(y / 4), 90 + 1.5 * x], -1)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def available(name):
    codec = image_baselines.get(name)
    missing = [t for t in codec.tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian package {codec.package})")
    return codec


@pytest.mark.parametrize("name", list(image_baselines.REGISTRY))
@pytest.mark.parametrize("shape", [(48, 64), (37, 53)])
def test_round_trip(name, shape):
    codec = available(name)
    img = photo(*shape)
    best = codec.qmax if codec.higher_is_larger else codec.qmin
    worst = codec.qmin if codec.higher_is_larger else codec.qmax
    fine, coarse = codec.encode(img, best), codec.encode(img, worst)
    assert len(coarse) < len(fine)
    out = codec.decode(fine, (shape[1], shape[0]))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert metrics.psnr(img, out) > 30
    rough = codec.decode(coarse, (shape[1], shape[0]))
    assert metrics.psnr(img, rough) < metrics.psnr(img, out)
    # no colour shift: full range handled the same way on both sides
    assert np.abs(out.astype(float).mean((0, 1)) - img.astype(float).mean((0, 1))).max() < 2.0


@pytest.mark.parametrize("name", list(image_baselines.REGISTRY))
def test_quality_search_lands_near_the_target(name):
    codec = available(name)
    img = photo(64, 96, seed=3)
    sizes = {}

    def size_at(q):
        if q not in sizes:
            sizes[q] = len(codec.encode(img, q))
        return sizes[q]

    lowest = 8 * min(size_at(codec.qmin), size_at(codec.qmax)) / img[..., 0].size
    target = 2.5 * lowest
    q, reached = baselines.search_quality(size_at, codec, target, img[..., 0].size)
    assert reached
    bpp = 8 * size_at(q) / img[..., 0].size
    assert 0.5 * target < bpp < 2 * target
    assert len(sizes) <= 12  # bisection, not a sweep
    q, reached = baselines.search_quality(size_at, codec, lowest / 10, img[..., 0].size)
    assert not reached


def test_missing_tool_names_the_debian_package(monkeypatch):
    monkeypatch.setattr(image_baselines.shutil, "which", lambda name: None)
    for name, package in (("webp", "webp"), ("avif", "libavif-bin"), ("jxl", "libjxl-tools"), ("x265", "ffmpeg")):
        with pytest.raises(baselines.ToolMissing, match=f"install the Debian package {package}"):
            image_baselines.get(name).check()


def test_unknown_codec():
    from vov.errors import UsageError

    with pytest.raises(UsageError, match="unknown codec 'png'"):
        image_baselines.get("png")
