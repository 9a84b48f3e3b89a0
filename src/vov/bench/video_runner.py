"""The benchmark on clips: vov and classical video codecs (`video_baselines`) at matched rates.

The loop, the cache, the quality search and the matching to vov's size are `runner.Runner`'s; this
module holds what only clips have:

- vov's decode is timed on `codec.decode_clips`: `first_frame_s` is the time from the call to its
  first yield (the first clip's frames, ready to show), `decode_s` the time to the last; a point
  also carries each clip's frames, bytes, fit time, decode time and quality (`segments`).
- The baselines (x264, x265, SVT-AV1, libaom, VVC through one ffmpeg) encode from one Y4M made per
  item; their `first_frame_s` (`VideoCodec.first_frame_seconds`) is measured on a second decode of
  the same stream by ffmpeg into a pipe: the time until the first whole frame has been read from it
  (process start-up included).
- Metrics (`video_baselines.measure`, on one torch thread): PSNR over the RGB channels of the 8-bit
  frames (not YUV PSNR) and MS-SSIM on RGB, each per frame, then the mean over the video's frames.
  FVD (`vov.bench.fvd`, I3D weights from a local file) compares the set of all videos' 16-frame
  windows with their decoded windows, per codec and rate.
- The cache key of a video is a hash of its decoded frames, rate and colour description; the
  decoded frames are cached as `.npz`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from vov.backbones import DEFAULT_BACKBONE
from vov.bench.runner import DEFAULT_POINTS, Cache, Runner, one_thread, unique_name
from vov.errors import UsageError

VIDEO_CODECS = ("vov", "x264", "x265", "svt-av1", "aom-av1", "vvc")
DEFAULT_VIDEO_CODECS = ("vov", "x264", "x265", "svt-av1", "vvc")
VIDEO_SUFFIXES = {".y4m", ".mp4", ".m4v", ".mov", ".mkv", ".webm"}
FVD_FRAMES = 16  # frames of one FVD window (I3D's usual input length)


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
    rates: list[float] = field(default_factory=lambda: list(DEFAULT_POINTS))
    codecs: list[str] = field(default_factory=lambda: list(DEFAULT_VIDEO_CODECS))
    points: list[float] = field(default_factory=lambda: list(DEFAULT_POINTS))
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
    def media(self):
        return self.clip

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


class FramesCache(Cache):
    """Decoded clips as `points/KEY.npz` (uint8 RGB frames)."""

    MEDIA = ".npz"

    def decoded(self, key: str) -> np.ndarray:
        with np.load(self.path(key, ".npz")) as data:
            return data["frames"]

    def _write_decoded(self, key: str, decoded: np.ndarray) -> None:
        tmp = self.path(key, ".tmp.npz")
        np.savez_compressed(tmp, frames=np.ascontiguousarray(decoded, dtype=np.uint8))
        os.replace(tmp, self.path(key, ".npz"))


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
        items.append(VideoItem(path, unique_name(path, names, "video"), h.hexdigest(), clip))
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


class VideoRunner(Runner):
    kind, noun = "clip", "video"
    times = ("encode_s", "decode_s", "first_frame_s")
    baseline_key = {"video": True}

    def __init__(self, config: VideoBenchConfig):
        super().__init__(config)
        self.fvd = None
        if config.fvd_weights:
            from vov.bench.fvd import FVD

            self.fvd = FVD(config.fvd_weights, batch=1)
        self.items = load_videos(config.videos)
        self.cache = FramesCache(config.cache or os.path.join(config.out, "cache"))

    @property
    def metric_names(self) -> list[str]:
        return ["psnr-rgb", "ms-ssim"]

    def _validate(self) -> None:
        super()._validate()
        unknown = [n for n in self.config.codecs if n not in VIDEO_CODECS]
        if unknown:
            raise UsageError(f"{unknown[0]!r} is not a video codec; on videos: {', '.join(VIDEO_CODECS)}")

    def make_baseline(self, name: str):
        from vov.bench import video_baselines

        return video_baselines.get(name)

    def vov_options(self, rate: float):
        from vov.method.adapters import AdapterSpec
        from vov.options import EncodeOptions

        c = self.config
        return EncodeOptions(backbone=c.backbone, adapter=AdapterSpec(seed=c.seed), steps=c.steps, target_bpp=rate,
                             sampler_steps=c.sampler_steps, noise_seed=c.seed, warm_start=c.warm_start)

    def vov_description(self) -> str:
        c = self.config
        return (f"vov, backbone {c.backbone}, {c.steps} fitting steps per clip, {c.sampler_steps} sampler steps, "
                f"seed {c.seed}, warm start {'on' if c.warm_start else 'off'}")

    def _vov_identity_extra(self) -> dict:
        return {"warm_start": self.config.warm_start}

    def _vov_measured(self, item: VideoItem, report, the_plan, fit_s):
        frames, yielded = timed_decode(report.data, self.backbone)
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
        fields = {"decode_s": yielded[-1], "first_frame_s": yielded[0],
                  "params": {"d": report.d, "clips": len(the_plan.lengths),
                             "warm start": "on" if self.config.warm_start else "off"},
                  "parts": report.parts, "segments": segments, "metrics": metrics}
        return fields, out.to_uint8()

    @contextlib.contextmanager
    def _baseline_encoder(self, item: VideoItem, codec):
        with tempfile.TemporaryDirectory(prefix="vov-bench-") as tmp:
            source = os.path.join(tmp, "source.y4m")
            have_source = False

            def encode(quality: int) -> tuple[bytes, float]:
                nonlocal have_source
                if not have_source:  # made once per item, and only when a size is not cached
                    codec.source_y4m(item.clip, source)
                    have_source = True
                begin = time.perf_counter()
                data = codec.encode(item.clip, quality, source=source)
                return data, time.perf_counter() - begin

            yield encode

    def _baseline_measured(self, item: VideoItem, codec, data: bytes):
        start = time.perf_counter()
        decoded = codec.decode(data, item.clip)
        decode_s = time.perf_counter() - start
        return {"decode_s": decode_s, "first_frame_s": codec.first_frame_seconds(data),
                "metrics": measured(item.clip, decoded)}, decoded.to_uint8()

    def _after_points(self, points: list[dict]) -> None:
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
