"""The benchmark's run loop, shared by images and clips: rates x items x codecs, one *point* each.

A point is one codec at one target rate on one item: the real size in bits per pixel, the encode
and decode times and the metrics of the decoded item against the original. vov is given the target
as the rate of the whole file (`EncodeOptions.target_bpp`, as `vov compress --bpp` and the encoder
service); each baseline's quality knob is bisected for the file nearest the target bpp in log rate
(`baselines.search_quality`), and a baseline that cannot get that low (or high) keeps its nearest
setting with `reached: false`. After the targets, each baseline runs again at the bpp vov really
reached on each item (`role: "vov-match"`), so tables and reports compare at equal sizes.

Points are cached on disk under a key that hashes the item, the codec, its settings and its version
(for vov: the package version, a hash of the codec's sources, the backbone's name and content hash),
so a rerun computes only what is missing.

Why a base class: the codec treats an image as a one-frame clip, and so does this loop. What an item
is, how the media is stored in the cache, how a decoded item is measured and which extra numbers a
point carries (a clip's segments, time to the first frame, FVD) are the kind's own, in
`image_runner.ImageRunner` and `video_runner.VideoRunner`; everything else, the loop, the cache,
the keys, vov's plan, fit and rate note, the quality search and the matching to vov's size, is here
once. The outputs (`summary`, `report`) read a runner through the same attributes for both kinds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time

import numpy as np

from vov.bench.baselines import ToolMissing
from vov.errors import UsageError
from vov.files import write_atomic

DEFAULT_POINTS = (0.02, 0.05, 0.1)
CORE_MODULES = ("codec", "limits", "method.fit", "method.adapters", "method.sampler", "method.noise", "method.scheduler",
                "method.scaling", "format.entropy", "format.bitstream", "media.image", "media.shape", "media.bounds",
                "media.colour", "media.clip", "media.writer", "media.y4m", "media.pyav", "media.png_frames",
                "media.video")


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


@contextlib.contextmanager
def one_thread():
    """Per-frame metrics on one torch thread: small frames gain nothing from two, and two threads
    that wait on each other on a busy machine made MS-SSIM ten times slower here."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def unique_name(path: str, taken: set[str], fallback: str) -> str:
    """The item's name in tables: the file (or folder) name without suffix, numbered when repeated."""
    base = os.path.splitext(os.path.basename(os.path.normpath(path)))[0] or fallback
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


class Cache:
    """Points and baseline trial sizes on disk: `points/KEY.json`, the decoded item beside it
    (`KEY` + `MEDIA`, written by the kind's subclass) and the coded file (`KEY.bin`)."""

    MEDIA = ""

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
        if not (os.path.isfile(path) and os.path.isfile(self.path(key, self.MEDIA))):
            return None
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None  # a damaged entry is recomputed

    def decoded(self, key: str) -> np.ndarray:
        """The decoded item as uint8 RGB."""
        raise NotImplementedError

    def _write_decoded(self, key: str, decoded: np.ndarray) -> None:
        raise NotImplementedError

    def store(self, key: str, record: dict, decoded: np.ndarray | None = None, data: bytes | None = None) -> None:
        if decoded is not None:
            self._write_decoded(key, decoded)
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


class Runner:
    """One benchmark run. A subclass sets the kind's names and fills in the hooks marked below;
    its `__init__` calls this one, then sets `items` and `cache`."""

    kind = ""  # "image" or "clip": the key naming a point's item; per_{kind}.json, timing_per_{kind}
    noun = ""  # "image" or "video", in sentences
    times: tuple[str, ...] = ("encode_s", "decode_s")  # the times a point carries
    baseline_key: dict = {}  # added to a baseline's cache keys
    fvd = None  # the FVD model, where the kind measures it

    def __init__(self, config):
        self.config = config
        self._validate()
        self.baselines = {name: self.make_baseline(name) for name in config.codecs if name != "vov"}
        missing = []
        for codec in self.baselines.values():
            try:
                codec.check()
            except ToolMissing as e:
                missing.append(str(e))
        if missing:
            raise ToolMissing("; ".join(missing))
        self.items: list = []
        self.cache: Cache | None = None
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

    # ---- the kind's hooks

    @property
    def metric_names(self) -> list[str]:
        """The metrics every point carries (and the RD plots show)."""
        raise NotImplementedError

    def make_baseline(self, name: str):
        """The baseline codec `name` (a UsageError for one this kind does not run)."""
        raise NotImplementedError

    def vov_options(self, rate: float):
        """vov's `EncodeOptions` at target `rate`."""
        raise NotImplementedError

    def vov_description(self) -> str:
        raise NotImplementedError

    def _vov_identity_extra(self) -> dict:
        """Settings besides the common ones that change vov's file: part of its cache key."""
        return {}

    def _vov_measured(self, item, report, the_plan, fit_s: list[float]) -> tuple[dict, np.ndarray]:
        """vov's file decoded and measured: (the record's fields from decode_s on, the decoded item as uint8)."""
        raise NotImplementedError

    def _baseline_encoder(self, item, codec):
        """A context manager giving `encode(quality) -> (bytes, seconds)` for this item."""
        raise NotImplementedError

    def _baseline_measured(self, item, codec, data: bytes) -> tuple[dict, np.ndarray]:
        """A baseline's stream decoded and measured: (the record's fields from decode_s on, uint8 item)."""
        raise NotImplementedError

    def _complete(self, record: dict, key: str, item) -> None:
        """Add to a cached record what this run measures and it lacks (nothing by default)."""

    def _after_points(self, points: list[dict]) -> None:
        """Numbers over several points (FVD), once every point is made (nothing by default)."""

    # ---- names

    def label(self, codec: str) -> str:
        return "vov" if codec == "vov" else self.baselines[codec].label

    def description(self, codec: str) -> str:
        return self.vov_description() if codec == "vov" else self.baselines[codec].description

    def decoded(self, point: dict) -> np.ndarray:
        return self.cache.decoded(point["key"])

    # ---- vov

    def _vov_setup(self):
        if self.backbone is None:
            from vov.codec import get_backbone

            c = self.config
            self.backbone = get_backbone(c.backbone)
            self._vov_identity = {
                "codec": "vov", "version": _vov_version(), "sources": _core_source_hash(),
                "backbone": self.backbone.name, "backbone_hash": self.backbone.content_hash.hex(),
                "steps": c.steps, "sampler_steps": c.sampler_steps, "seed": c.seed, **self._vov_identity_extra(),
            }
        return self.backbone

    def _vov_point(self, item, rate: float) -> dict:
        from vov import codec

        backbone = self._vov_setup()
        key = _sha(item.digest.encode(), self._vov_identity, {"target_bpp": rate})
        cached = self._cached(key, item)
        if cached is not None:
            return {**cached, self.kind: item.name}
        base = {self.kind: item.name, "codec": "vov", "target_bpp": rate, "params": {}}
        options = self.vov_options(rate)
        try:
            the_plan = codec.plan(item.media, options, backbone)
        except UsageError as e:
            return {**base, "reached": False, "skipped": str(e)}
        from tqdm import tqdm

        from vov.options import rate_note

        bar = tqdm(total=sum(f.steps for f in the_plan.fits), desc=f"  vov fit {item.name} @{rate:g}", unit="step",
                   leave=False, position=1, disable=self.config.quiet, dynamic_ncols=True)
        clip_done: dict[int, float] = {}

        def progress(p) -> None:
            clip_done[p.clip] = time.perf_counter()
            bar.n = sum(f.steps for f in the_plan.fits[: p.clip - 1]) + p.step
            bar.refresh() if p.step % 10 == 0 else None

        start = time.perf_counter()
        try:
            report = codec.compress(item.media, options, backbone=backbone, on_progress=progress,
                                    checkpoint=self.cache.path(key, ".partial"), planned=the_plan)
        finally:
            bar.close()
        ends = [clip_done.get(i + 1, start) for i in range(len(the_plan.lengths))]
        fit_s = [b - a for a, b in zip([start] + ends[:-1], ends)]
        fields, decoded = self._vov_measured(item, report, the_plan, fit_s)
        record = {**base, "reached": True, "bytes": len(report.data), "bpp": 8 * len(report.data) / item.pixels,
                  "encode_s": report.seconds, **fields}
        missed = rate_note(rate, record["bpp"], report.d)
        if missed:  # in the record, and said once as the point is made
            record["note"] = missed
            tqdm.write(f"vov bench: note: {item.name} @{rate:g} bpp: {missed}", file=sys.stderr)
        self.cache.store(key, record, decoded, report.data)
        return {**record, "key": key}

    # ---- baselines

    def _baseline_point(self, item, name: str, rate: float) -> dict:
        from vov.bench.baselines import search_quality

        codec = self.baselines[name]
        identity = {"codec": name, "version": codec.version, **self.baseline_key}
        size_key = _sha(item.digest.encode(), identity)
        sizes = self.cache.sizes(size_key)
        made: dict[int, tuple[bytes, float]] = {}
        with self._baseline_encoder(item, codec) as encode:

            def size_at(q: int) -> int:
                if str(q) not in sizes:
                    made[q] = encode(q)
                    sizes[str(q)] = len(made[q][0])
                    self.cache.store_sizes(size_key, sizes)
                return sizes[str(q)]

            quality, reached = search_quality(size_at, codec, rate, item.pixels)
            key = _sha(item.digest.encode(), {**identity, "quality": quality})
            record = self._cached(key, item)
            if record is None:
                data, encode_s = made[quality] if quality in made else encode(quality)
                fields, decoded = self._baseline_measured(item, codec, data)
                record = {"codec": name, "quality": quality, "params": codec.params(quality), "bytes": len(data),
                          "bpp": 8 * len(data) / item.pixels, "encode_s": encode_s, **fields}
                self.cache.store(key, record, decoded, data)
        return {**record, self.kind: item.name, "target_bpp": rate, "reached": reached, "key": key}

    def _cached(self, key: str, item) -> dict | None:
        record = self.cache.load(key)
        if record is None:
            return None
        self._complete(record, key, item)
        record["key"] = key
        record["cached"] = True
        return record

    def _matched_to_vov(self, points: list[dict]) -> list[dict]:
        """Each baseline again at the bpp vov really reached on each item: the outputs compare at equal
        file sizes even where vov's rate control missed its target."""
        extra = []
        for vov in [p for p in points if p["codec"] == "vov" and "bpp" in p]:
            item = next(it for it in self.items if it.name == vov[self.kind])
            for name in self.baselines:
                same = next((p for p in points if p["codec"] == name and p[self.kind] == item.name
                             and p["target_bpp"] == vov["target_bpp"]), None)
                if same is not None and abs(math.log(same["bpp"] / vov["bpp"])) < math.log(1.05):
                    match = dict(same)  # already within 5% of vov's size
                else:
                    match = self._baseline_point(item, name, vov["bpp"])
                match.update(role="vov-match", target_bpp=vov["target_bpp"], matched_bpp=vov["bpp"])
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
                    point = self._vov_point(item, rate)
                    if point.get("skipped"):
                        self.notes.append(f"vov @ {rate} bpp skipped on {item.name}: {point['skipped']}")
                else:
                    point = self._baseline_point(item, name, rate)
                point.setdefault("key", None)
                point["role"] = "target"
                points.append(point)
                bar.update(1)
        points += self._matched_to_vov(points)
        self._after_points(points)
        from vov.bench import report, summary

        result = summary.write_outputs(self, points)
        if c.report:
            report.write_report(self, points, result)
        return result
