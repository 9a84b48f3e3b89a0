"""The benchmark on clips: vov and classical video codecs on the same videos at matched rates.

For every video, codec and target rate it produces one *point*: the coded size (bpp over the
video's frames x height x width), the encode time, the decode time, the time to the first decoded
frame, and the metrics of the decoded frames against the frames as read from the file.

- vov codes the video as `vov compress` does (`codec.compress`: clips of the backbone's length, one
  vector each, the target the rate of the whole file). Its decode is timed on `codec.decode_clips`:
  `first_frame_s` is the time from the call to its first yield (the first clip's frames, ready to
  show), `decode_s` the time to the last.
- The baselines (`vov.bench.video_baselines`: x264, x265, SVT-AV1, libaom, VVC through one ffmpeg)
  have their quality knob bisected for the stream nearest the target (in log rate); a codec that
  cannot get that low (or high) keeps its nearest setting and the point says `reached: false`.
  Their `first_frame_s` is measured on a second decode of the same stream by ffmpeg into a pipe:
  the time until the first whole frame has been read from it (process start-up included).
- After the target rates, each baseline is run again at the bpp vov really reached on each video
  (`role: "vov-match"`): the comparison at equal sizes that the tables and the report show.

Metrics (`video_baselines.measure`): PSNR over the RGB channels of the 8-bit frames (not YUV PSNR)
and MS-SSIM on RGB, each per frame, then the mean over the video's frames; the curves average those
over videos. FVD (`vov.bench.fvd`, I3D weights from a local file) compares the set of all videos' 16-frame
windows with their decoded windows, per codec and rate.

Points are cached on disk (`OUTDIR/cache`, keyed by the decoded source frames, the codec, its
settings and version; for vov also the sources of the codec and the backbone's hash), so a rerun
computes only what is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from vov.backbones import DEFAULT_BACKBONE
from vov.bench.runner import Cache, _core_source_hash, _sha, _vov_version
from vov.errors import UsageError

VIDEO_CODECS = ("vov", "x264", "x265", "svt-av1", "aom-av1", "vvc")
DEFAULT_VIDEO_CODECS = ("vov", "x264", "x265", "svt-av1", "vvc")
VIDEO_SUFFIXES = {".y4m", ".mp4", ".m4v", ".mov", ".mkv", ".webm"}
FVD_FRAMES = 16  # frames of one FVD window (I3D's usual input length)


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


def measured(reference, decoded) -> dict:
    from vov.bench.video_baselines import measure

    with one_thread():
        return measure(reference, decoded)


def is_video(path: str) -> bool:
    """A file that is a video by its suffix or its first bytes (Y4M, ISO-BMFF video, Matroska)."""
    if os.path.splitext(path)[1].lower() in VIDEO_SUFFIXES:
        return True
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head.startswith(b"YUV4MPEG2") or head.startswith(b"\x1a\x45\xdf\xa3")


@dataclass
class VideoBenchConfig:
    videos: list[str]
    out: str
    rates: list[float] = field(default_factory=lambda: [0.02, 0.05, 0.1])
    codecs: list[str] = field(default_factory=lambda: list(DEFAULT_VIDEO_CODECS))
    points: list[float] = field(default_factory=lambda: [0.02, 0.05, 0.1])
    steps: int = 1200
    sampler_steps: int = 50
    backbone: str = DEFAULT_BACKBONE
    seed: int = 0
    warm_start: bool = False
    cache: str | None = None
    fvd_weights: str | None = None
    quiet: bool = False
    report: bool = True


@dataclass
class VideoItem:
    """One input video, as read (what vov receives and what every metric compares to)."""

    path: str
    name: str
    digest: str  # sha256 of the decoded frames, their rate and colour description
    clip: object  # vov.media.Clip

    @property
    def pixels(self) -> int:
        return self.clip.pixels

    @property
    def frames(self) -> int:
        return self.clip.num_frames

    @property
    def size(self) -> tuple[int, int]:
        return self.clip.width, self.clip.height

    @property
    def original(self) -> np.ndarray:
        return self.clip.to_uint8()


class VideoCache(Cache):
    """Points as `points/KEY.json` with the decoded frames beside them (`.npz`, uint8 RGB)."""

    def load(self, key: str) -> dict | None:
        path, frames = self.path(key, ".json"), self.path(key, ".npz")
        if not (os.path.isfile(path) and os.path.isfile(frames)):
            return None
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def decoded(self, key: str) -> np.ndarray:
        with np.load(self.path(key, ".npz")) as data:
            return data["frames"]

    def store(self, key: str, record: dict, decoded: np.ndarray | None = None, data: bytes | None = None) -> None:
        from vov.files import write_atomic

        if decoded is not None:
            tmp = self.path(key, ".tmp.npz")
            np.savez_compressed(tmp, frames=np.ascontiguousarray(decoded, dtype=np.uint8))
            os.replace(tmp, self.path(key, ".npz"))
        if data is not None:
            write_atomic(self.path(key, ".bin"), data)
        write_atomic(self.path(key, ".json"), json.dumps(record, indent=1).encode())


def load_videos(paths: list[str]) -> list[VideoItem]:
    from vov.media.video import load_video

    if not paths:
        raise UsageError("give at least one video")
    items, names = [], set()
    for path in paths:
        clip = load_video(path)
        if clip.num_frames < 2:
            raise UsageError(f"{path}: one frame is an image; give it to the image benchmark")
        h = hashlib.sha256(np.ascontiguousarray(clip.frames).tobytes())
        h.update(json.dumps([clip.fps, clip.matrix, clip.range, clip.grey]).encode())
        base = os.path.splitext(os.path.basename(os.path.normpath(path)))[0] or "video"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.add(name)
        items.append(VideoItem(path, name, h.hexdigest(), clip))
    return items


def fvd_windows(frames: np.ndarray) -> list[np.ndarray]:
    """A video's non-overlapping windows of FVD_FRAMES frames (the whole video when it is shorter,
    if it has the 9 frames I3D needs); a last partial window is left out."""
    n = len(frames)
    if n < FVD_FRAMES:
        return [frames] if n >= 9 else []
    return [frames[s:s + FVD_FRAMES] for s in range(0, n - FVD_FRAMES + 1, FVD_FRAMES)]


def timed_decode(data: bytes, backbone) -> tuple[np.ndarray, list[float]]:
    """Decode a .vov file through `codec.decode_clips`: (all frames, seconds from the call to each
    clip's yield). The first entry is the time to the first decoded frame, the last the decode time."""
    from vov import codec

    frames, yielded = [], []
    start = time.perf_counter()
    for decoded in codec.decode_clips(data, backbone=backbone):
        yielded.append(time.perf_counter() - start)
        frames.append(decoded.frames)
    if not frames:
        raise UsageError("the file decoded to no clips")
    return np.concatenate(frames), yielded


def first_frame_seconds(codec, data: bytes, clip) -> float:
    """Seconds from starting ffmpeg on `data` until its first whole decoded frame has arrived in a pipe."""
    from vov.bench.baselines import CodecFailed
    from vov.bench.video_baselines import ffmpeg_exe

    with tempfile.TemporaryDirectory(prefix="vov-bench-") as tmp:
        src = os.path.join(tmp, "in.bin")
        with open(src, "wb") as f:
            f.write(data)
        pix_fmt = "yuv420p" if codec.bits == 8 else f"yuv420p{codec.bits}le"
        argv = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-f", codec.stream_format, "-i", src,
                "-map", "0:v:0", "-fps_mode", "passthrough", "-pix_fmt", pix_fmt, "-strict", "-1",
                "-f", "yuv4mpegpipe", "pipe:1"]
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            header = proc.stdout.readline()
            tokens = header.split()
            if not header.startswith(b"YUV4MPEG2"):
                raise CodecFailed(f"{codec.label} decode: no Y4M stream from ffmpeg")
            width = int(next(t[1:] for t in tokens if t.startswith(b"W")))
            height = int(next(t[1:] for t in tokens if t.startswith(b"H")))
            sample = 1 if codec.bits == 8 else 2
            frame_bytes = sample * (width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2))
            if not proc.stdout.readline().startswith(b"FRAME"):
                raise CodecFailed(f"{codec.label} decode: no frame from ffmpeg")
            got = 0
            while got < frame_bytes:
                chunk = proc.stdout.read(frame_bytes - got)
                if not chunk:
                    raise CodecFailed(f"{codec.label} decode: the first frame ended early")
                got += len(chunk)
            seconds = time.perf_counter() - start
            while proc.stdout.read(1 << 20):  # let it finish the stream
                pass
        finally:
            proc.stdout.close()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return seconds


class VideoRunner:
    def __init__(self, config: VideoBenchConfig):
        from vov.bench import video_baselines
        from vov.bench.baselines import ToolMissing

        self.config = config
        self._validate()
        self.baselines = {name: video_baselines.get(name) for name in config.codecs if name != "vov"}
        missing = []
        for codec in self.baselines.values():
            try:
                codec.check()
            except ToolMissing as e:
                missing.append(str(e))
        if missing:
            raise ToolMissing("; ".join(missing))
        self.fvd = None
        if config.fvd_weights:
            from vov.bench.fvd import FVD

            self.fvd = FVD(config.fvd_weights, batch=1)
        self.items = load_videos(config.videos)
        self.cache = VideoCache(config.cache or os.path.join(config.out, "cache"))
        self.backbone = None
        self._vov_identity = None
        self.notes: list[str] = []

    @property
    def metric_names(self) -> list[str]:
        return ["psnr-rgb", "ms-ssim"]

    def _validate(self) -> None:
        c = self.config
        if not c.rates or any(not (r > 0 and math.isfinite(r)) for r in c.rates):
            raise UsageError("--rates must be positive numbers of bits per pixel")
        if not c.codecs:
            raise UsageError("--codecs needs at least one codec")
        unknown = [n for n in c.codecs if n not in VIDEO_CODECS]
        if unknown:
            raise UsageError(f"{unknown[0]!r} is not a video codec; on videos: {', '.join(VIDEO_CODECS)}")
        if len(set(c.codecs)) != len(c.codecs):
            raise UsageError("--codecs names a codec twice")
        if c.steps < 1 or c.sampler_steps < 1:
            raise UsageError("--steps and --sampler-steps must be positive")

    def label(self, codec: str) -> str:
        return "vov" if codec == "vov" else self.baselines[codec].label

    def description(self, codec: str) -> str:
        if codec != "vov":
            return self.baselines[codec].description
        c = self.config
        return (f"vov, backbone {c.backbone}, {c.steps} fitting steps per clip, {c.sampler_steps} sampler steps, "
                f"seed {c.seed}, warm start {'on' if c.warm_start else 'off'}")

    # ---- vov

    def _vov_setup(self):
        if self.backbone is None:
            from vov.codec import get_backbone

            self.backbone = get_backbone(self.config.backbone)
            c = self.config
            self._vov_identity = {
                "codec": "vov", "version": _vov_version(), "sources": _core_source_hash(),
                "backbone": self.backbone.name, "backbone_hash": self.backbone.content_hash.hex(),
                "steps": c.steps, "sampler_steps": c.sampler_steps, "seed": c.seed, "warm_start": c.warm_start,
            }
        return self.backbone

    def vov_options(self, rate: float):
        from vov.method.adapters import AdapterSpec
        from vov.options import EncodeOptions

        c = self.config
        return EncodeOptions(backbone=c.backbone, adapter=AdapterSpec(seed=c.seed), steps=c.steps, target_bpp=rate,
                             sampler_steps=c.sampler_steps, noise_seed=c.seed, warm_start=c.warm_start)

    def _vov_point(self, item: VideoItem, rate: float) -> dict:
        from vov import codec

        backbone = self._vov_setup()
        key = _sha(item.digest.encode(), self._vov_identity, {"target_bpp": rate})
        cached = self._cached(key)
        if cached is not None:
            return {**cached, "clip": item.name}
        base = {"clip": item.name, "codec": "vov", "target_bpp": rate, "params": {}}
        options = self.vov_options(rate)
        try:
            the_plan = codec.plan(item.clip, options, backbone)
        except UsageError as e:
            return {**base, "reached": False, "skipped": str(e)}
        steps = sum(f.steps for f in the_plan.fits)
        from tqdm import tqdm

        from vov.options import rate_note

        bar = tqdm(total=steps, desc=f"  vov fit {item.name} @{rate:g}", unit="step", leave=False, position=1,
                   disable=self.config.quiet, dynamic_ncols=True)
        clip_done: dict[int, float] = {}

        def progress(p) -> None:
            clip_done[p.clip] = time.perf_counter()
            bar.n = sum(f.steps for f in the_plan.fits[: p.clip - 1]) + p.step
            bar.refresh() if p.step % 10 == 0 else None

        start = time.perf_counter()
        try:
            report = codec.compress(item.clip, options, backbone=backbone, on_progress=progress,
                                    checkpoint=self.cache.path(key, ".partial"), planned=the_plan)
        finally:
            bar.close()
        ends = [clip_done.get(i + 1, start) for i in range(len(the_plan.lengths))]
        fit_s = [b - a for a, b in zip([start] + ends[:-1], ends)]
        frames, yielded = timed_decode(report.data, backbone)
        decode_s = yielded[-1]
        out = item.clip.with_frames(frames)
        metrics = measured(item.clip, out)
        segments, first = [], 0
        for i, (n, size) in enumerate(zip(the_plan.lengths, report.clip_bytes)):
            psnr = metrics["psnr-rgb-frames"][first:first + n]
            ms = metrics["ms-ssim-frames"][first:first + n]
            segments.append({"frames": n, "bytes": size, "bpp": 8 * size / (n * item.size[0] * item.size[1]),
                             "fit_s": fit_s[i], "decoded_at_s": yielded[i], "psnr-rgb": float(np.mean(psnr)),
                             "ms-ssim": float(np.mean(ms))})
            first += n
        record = {**base, "reached": True, "bytes": len(report.data), "bpp": 8 * len(report.data) / item.pixels,
                  "encode_s": report.seconds, "decode_s": decode_s, "first_frame_s": yielded[0],
                  "params": {"d": report.d, "clips": len(the_plan.lengths),
                             "warm start": "on" if self.config.warm_start else "off"},
                  "parts": report.parts, "segments": segments, "metrics": metrics}
        missed = rate_note(rate, record["bpp"], report.d)
        if missed:  # in the record, and said once as the point is made
            record["note"] = missed
            tqdm.write(f"vov bench: note: {item.name} @{rate:g} bpp: {missed}", file=sys.stderr)
        self.cache.store(key, record, out.to_uint8(), report.data)
        return {**record, "key": key}

    # ---- baselines

    def _baseline_point(self, item: VideoItem, name: str, rate: float) -> dict:
        from vov.bench.baselines import search_quality

        codec = self.baselines[name]
        size_key = _sha(item.digest.encode(), {"codec": name, "version": codec.version, "video": True})
        sizes = self.cache.sizes(size_key)
        made: dict[int, tuple[bytes, float]] = {}
        with tempfile.TemporaryDirectory(prefix="vov-bench-") as tmp:
            source = os.path.join(tmp, "source.y4m")
            have_source = False

            def encode(q: int) -> tuple[bytes, float]:
                nonlocal have_source
                if not have_source:
                    codec.source_y4m(item.clip, source)
                    have_source = True
                begin = time.perf_counter()
                data = codec.encode(item.clip, q, source=source)
                return data, time.perf_counter() - begin

            def size_at(q: int) -> int:
                if str(q) not in sizes:
                    made[q] = encode(q)
                    sizes[str(q)] = len(made[q][0])
                    self.cache.store_sizes(size_key, sizes)
                return sizes[str(q)]

            quality, reached = search_quality(size_at, codec, rate, item.pixels)
            key = _sha(item.digest.encode(), {"codec": name, "version": codec.version, "quality": quality,
                                              "video": True})
            record = self._cached(key)
            if record is None:
                data, encode_s = made[quality] if quality in made else encode(quality)
                start = time.perf_counter()
                decoded = codec.decode(data, item.clip)
                decode_s = time.perf_counter() - start
                record = {"codec": name, "quality": quality, "params": codec.params(quality), "bytes": len(data),
                          "bpp": 8 * len(data) / item.pixels, "encode_s": encode_s, "decode_s": decode_s,
                          "first_frame_s": first_frame_seconds(codec, data, item.clip),
                          "metrics": measured(item.clip, decoded)}
                self.cache.store(key, record, decoded.to_uint8(), data)
        return {**record, "clip": item.name, "target_bpp": rate, "reached": reached, "key": key}

    def _cached(self, key: str) -> dict | None:
        record = self.cache.load(key)
        if record is None:
            return None
        record["key"] = key
        record["cached"] = True
        return record

    def _matched_to_vov(self, points: list[dict]) -> list[dict]:
        """Each baseline again at the bpp vov reached on each video (unless already within 5% of it)."""
        extra = []
        for vov in [p for p in points if p["codec"] == "vov" and "bpp" in p]:
            item = next(it for it in self.items if it.name == vov["clip"])
            for name in self.baselines:
                same = next((p for p in points if p["codec"] == name and p["clip"] == item.name
                             and p["target_bpp"] == vov["target_bpp"]), None)
                if same is not None and abs(math.log(same["bpp"] / vov["bpp"])) < math.log(1.05):
                    match = dict(same)
                else:
                    match = self._baseline_point(item, name, vov["bpp"])
                match.update(role="vov-match", target_bpp=vov["target_bpp"], matched_bpp=vov["bpp"])
                extra.append(match)
        return extra

    # ---- FVD

    def decoded(self, point: dict) -> np.ndarray:
        return self.cache.decoded(point["key"])

    def _fvd(self, points: list[dict]) -> None:
        """FVD of each codec, target rate and role over all videos' windows, set on its points as `fvd`."""
        if self.fvd is None:
            return
        reference = {it.name: fvd_windows(it.original) for it in self.items}
        features = {name: self.fvd.features(w) if w else None for name, w in reference.items()}
        groups: dict[tuple, list[dict]] = {}
        for p in points:
            if "metrics" in p and p.get("key"):
                groups.setdefault((p["codec"], p["target_bpp"], p.get("role", "target")), []).append(p)
        from vov.bench.fvd import frechet_distance

        for (codec, rate, role), group in groups.items():
            ref, out = [], []
            for p in group:
                if features[p["clip"]] is None:
                    continue
                ref.append(features[p["clip"]])
                out.append(self.fvd.features(fvd_windows(self.decoded(p))))
            if sum(len(r) for r in ref) < 2:
                self.notes.append(f"FVD of {codec} @ {rate:g} ({role}) left out: it needs two windows of "
                                  f"{FVD_FRAMES} frames (or whole videos of 9 or more frames)")
                continue
            value = frechet_distance(np.concatenate(ref), np.concatenate(out))
            for p in group:
                p["fvd"] = value

    # ---- the whole run

    def run(self) -> dict:
        from tqdm import tqdm

        c = self.config
        try:
            os.makedirs(c.out, exist_ok=True)
        except OSError as e:
            raise UsageError(f"{c.out}: cannot create the output folder ({e.strerror or e})") from None
        if "vov" in c.codecs:
            self._vov_setup()
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
        self._fvd(points)
        from vov.bench import video_summary

        result = video_summary.write_outputs(self, points)
        if c.report:
            from vov.bench import video_report

            video_report.write_report(self, points, result)
        return result
