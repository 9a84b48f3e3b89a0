"""From video points to results: CompressAI-style curves, the table at vov's sizes, BD-rates.

Averaging: PSNR (RGB, 8-bit) and MS-SSIM are computed per frame and averaged over a video's
frames; at each target rate a codec's bpp, metrics and times are then the means over the videos.
FVD is one number per codec and rate over all the videos' windows. A rate point that some video
did not reach is kept with `reached: false` (and, like the image benchmark, still plotted hollow).

The *matched* table holds, per video, vov's point and each baseline's point at the size vov really
reached (`role: "vov-match"`): the nearest size each baseline gets to, flagged where it cannot get
within 10% of it.
"""

from __future__ import annotations

import os

import numpy as np

from vov.bench.summary import _fmt, _write_json, at_rate, bd_rate, bd_rate_lines, msssim_db

TIMES = ("encode_s", "decode_s", "first_frame_s")


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def curves(runner, points: list[dict]) -> dict[str, dict]:
    """codec -> {"name", "description", "averaging", "results": {"bpp": [...], "psnr-rgb": [...], ...}}."""
    out = {}
    for codec in runner.config.codecs:
        results: dict[str, list] = {"target-bpp": [], "bpp": [], "psnr-rgb": [], "ms-ssim": [], "ms-ssim-db": [],
                                    "encode-s": [], "decode-s": [], "first-frame-s": [], "reached": [], "clips": []}
        if runner.fvd is not None:
            results["fvd"] = []
        for rate in runner.config.rates:
            group = [p for p in points if p["codec"] == codec and p["target_bpp"] == rate and "metrics" in p
                     and p.get("role", "target") == "target"]
            results["target-bpp"].append(rate)
            results["bpp"].append(_mean(p["bpp"] for p in group))
            for m in ("psnr-rgb", "ms-ssim"):
                results[m].append(_mean(p["metrics"][m] for p in group))
            ms = results["ms-ssim"][-1]
            results["ms-ssim-db"].append(msssim_db(ms) if ms is not None else None)
            for t in TIMES:
                results[t.replace("_", "-")].append(_mean(p.get(t) for p in group))
            results["reached"].append(bool(group) and len(group) == len(runner.items) and all(p["reached"] for p in group))
            results["clips"].append(len(group))
            if "fvd" in results:
                results["fvd"].append(group[0].get("fvd") if group else None)
        out[codec] = {"name": runner.label(codec), "description": runner.description(codec),
                      "averaging": "per frame, then the mean over a video's frames, then the mean over videos "
                                   "at each target rate", "results": results}
    return out


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
                     **{t: p.get(t) for t in TIMES}}
            if "fvd" in p:
                entry["fvd"] = p["fvd"]
            row["entries"].append(entry)
        rows.append(row)
    return rows


def write_outputs(runner, points: list[dict]) -> dict:
    c = runner.config
    curve = curves(runner, points)
    for codec, data in curve.items():
        _write_json(os.path.join(c.out, f"{codec}.json"), data)
    per_clip = {"averaging": "none: one entry per video, codec and target rate; metrics hold the per-frame values",
                "roles": {"target": "the codec at the target rate (these make the curves)",
                          "vov-match": "a baseline at the bpp vov reached on that video"},
                "points": [{k: v for k, v in p.items() if k != "cached"} for p in points]}
    _write_json(os.path.join(c.out, "per_clip.json"), per_clip)
    bd = {}
    if "vov" in curve:
        for codec in c.codecs:
            if codec != "vov":
                bd[codec] = {m: bd_rate(curve[codec], curve["vov"], m) for m in ("psnr-rgb", "ms-ssim-db")}
    fixed = {codec: {str(b): {m: at_rate(curve[codec], m, b) for m in ("psnr-rgb", "ms-ssim")} for b in c.points}
             for codec in c.codecs}
    timing = {codec: {t: _mean(curve[codec]["results"][t.replace("_", "-")]) for t in TIMES}
              for codec in c.codecs}
    not_measured = ["LPIPS and DISTS (image metrics; not part of the video benchmark)"]
    if runner.fvd is None:
        not_measured.insert(0, "FVD (no --fvd-weights: it needs the Kinetics-400 I3D weights)")
    summary = {
        "clips": [{"name": it.name, "path": it.path, "width": it.size[0], "height": it.size[1], "frames": it.frames,
                   "fps": list(it.clip.fps), "source": {"matrix": it.clip.matrix, "range": it.clip.range,
                                                        "chroma": it.clip.chroma, "bits": it.clip.bits}}
                  for it in runner.items],
        "rates": c.rates, "codecs": c.codecs, "metrics": runner.metric_names + (["fvd"] if runner.fvd else []),
        "averaging": "PSNR (RGB, 8-bit frames) and MS-SSIM (RGB): per frame, then the mean over a video's frames, "
                     "then the mean over videos; FVD: over all videos' 16-frame windows at once",
        "timing": "wall-clock seconds on this machine; first_frame_s: vov from calling codec.decode_clips to its "
                  "first yield, baselines from starting ffmpeg to the first whole frame read from its pipe",
        "matched": matched(runner, points),
        "bd_rate": {"anchor": "each baseline", "test": "vov", "method": "pchip (bjontegaard package)",
                    "sign": "negative = vov needs fewer bits", "values": bd},
        "fixed_rates": fixed, "timing_per_clip": timing, "notes": runner.notes,
        "not_measured": "; ".join(not_measured),
    }
    _write_json(os.path.join(c.out, "summary.json"), summary)
    text = format_summary(runner, curve, summary)
    with open(os.path.join(c.out, "summary.txt"), "w") as f:
        f.write(text)
    return {"curves": curve, "summary": summary, "text": text}


def format_summary(runner, curve: dict, summary: dict) -> str:
    c = runner.config
    fvd = runner.fvd is not None
    lines = [f"vov bench (video): {len(runner.items)} video(s), rates {', '.join(f'{r:g}' for r in c.rates)} bpp, "
             f"codecs {', '.join(c.codecs)}",
             "PSNR (RGB) and MS-SSIM: per frame, then the mean over frames, then over videos.", ""]
    head = "bpp | PSNR dB | MS-SSIM | " + ("FVD | " if fvd else "") + "encode s | decode s | first frame s"
    lines.append(f"Mean per target rate ({head}):")
    for codec in c.codecs:
        r = curve[codec]["results"]
        for i, rate in enumerate(r["target-bpp"]):
            flag = "" if r["reached"][i] else "  (not reached on every video)"
            lines.append(f"  {curve[codec]['name']:<14} @{rate:<6g} {_fmt(r['bpp'][i], 4):>8} | "
                         f"{_fmt(r['psnr-rgb'][i]):>6} | {_fmt(r['ms-ssim'][i], 4):>6} | "
                         + (f"{_fmt(r['fvd'][i], 1):>7} | " if fvd else "")
                         + f"{_fmt(r['encode-s'][i]):>8} | {_fmt(r['decode-s'][i]):>7} | "
                         f"{_fmt(r['first-frame-s'][i], 3):>7}{flag}")
    if summary["matched"]:
        lines += ["", f"At the size vov reached on each video ({head}; * = not within 10% of vov's size):"]
        for row in summary["matched"]:
            lines.append(f"  {row['clip']} (vov target {row['target_bpp']:g} bpp):")
            for e in row["entries"]:
                flag = "" if e["reached"] else " *"
                lines.append(f"    {e['name']:<14} {e['bpp']:.4f}{flag:<2} | {e['psnr-rgb']:6.2f} | "
                             f"{e['ms-ssim']:.4f} | " + (f"{_fmt(e.get('fvd'), 1):>7} | " if fvd else "")
                             + f"{_fmt(e['encode_s']):>8} | {_fmt(e['decode_s']):>7} | "
                               f"{_fmt(e['first_frame_s'], 3):>7}")
    lines += bd_rate_lines(summary["bd_rate"]["values"], curve, 14)
    if runner.notes:
        lines += ["", "Notes:", *[f"  {n}" for n in runner.notes]]
    lines.append(f"Not measured: {summary['not_measured']}.")
    return "\n".join(lines) + "\n"
