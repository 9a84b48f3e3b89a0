"""What the image and the video baselines share: the errors, running a tool, the quality knob and
the search on it.

A baseline is a classical codec run beside vov (`image_baselines`: JPEG, WebP, AVIF, JPEG XL and
HEVC intra on images; `video_baselines`: x264, x265, SVT-AV1, libaom and VVC on clips). Each has a
quality knob, an integer in [qmin, qmax] in the tool's own units; `higher_is_larger` says which way
the file size moves with it, so `search_quality` can bisect for a target bpp. Rates are measured
from the bytes a baseline's `encode` returns: the real file or stream each tool writes.

The two families stay in their own modules because they differ in what they take and give (a uint8
image and files per tool, against a `Clip`, Y4M and one ffmpeg); the knob, the search, the tool
errors and the way a tool is run are this module's.
"""

from __future__ import annotations

import functools
import math
import subprocess

from vov.errors import UsageError


class ToolMissing(UsageError):
    """An external encoder or decoder is not installed."""


class CodecFailed(UsageError):
    """An external tool ran and failed."""


def run_tool(argv: list[str], what: str) -> subprocess.CompletedProcess:
    """Run an encoder or decoder; a missing program, a hang or a failure is a one-line error."""
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=600)
    except FileNotFoundError:
        raise ToolMissing(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise CodecFailed(f"{what}: {argv[0]} took more than 10 minutes") from None
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise CodecFailed(f"{what}: {argv[0]} failed (status {proc.returncode}): {' | '.join(tail)}")
    return proc


def tool_version(argv: list[str]) -> str:
    """The first line a tool prints about its version ("unknown" when it cannot say)."""
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (proc.stdout + proc.stderr).decode(errors="replace").strip()
    return text.splitlines()[0] if text else "unknown"


class Baseline:
    """A classical codec: its names, its quality knob, and the check that it can run here."""

    name: str = ""
    label: str = ""
    description: str = ""
    qmin: int = 0
    qmax: int = 100
    higher_is_larger: bool = True

    def check(self) -> None:
        """Raise ToolMissing, saying what to install, when a needed program is absent."""
        raise NotImplementedError

    @functools.cached_property
    def version(self) -> str:
        """A string that changes when the tool does: part of the cache key."""
        return self.name

    def params(self, quality: int) -> dict:
        """The knob in the tool's own terms, for tables."""
        return {"quality": quality}


def search_quality(size_at, codec: Baseline, target_bpp: float, pixels: int) -> tuple[int, bool]:
    """The quality whose file lands nearest `target_bpp` (in log rate), by bisection.

    `size_at(quality) -> bytes` (callers cache it). Returns (quality, reached): `reached` is False
    when even the lowest-rate setting is above the target by more than 10%, i.e. the codec cannot
    go that low on this image (JPEG below about 0.1 bpp, for example), or the highest-rate setting
    stays more than 10% below it.
    """
    def bpp(q: int) -> float:
        return 8 * size_at(q) / pixels

    lo, hi = codec.qmin, codec.qmax  # in "rate order" after the flip below
    order = (lambda q: q) if codec.higher_is_larger else (lambda q: codec.qmin + codec.qmax - q)
    # work in r = order(q): bpp increases with r
    r_lo, r_hi = lo, hi
    if bpp(order(r_lo)) >= target_bpp:
        q = order(r_lo)
        return q, bpp(q) <= 1.1 * target_bpp
    if bpp(order(r_hi)) <= target_bpp:
        q = order(r_hi)
        return q, bpp(q) >= target_bpp / 1.1
    while r_hi - r_lo > 1:  # invariant: bpp(r_lo) < target <= bpp(r_hi)
        mid = (r_lo + r_hi) // 2
        if bpp(order(mid)) < target_bpp:
            r_lo = mid
        else:
            r_hi = mid
    below, above = order(r_lo), order(r_hi)
    best = min((below, above), key=lambda q: abs(math.log(bpp(q) / target_bpp)))
    return best, True
