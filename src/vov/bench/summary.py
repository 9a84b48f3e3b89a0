"""From points to results: CompressAI-style curves, BD-rates and values at fixed rates.

Averaging: at each target rate, a codec's bpp and every metric are the means over images of the
per-image values (PSNR included: per image, then the mean). A rate point where some image could
not reach the target (or vov skipped it) is kept in the JSON with `reached: false` and left out
of BD-rates, interpolation and plots.

BD-rate: `bjontegaard.bd_rate(..., method="pchip")`, anchor = the baseline, test = vov, on the
mean curves; negative means vov needs fewer bits for the same quality. MS-SSIM enters it in dB
(-10 log10(1 - MS-SSIM)). Values at fixed bpp come from PCHIP interpolation of the mean curve in
log10(bpp), only inside the measured range of bpp: outside it the table says what the codec
reached instead of extrapolating.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np



def msssim_db(value: float) -> float:
    return -10.0 * math.log10(max(1.0 - value, 1e-10))


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def curves(runner, points: list[dict]) -> dict[str, dict]:
    """codec -> CompressAI-style dict (means over images at each target rate)."""
    names = runner.metrics.names
    out = {}
    for codec in runner.config.codecs:
        label = "vov" if codec == "vov" else runner.baselines[codec].label
        if codec == "vov":
            description = (f"vov, backbone {runner.config.backbone}, {runner.config.steps} fitting steps, "
                           f"{runner.config.sampler_steps} sampler steps, seed {runner.config.seed}")
        else:
            description = runner.baselines[codec].description
        results: dict[str, list] = {"target-bpp": [], "bpp": [], **{m: [] for m in names}, "ms-ssim-db": [],
                                    "encode-s": [], "decode-s": [], "reached": [], "images": []}
        for rate in runner.config.rates:
            group = [p for p in points if p["codec"] == codec and p["target_bpp"] == rate and "metrics" in p
                     and p.get("role", "target") == "target"]
            reached = bool(group) and len(group) == len(runner.items) and all(p["reached"] for p in group)
            results["target-bpp"].append(rate)
            results["bpp"].append(_mean([p["bpp"] for p in group]))
            for m in names:
                results[m].append(_mean([p["metrics"][m] for p in group if m in p["metrics"]]))
            ms = results["ms-ssim"][-1] if "ms-ssim" in results else None
            results["ms-ssim-db"].append(msssim_db(ms) if ms is not None else None)
            results["encode-s"].append(_mean([p["encode_s"] for p in group]))
            results["decode-s"].append(_mean([p["decode_s"] for p in group]))
            results["reached"].append(reached)
            results["images"].append(len(group))
        out[codec] = {"name": label, "description": description,
                      "averaging": "per-image values, then the mean over images at each target rate", "results": results}
    return out


def usable(curve: dict, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(bpp, metric) of the curve's points, sorted by bpp, repeated bpp dropped.

    A point whose target was not reached on every image is still a true operating point of the
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


def write_outputs(runner, points: list[dict]) -> dict:
    c = runner.config
    curve = curves(runner, points)
    for codec, data in curve.items():
        _write_json(os.path.join(c.out, f"{codec}.json"), data)
    per_image = {"averaging": "none: one entry per image, codec and target rate",
                 "roles": {"target": "the codec at the target rate (these make the curves)",
                           "vov-match": "a baseline at the bpp vov reached on that image (for the side-by-side view)"},
                 "points": [
        {k: v for k, v in p.items() if k not in ("cached",)} for p in points]}
    _write_json(os.path.join(c.out, "per_image.json"), per_image)

    bd = {}
    if "vov" in curve:
        for codec in c.codecs:
            if codec == "vov":
                continue
            bd[codec] = {"psnr-rgb": bd_rate(curve[codec], curve["vov"], "psnr-rgb"),
                         "ms-ssim-db": bd_rate(curve[codec], curve["vov"], "ms-ssim-db")}
    fixed = {codec: {str(b): {m: at_rate(curve[codec], m, b) for m in ("psnr-rgb", "ms-ssim")} for b in c.points}
             for codec in c.codecs}
    timing = {codec: {"encode_s": _mean([v for v in curve[codec]["results"]["encode-s"] if v is not None]),
                      "decode_s": _mean([v for v in curve[codec]["results"]["decode-s"] if v is not None])}
              for codec in c.codecs}
    summary = {
        "images": [{"name": it.name, "path": it.path, "width": it.size[0], "height": it.size[1]} for it in runner.items],
        "rates": c.rates, "codecs": c.codecs, "metrics": runner.metrics.names,
        "averaging": "PSNR and every other metric: computed per image, then averaged over images",
        "bd_rate": {"anchor": "each baseline", "test": "vov", "method": "pchip (bjontegaard package)",
                    "sign": "negative = vov needs fewer bits", "values": bd},
        "fixed_rates": fixed, "timing_per_image": timing, "notes": runner.notes,
        "not_measured": "FVD (video only; this benchmark measures still images)" +
                        ("" if "lpips" in runner.metrics.names else "; LPIPS (no --lpips-weights)") +
                        ("" if "dists" in runner.metrics.names else "; DISTS (no --dists-weights)"),
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


def format_summary(runner, curve: dict, summary: dict) -> str:
    c = runner.config
    lines = [f"vov bench: {len(runner.items)} image(s), rates {', '.join(f'{r:g}' for r in c.rates)} bpp, "
             f"codecs {', '.join(c.codecs)}",
             "PSNR (RGB) and all metrics: per image, then the mean over images.", ""]
    lines.append("Mean per target rate (bpp | PSNR dB | MS-SSIM | GMSD | encode s | decode s):")
    for codec in c.codecs:
        r = curve[codec]["results"]
        for i, rate in enumerate(r["target-bpp"]):
            flag = "" if r["reached"][i] else "  (not reached on every image)"
            lines.append(f"  {curve[codec]['name']:<12} @{rate:<6g} {_fmt(r['bpp'][i], 4):>8} | "
                         f"{_fmt(r['psnr-rgb'][i]):>6} | {_fmt(r['ms-ssim'][i], 4):>6} | {_fmt(r['gmsd'][i], 4):>6} | "
                         f"{_fmt(r['encode-s'][i]):>7} | {_fmt(r['decode-s'][i]):>6}{flag}")
    lines += bd_rate_lines(summary["bd_rate"]["values"], curve, 12)
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
