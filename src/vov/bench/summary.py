"""From points to results, for images and clips: CompressAI-style curves, BD-rates, values at fixed
rates, the JSON files and summary.txt.

Averaging: at each target rate, a codec's bpp, every metric and every time are the means over the
items of the per-item values (PSNR included: per image, or per frame then per video, then the mean).
FVD is one number per codec and rate over all the videos' windows. A rate point where some item did
not reach the target (or vov skipped it) is kept with `reached: false`; it is still a true operating
point of the codec, so curves, BD-rates and plots use it (plots draw it hollow).

BD-rate: `bjontegaard.bd_rate(..., method="pchip")`, anchor = the baseline, test = vov, on the
mean curves; negative means vov needs fewer bits for the same quality. MS-SSIM enters it in dB
(-10 log10(1 - MS-SSIM)). Values at fixed bpp come from PCHIP interpolation of the mean curve in
log10(bpp), only inside the measured range of bpp: outside it the table says what the codec
reached instead of extrapolating.

The *matched* table (clips) holds, per video, vov's point and each baseline's point at the size vov
really reached (`role: "vov-match"`), flagged where the baseline cannot get within 10% of it.

One module for both kinds: the curves, the BD-rate and the files are the same computation; what
differs (the item list, the averaging sentences, the columns of summary.txt, the matched table) is
chosen by `runner.kind` in the few places below that name it.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np

AVERAGING = {
    "image": {
        "curve": "per-image values, then the mean over images at each target rate",
        "per_item": "none: one entry per image, codec and target rate",
        "match": "a baseline at the bpp vov reached on that image (for the side-by-side view)",
        "summary": "PSNR and every other metric: computed per image, then averaged over images",
        "text": "PSNR (RGB) and all metrics: per image, then the mean over images.",
    },
    "clip": {
        "curve": "per frame, then the mean over a video's frames, then the mean over videos at each target rate",
        "per_item": "none: one entry per video, codec and target rate; metrics hold the per-frame values",
        "match": "a baseline at the bpp vov reached on that video",
        "summary": "PSNR (RGB, 8-bit frames) and MS-SSIM (RGB): per frame, then the mean over a video's frames, "
                   "then the mean over videos; FVD: over all videos' 16-frame windows at once",
        "text": "PSNR (RGB) and MS-SSIM: per frame, then the mean over frames, then over videos.",
    },
}
CLIP_TIMING = ("wall-clock seconds on this machine; first_frame_s: vov from calling codec.decode_clips to its "
               "first yield, baselines from starting ffmpeg to the first whole frame read from its pipe")


def msssim_db(value: float) -> float:
    return -10.0 * math.log10(max(1.0 - value, 1e-10))


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _key(time_name: str) -> str:
    """A point's time (`encode_s`) as a curve's key (`encode-s`)."""
    return time_name.replace("_", "-")


def curves(runner, points: list[dict]) -> dict[str, dict]:
    """codec -> CompressAI-style dict (means over items at each target rate)."""
    names, count = runner.metric_names, f"{runner.kind}s"
    out = {}
    for codec in runner.config.codecs:
        results: dict[str, list] = {"target-bpp": [], "bpp": [], **{m: [] for m in names}, "ms-ssim-db": [],
                                    **{_key(t): [] for t in runner.times}, "reached": [], count: []}
        if runner.fvd is not None:
            results["fvd"] = []
        for rate in runner.config.rates:
            group = [p for p in points if p["codec"] == codec and p["target_bpp"] == rate and "metrics" in p
                     and p.get("role", "target") == "target"]
            results["target-bpp"].append(rate)
            results["bpp"].append(_mean(p["bpp"] for p in group))
            for m in names:
                results[m].append(_mean(p["metrics"].get(m) for p in group))
            ms = results["ms-ssim"][-1] if "ms-ssim" in results else None
            results["ms-ssim-db"].append(msssim_db(ms) if ms is not None else None)
            for t in runner.times:
                results[_key(t)].append(_mean(p.get(t) for p in group))
            results["reached"].append(bool(group) and len(group) == len(runner.items) and all(p["reached"] for p in group))
            results[count].append(len(group))
            if "fvd" in results:
                results["fvd"].append(group[0].get("fvd") if group else None)
        out[codec] = {"name": runner.label(codec), "description": runner.description(codec),
                      "averaging": AVERAGING[runner.kind]["curve"], "results": results}
    return out


def usable(curve: dict, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(bpp, metric) of the curve's points, sorted by bpp, repeated bpp dropped.

    A point whose target was not reached on every item is still a true operating point of the
    codec (the mean size and quality of the settings used), so it counts; when the lowest setting
    is chosen for several targets, the repeats collapse into one point."""
    r = curve["results"]
    pairs = sorted({(b, v) for b, v in zip(r["bpp"], r.get(metric, []))
                    if b is not None and v is not None and b > 0})
    xs, ys = [], []
    for b, v in pairs:
        if xs and b <= xs[-1]:
            continue
        xs.append(b)
        ys.append(v)
    return np.array(xs), np.array(ys)


def bd_rate(anchor: dict, test: dict, metric: str) -> dict:
    """{"value": percent or None, "note": why not / caveats}."""
    import bjontegaard

    ra, da = usable(anchor, metric)
    rt, dt = usable(test, metric)
    if len(ra) < 2 or len(rt) < 2:
        return {"value": None, "note": "needs at least two reached rate points on each curve"}
    for name, d in ((anchor["name"], da), (test["name"], dt)):
        if not np.all(np.diff(d) > 0):
            return {"value": None, "note": f"{name}'s {metric} does not increase with rate"}
    lo, hi = max(da.min(), dt.min()), min(da.max(), dt.max())
    if lo >= hi:
        return {"value": None, "note": f"quality ranges do not overlap ({test['name']} {dt.min():.3f}-{dt.max():.3f}, "
                                       f"{anchor['name']} {da.min():.3f}-{da.max():.3f})"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = float(bjontegaard.bd_rate(ra, da, rt, dt, method="pchip", require_matching_points=False))
        except Exception as e:  # the package's own checks: report, never crash
            return {"value": None, "note": f"not computable ({e})"}
    note = "; ".join(str(w.message) for w in caught)
    if not math.isfinite(value):
        return {"value": None, "note": "not computable (non-finite)"}
    return {"value": value, "note": note}


def at_rate(curve: dict, metric: str, bpp: float) -> dict:
    """The metric at `bpp` by PCHIP in log10(bpp) within the measured range."""
    from scipy.interpolate import PchipInterpolator

    xs, ys = usable(curve, metric)
    if len(xs) == 0:
        return {"value": None, "note": "no points"}
    tol = 1.02
    if bpp < xs.min() / tol:
        return {"value": None, "note": f"cannot reach: lowest mean rate {xs.min():.4f} bpp"}
    if bpp > xs.max() * tol:
        return {"value": None, "note": f"not measured: highest {xs.max():.4f} bpp"}
    if len(xs) == 1:
        return {"value": float(ys[0]), "note": f"single point at {xs[0]:.4f} bpp"}
    x = float(np.clip(math.log10(bpp), math.log10(xs.min()), math.log10(xs.max())))
    return {"value": float(PchipInterpolator(np.log10(xs), ys)(x)), "note": ""}


def matched(runner, points: list[dict]) -> list[dict]:
    """Per video and vov target rate: vov and every baseline at the size vov reached."""
    rows = []
    for vov in [p for p in points if p["codec"] == "vov" and "metrics" in p]:
        row = {"clip": vov["clip"], "target_bpp": vov["target_bpp"], "entries": []}
        peers = [vov] + [p for p in points if p.get("role") == "vov-match" and p["clip"] == vov["clip"]
                         and p["target_bpp"] == vov["target_bpp"]]
        for p in peers:
            entry = {"codec": p["codec"], "name": runner.label(p["codec"]), "bpp": p["bpp"], "bytes": p["bytes"],
                     "reached": p["reached"], "params": p.get("params", {}),
                     "psnr-rgb": p["metrics"]["psnr-rgb"], "ms-ssim": p["metrics"]["ms-ssim"],
                     **{t: p.get(t) for t in runner.times}}
            if "fvd" in p:
                entry["fvd"] = p["fvd"]
            row["entries"].append(entry)
        rows.append(row)
    return rows


def _items(runner) -> list[dict]:
    """summary.json's list of the items measured."""
    if runner.kind == "image":
        return [{"name": it.name, "path": it.path, "width": it.size[0], "height": it.size[1]} for it in runner.items]
    return [{"name": it.name, "path": it.path, "width": it.size[0], "height": it.size[1], "frames": it.frames,
             "fps": list(it.clip.fps), "source": {"matrix": it.clip.matrix, "range": it.clip.range,
                                                  "chroma": it.clip.chroma, "bits": it.clip.bits}}
            for it in runner.items]


def _not_measured(runner) -> str:
    if runner.kind == "image":
        return ("FVD (video only; this benchmark measures still images)" +
                ("" if "lpips" in runner.metric_names else "; LPIPS (no --lpips-weights)") +
                ("" if "dists" in runner.metric_names else "; DISTS (no --dists-weights)"))
    not_measured = ["LPIPS and DISTS (image metrics; not part of the video benchmark)"]
    if runner.fvd is None:
        not_measured.insert(0, "FVD (no --fvd-weights: it needs the Kinetics-400 I3D weights)")
    return "; ".join(not_measured)


def write_outputs(runner, points: list[dict]) -> dict:
    c, kind = runner.config, runner.kind
    curve = curves(runner, points)
    for codec, data in curve.items():
        _write_json(os.path.join(c.out, f"{codec}.json"), data)
    per_item = {"averaging": AVERAGING[kind]["per_item"],
                "roles": {"target": "the codec at the target rate (these make the curves)",
                          "vov-match": AVERAGING[kind]["match"]},
                "points": [{k: v for k, v in p.items() if k != "cached"} for p in points]}
    _write_json(os.path.join(c.out, f"per_{kind}.json"), per_item)
    bd = {}
    if "vov" in curve:
        for codec in c.codecs:
            if codec != "vov":
                bd[codec] = {m: bd_rate(curve[codec], curve["vov"], m) for m in ("psnr-rgb", "ms-ssim-db")}
    fixed = {codec: {str(b): {m: at_rate(curve[codec], m, b) for m in ("psnr-rgb", "ms-ssim")} for b in c.points}
             for codec in c.codecs}
    timing = {codec: {t: _mean(curve[codec]["results"][_key(t)]) for t in runner.times} for codec in c.codecs}
    clips = {"timing": CLIP_TIMING, "matched": matched(runner, points)} if kind == "clip" else {}
    summary = {
        f"{kind}s": _items(runner), "rates": c.rates, "codecs": c.codecs,
        "metrics": runner.metric_names + (["fvd"] if runner.fvd is not None else []),
        "averaging": AVERAGING[kind]["summary"], **clips,
        "bd_rate": {"anchor": "each baseline", "test": "vov", "method": "pchip (bjontegaard package)",
                    "sign": "negative = vov needs fewer bits", "values": bd},
        "fixed_rates": fixed, f"timing_per_{kind}": timing, "notes": runner.notes,
        "not_measured": _not_measured(runner),
    }
    _write_json(os.path.join(c.out, "summary.json"), summary)
    text = format_summary(runner, curve, summary)
    with open(os.path.join(c.out, "summary.txt"), "w") as f:
        f.write(text)
    return {"curves": curve, "summary": summary, "text": text}


def _write_json(path: str, data) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def _fmt(value, digits=2, unit="") -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def bd_rate_lines(values: dict, curve: dict, width: int) -> list[str]:
    """summary.txt's BD-rate of vov against each baseline, PSNR and MS-SSIM, with the reason where undefined."""
    if not values:
        return []
    lines = ["", "BD-rate of vov against each baseline (PCHIP; negative = vov saves bits):"]
    for codec, v in values.items():
        parts = []
        for metric, label in (("psnr-rgb", "PSNR"), ("ms-ssim-db", "MS-SSIM")):
            e = v[metric]
            parts.append(f"{label} {_fmt(e['value'], 1, '%')}" + (f" [{e['note']}]" if e["note"] else ""))
        lines.append(f"  vs {curve[codec]['name']:<{width}} " + "; ".join(parts))
    return lines


def _columns(runner) -> list[tuple[str, str, int, int]]:
    """summary.txt's table: (header, curve key, digits, width) of each column after the name."""
    columns = [("bpp", "bpp", 4, 8), ("PSNR dB", "psnr-rgb", 2, 6), ("MS-SSIM", "ms-ssim", 4, 6)]
    if runner.kind == "image":
        return columns + [("GMSD", "gmsd", 4, 6), ("encode s", "encode-s", 2, 7), ("decode s", "decode-s", 2, 6)]
    return (columns + ([("FVD", "fvd", 1, 7)] if runner.fvd is not None else [])
            + [("encode s", "encode-s", 2, 8), ("decode s", "decode-s", 2, 7), ("first frame s", "first-frame-s", 3, 7)])


def format_summary(runner, curve: dict, summary: dict) -> str:
    c, clips = runner.config, runner.kind == "clip"
    columns, width = _columns(runner), 14 if clips else 12
    head = " | ".join(h for h, _, _, _ in columns)
    lines = [f"vov bench{' (video)' if clips else ''}: {len(runner.items)} {runner.noun}(s), "
             f"rates {', '.join(f'{r:g}' for r in c.rates)} bpp, codecs {', '.join(c.codecs)}",
             AVERAGING[runner.kind]["text"], "", f"Mean per target rate ({head}):"]
    for codec in c.codecs:
        r = curve[codec]["results"]
        for i, rate in enumerate(r["target-bpp"]):
            flag = "" if r["reached"][i] else f"  (not reached on every {runner.noun})"
            cells = " | ".join(f"{_fmt(r[key][i], digits):>{w}}" for _, key, digits, w in columns)
            lines.append(f"  {curve[codec]['name']:<{width}} @{rate:<6g} {cells}{flag}")
    if clips and summary["matched"]:
        lines += ["", f"At the size vov reached on each video ({head}; * = not within 10% of vov's size):"]
        for row in summary["matched"]:
            lines.append(f"  {row['clip']} (vov target {row['target_bpp']:g} bpp):")
            for e in row["entries"]:
                flag = "" if e["reached"] else " *"
                lines.append(f"    {e['name']:<14} {e['bpp']:.4f}{flag:<2} | {e['psnr-rgb']:6.2f} | "
                             f"{e['ms-ssim']:.4f} | " + (f"{_fmt(e.get('fvd'), 1):>7} | " if runner.fvd is not None else "")
                             + f"{_fmt(e['encode_s']):>8} | {_fmt(e['decode_s']):>7} | "
                               f"{_fmt(e['first_frame_s'], 3):>7}")
    lines += bd_rate_lines(summary["bd_rate"]["values"], curve, width)
    if not clips:
        lines += ["", "At fixed rates (PCHIP interpolation of the mean curve in log bpp; PSNR dB / MS-SSIM):"]
        for codec in c.codecs:
            cells = []
            for b in c.points:
                e = summary["fixed_rates"][codec][str(b)]
                if e["psnr-rgb"]["value"] is None:
                    cells.append(f"{b:g}: {e['psnr-rgb']['note']}")
                else:
                    cells.append(f"{b:g}: {e['psnr-rgb']['value']:.2f} / {_fmt(e['ms-ssim']['value'], 4)}")
            lines.append(f"  {curve[codec]['name']:<12} " + "; ".join(cells))
    if runner.notes:
        lines += ["", "Notes:", *[f"  {n}" for n in runner.notes]]
    lines.append(f"Not measured: {summary['not_measured']}.")
    return "\n".join(lines) + "\n"
