"""The benchmark: vov and classical codecs on the same images at matched rates.

For every image, codec and target rate it produces one *point*: the file's real size (bpp), the
encode and decode times, and the metrics of the decoded image against the 8-bit original. vov is
given the target as the rate of the whole file (`EncodeOptions.target_bpp`, as `vov compress --bpp`
and the encoder service); each baseline's quality knob is bisected for the file nearest the
target bpp (in log rate). A baseline that cannot get that low (or high) on an image keeps its
nearest setting and the point is marked not reached.

Points are cached on disk under a key that hashes the image's bytes, the codec, its parameters and
the codec's version (for vov: package version, a hash of the codec's sources, the backbone's name
and content hash), so a rerun computes only what is missing. Metrics added later (LPIPS weights
given on a rerun, say) are computed from the cached decoded image.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from vov.backbones import DEFAULT_BACKBONE
from vov.errors import UsageError
from vov.files import read_bytes, write_atomic

DEFAULT_POINTS = (0.02, 0.05, 0.1)
CORE_MODULES = ("codec", "limits", "method.fit", "method.adapters", "method.sampler", "method.noise", "method.scheduler",
                "method.scaling", "format.entropy", "format.bitstream", "media.image", "media.shape", "media.bounds",
                "media.colour", "media.clip", "media.writer", "media.y4m", "media.pyav", "media.png_frames",
                "media.video")


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
    def pixels(self) -> int:
        return self.original.shape[0] * self.original.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        return self.original.shape[1], self.original.shape[0]


def _sha(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True).encode())
        h.update(b"\0")
    return h.hexdigest()


def _core_source_hash() -> str:
    import importlib.util

    h = hashlib.sha256()
    for module in CORE_MODULES:
        spec = importlib.util.find_spec(f"vov.{module}")
        if spec and spec.origin and os.path.isfile(spec.origin):
            with open(spec.origin, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


def _vov_version() -> str:
    try:
        from importlib.metadata import version

        return version("vov")
    except Exception:
        return "unknown"


class Cache:
    """Points and baseline trial sizes on disk: `points/KEY.json` (+ `.png` decoded, `.bin` file)."""

    def __init__(self, root: str):
        self.root = root
        try:
            os.makedirs(os.path.join(root, "points"), exist_ok=True)
            os.makedirs(os.path.join(root, "sizes"), exist_ok=True)
        except OSError as e:
            raise UsageError(f"{root}: cannot create the cache folder ({e.strerror or e})") from None

    def path(self, key: str, ext: str) -> str:
        return os.path.join(self.root, "points", f"{key}{ext}")

    def load(self, key: str) -> dict | None:
        path = self.path(key, ".json")
        png = self.path(key, ".png")
        if not (os.path.isfile(path) and os.path.isfile(png)):
            return None
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None  # a damaged entry is recomputed

    def decoded(self, key: str) -> np.ndarray:
        from PIL import Image

        with Image.open(self.path(key, ".png")) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()

    def store(self, key: str, record: dict, decoded: np.ndarray | None = None, data: bytes | None = None) -> None:
        from PIL import Image

        if decoded is not None:
            tmp = self.path(key, ".png.tmp")
            Image.fromarray(decoded).save(tmp, format="PNG")
            os.replace(tmp, self.path(key, ".png"))
        if data is not None:
            write_atomic(self.path(key, ".bin"), data)
        write_atomic(self.path(key, ".json"), json.dumps(record, indent=1).encode())

    def sizes(self, key: str) -> dict[str, int]:
        path = os.path.join(self.root, "sizes", f"{key}.json")
        try:
            with open(path) as f:
                return {k: int(v) for k, v in json.load(f).items()}
        except (OSError, ValueError):
            return {}

    def store_sizes(self, key: str, sizes: dict[str, int]) -> None:
        write_atomic(os.path.join(self.root, "sizes", f"{key}.json"), json.dumps(sizes).encode())


def load_items(paths: list[str]) -> list[Item]:
    from vov.media import load_image

    if not paths:
        raise UsageError("give at least one image")
    items, names = [], set()
    for path in paths:
        raw = read_bytes(path)
        picture = load_image(path)
        base = os.path.splitext(os.path.basename(path))[0] or "image"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.add(name)
        items.append(Item(path, name, hashlib.sha256(raw).hexdigest(), picture.to_uint8_rgb(), picture))
    return items


class Runner:
    def __init__(self, config: BenchConfig):
        from vov.bench import baselines
        from vov.bench.metrics import MetricSuite

        self.config = config
        self._validate()
        self.baselines = {}
        for name in config.codecs:
            if name != "vov":
                self.baselines[name] = baselines.get(name)
        missing = []
        for codec in self.baselines.values():
            try:
                codec.check()
            except baselines.ToolMissing as e:
                missing.append(str(e))
        if missing:
            raise baselines.ToolMissing("; ".join(missing))
        self.items = load_items(config.images)
        self.metrics = MetricSuite(config.lpips_weights, config.dists_weights, config.lpips_net)
        self.cache = Cache(config.cache or os.path.join(config.out, "cache"))
        self.backbone = None
        self._vov_identity = None
        self.notes: list[str] = []

    def _validate(self) -> None:
        c = self.config
        if not c.rates:
            raise UsageError("--rates needs at least one rate")
        if any(not (r > 0 and math.isfinite(r)) for r in c.rates):
            raise UsageError("--rates must be positive numbers of bits per pixel")
        if not c.codecs:
            raise UsageError("--codecs needs at least one codec")
        if len(set(c.codecs)) != len(c.codecs):
            raise UsageError("--codecs names a codec twice")
        if c.steps < 1 or c.sampler_steps < 1:
            raise UsageError("--steps and --sampler-steps must be positive")

    # ---- vov

    def _vov_setup(self):
        if self.backbone is None:
            from vov.codec import get_backbone

            self.backbone = get_backbone(self.config.backbone)
            self._vov_identity = {
                "codec": "vov", "version": _vov_version(), "sources": _core_source_hash(),
                "backbone": self.backbone.name, "backbone_hash": self.backbone.content_hash.hex(),
                "steps": self.config.steps, "sampler_steps": self.config.sampler_steps, "seed": self.config.seed,
            }
        return self.backbone

    def _vov_point(self, item: Item, rate: float, bar_position: int) -> dict:
        backbone = self._vov_setup()
        key = _sha(item.digest.encode(), self._vov_identity, {"target_bpp": rate})
        record = self._cached(key, item)
        if record is not None:
            return record
        from tqdm import tqdm

        from vov import codec
        from vov.method.adapters import AdapterSpec
        from vov.method.fit import FitConfig
        from vov.options import rate_note

        base = {"image": item.name, "codec": "vov", "target_bpp": rate, "params": {}}
        options = codec.EncodeOptions(backbone=self.config.backbone, adapter=AdapterSpec(seed=self.config.seed),
                                      fit=FitConfig(steps=self.config.steps, seed=self.config.seed), target_bpp=rate,
                                      sampler_steps=self.config.sampler_steps, noise_seed=self.config.seed)
        try:
            the_plan = codec.plan(item.picture, options, backbone)
        except UsageError as e:
            return {**base, "reached": False, "skipped": str(e)}
        bar = tqdm(total=self.config.steps, desc=f"  vov fit {item.name} @{rate:g}", unit="step", leave=False,
                   position=bar_position, disable=self.config.quiet, dynamic_ncols=True)

        def progress(p) -> None:
            bar.n = p.step
            bar.refresh() if p.step % 10 == 0 else None

        try:
            report = codec.compress(item.picture, options, backbone=backbone, on_progress=progress,
                                    checkpoint=self.cache.path(key, ".partial"), planned=the_plan)
        finally:
            bar.close()
        start = time.perf_counter()
        decoded = codec.decompress(report.data, backbone=backbone)
        decode_s = time.perf_counter() - start
        from vov.bench.metrics import as_uint8

        out = as_uint8(decoded.pixels)
        record = {**base, "reached": True, "bytes": len(report.data), "bpp": 8 * len(report.data) / item.pixels,
                  "encode_s": report.seconds, "decode_s": decode_s, "params": {**base["params"], "d": report.d},
                  "metrics": self.metrics.compute(item.original, out)}
        missed = rate_note(rate, record["bpp"], report.d)
        if missed:  # in the record, and said once as the point is made
            record["note"] = missed
            tqdm.write(f"vov bench: note: {item.name} @{rate:g} bpp: {missed}", file=sys.stderr)
        self.cache.store(key, record, out, report.data)
        return record

    # ---- baselines

    def _baseline_point(self, item: Item, name: str, rate: float) -> dict:
        from vov.bench.baselines import search_quality

        codec = self.baselines[name]
        size_key = _sha(item.digest.encode(), {"codec": name, "version": codec.version})
        sizes = self.cache.sizes(size_key)
        made: dict[int, tuple[bytes, float]] = {}

        def size_at(q: int) -> int:
            if str(q) not in sizes:
                start = time.perf_counter()
                data = codec.encode(item.original, q)
                made[q] = (data, time.perf_counter() - start)
                sizes[str(q)] = len(data)
                self.cache.store_sizes(size_key, sizes)
            return sizes[str(q)]

        quality, reached = search_quality(size_at, codec, rate, item.pixels)
        key = _sha(item.digest.encode(), {"codec": name, "version": codec.version, "quality": quality})
        record = self._cached(key, item)
        if record is None:
            if quality in made:
                data, encode_s = made[quality]
            else:
                start = time.perf_counter()
                data = codec.encode(item.original, quality)
                encode_s = time.perf_counter() - start
            start = time.perf_counter()
            out = codec.decode(data, item.size)
            decode_s = time.perf_counter() - start
            if out.shape != item.original.shape:
                raise UsageError(f"{codec.label} decoded {item.name} to {out.shape[1]}x{out.shape[0]}, "
                                 f"not {item.size[0]}x{item.size[1]}")
            record = {"codec": name, "quality": quality, "params": codec.params(quality), "bytes": len(data),
                      "bpp": 8 * len(data) / item.pixels, "encode_s": encode_s, "decode_s": decode_s,
                      "metrics": self.metrics.compute(item.original, out)}
            self.cache.store(key, record, out, data)
        return {**record, "image": item.name, "target_bpp": rate, "reached": reached, "key": key}

    def _cached(self, key: str, item: Item) -> dict | None:
        record = self.cache.load(key)
        if record is None:
            return None
        missing = [m for m in self.metrics.names if m not in record.get("metrics", {})]
        if missing:
            record["metrics"].update(self.metrics.compute(item.original, self.cache.decoded(key), only=missing))
            self.cache.store(key, record)
        record["key"] = key
        record["cached"] = True
        return record

    def _matched_to_vov(self, points: list[dict]) -> list[dict]:
        """Each baseline again at the bpp vov really reached on each image: the report compares
        pictures at equal file sizes even where vov's rate control missed its target."""
        extra = []
        for vov in [p for p in points if p["codec"] == "vov" and "bpp" in p]:
            item = next(it for it in self.items if it.name == vov["image"])
            for name in self.baselines:
                same = next((p for p in points if p["codec"] == name and p["image"] == item.name
                             and p["target_bpp"] == vov["target_bpp"]), None)
                if same is not None and abs(math.log(same["bpp"] / vov["bpp"])) < math.log(1.05):
                    match = dict(same)  # already within 5% of vov's size
                else:
                    match = self._baseline_point(item, name, vov["bpp"])
                match.update(role="vov-match", target_bpp=vov["target_bpp"], matched_bpp=vov["bpp"])
                match.setdefault("key", None)
                extra.append(match)
        return extra

    # ---- the whole run

    def run(self) -> dict:
        from tqdm import tqdm

        c = self.config
        try:
            os.makedirs(c.out, exist_ok=True)
        except OSError as e:
            raise UsageError(f"{c.out}: cannot create the output folder ({e.strerror or e})") from None
        if "vov" in c.codecs:
            self._vov_setup()  # fails early on a missing backbone
        tasks = [(item, codec, rate) for item in self.items for codec in c.codecs for rate in c.rates]
        points: list[dict] = []
        with tqdm(total=len(tasks), desc="bench", unit="point", disable=c.quiet, dynamic_ncols=True) as bar:
            for item, name, rate in tasks:
                bar.set_postfix_str(f"{item.name} {name} @{rate:g}")
                if name == "vov":
                    point = self._vov_point(item, rate, bar_position=1)
                    if point.get("skipped"):
                        self.notes.append(f"vov @ {rate} bpp skipped on {item.name}: {point['skipped']}")
                else:
                    point = self._baseline_point(item, name, rate)
                point.setdefault("key", None)
                point["role"] = "target"
                points.append(point)
                bar.update(1)
        points += self._matched_to_vov(points)
        from vov.bench import summary

        result = summary.write_outputs(self, points)
        if c.report:
            from vov.bench import report

            report.write_report(self, points, result)
        return result
