"""The benchmark on still images: vov and classical image codecs (`image_baselines`) at matched rates.

The loop, the cache and the quality search are `runner.Runner`'s; this module says what an image
item is and how it is coded and measured. Metrics (`metrics.MetricSuite`: PSNR on RGB, MS-SSIM,
GMSD, and LPIPS / DISTS when their weights are given) compare the decoded image with the 8-bit
original every codec receives. The decoded image is cached as PNG, so metrics added later (LPIPS
weights given on a rerun, say) are computed from it without coding again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import dataclass, field

import numpy as np

from vov.backbones import DEFAULT_BACKBONE
from vov.bench.runner import DEFAULT_POINTS, Cache, Runner, unique_name
from vov.errors import UsageError
from vov.files import read_bytes


@dataclass
class BenchConfig:
    images: list[str]
    out: str
    rates: list[float] = field(default_factory=lambda: list(DEFAULT_POINTS))
    codecs: list[str] = field(default_factory=lambda: ["vov", "jpeg", "webp", "avif", "jxl", "x265"])
    points: list[float] = field(default_factory=lambda: list(DEFAULT_POINTS))
    steps: int = 1200
    sampler_steps: int = 50
    backbone: str = DEFAULT_BACKBONE
    seed: int = 0
    cache: str | None = None
    lpips_weights: str | None = None
    lpips_net: str = "alex"
    dists_weights: str | None = None
    quiet: bool = False
    report: bool = True


@dataclass
class Item:
    """One input image."""

    path: str
    name: str
    digest: str  # sha256 of the file's bytes
    original: np.ndarray  # uint8 RGB, what every codec receives and every metric compares to
    picture: object  # vov.media.Picture, what vov receives

    @property
    def media(self):
        return self.picture

    @property
    def pixels(self) -> int:
        return self.original.shape[0] * self.original.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        return self.original.shape[1], self.original.shape[0]


class PictureCache(Cache):
    """Decoded images as `points/KEY.png`."""

    MEDIA = ".png"

    def decoded(self, key: str) -> np.ndarray:
        from PIL import Image

        with Image.open(self.path(key, ".png")) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()

    def _write_decoded(self, key: str, decoded: np.ndarray) -> None:
        from PIL import Image

        tmp = self.path(key, ".png.tmp")
        Image.fromarray(decoded).save(tmp, format="PNG")
        os.replace(tmp, self.path(key, ".png"))


def load_items(paths: list[str]) -> list[Item]:
    from vov.media import load_image

    if not paths:
        raise UsageError("give at least one image")
    items, names = [], set()
    for path in paths:
        raw = read_bytes(path)
        picture = load_image(path)
        name = unique_name(path, names, "image")
        items.append(Item(path, name, hashlib.sha256(raw).hexdigest(), picture.to_uint8_rgb(), picture))
    return items


class ImageRunner(Runner):
    kind, noun = "image", "image"

    def __init__(self, config: BenchConfig):
        from vov.bench.metrics import MetricSuite

        super().__init__(config)
        self.items = load_items(config.images)
        self.metrics = MetricSuite(config.lpips_weights, config.dists_weights, config.lpips_net)
        self.cache = PictureCache(config.cache or os.path.join(config.out, "cache"))

    @property
    def metric_names(self) -> list[str]:
        return self.metrics.names

    def make_baseline(self, name: str):
        from vov.bench import image_baselines

        return image_baselines.get(name)

    def vov_options(self, rate: float):
        from vov.method.adapters import AdapterSpec
        from vov.method.fit import FitConfig
        from vov.options import EncodeOptions

        c = self.config
        return EncodeOptions(backbone=c.backbone, adapter=AdapterSpec(seed=c.seed),
                             fit=FitConfig(steps=c.steps, seed=c.seed), target_bpp=rate,
                             sampler_steps=c.sampler_steps, noise_seed=c.seed)

    def vov_description(self) -> str:
        c = self.config
        return f"vov, backbone {c.backbone}, {c.steps} fitting steps, {c.sampler_steps} sampler steps, seed {c.seed}"

    def _vov_measured(self, item: Item, report, the_plan, fit_s):
        from vov import codec
        from vov.bench.metrics import as_uint8

        start = time.perf_counter()
        decoded = codec.decompress(report.data, backbone=self.backbone)
        decode_s = time.perf_counter() - start
        out = as_uint8(decoded.pixels)
        return {"decode_s": decode_s, "params": {"d": report.d},
                "metrics": self.metrics.compute(item.original, out)}, out

    def _baseline_encoder(self, item: Item, codec):
        def encode(quality: int) -> tuple[bytes, float]:
            start = time.perf_counter()
            data = codec.encode(item.original, quality)
            return data, time.perf_counter() - start

        return contextlib.nullcontext(encode)

    def _baseline_measured(self, item: Item, codec, data: bytes):
        start = time.perf_counter()
        out = codec.decode(data, item.size)
        decode_s = time.perf_counter() - start
        if out.shape != item.original.shape:
            raise UsageError(f"{codec.label} decoded {item.name} to {out.shape[1]}x{out.shape[0]}, "
                             f"not {item.size[0]}x{item.size[1]}")
        return {"decode_s": decode_s, "metrics": self.metrics.compute(item.original, out)}, out

    def _complete(self, record: dict, key: str, item: Item) -> None:
        missing = [m for m in self.metrics.names if m not in record.get("metrics", {})]
        if missing:
            record["metrics"].update(self.metrics.compute(item.original, self.cache.decoded(key), only=missing))
            self.cache.store(key, record)
