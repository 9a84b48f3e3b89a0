"""The benchmark's HTML report: one static file, images and plots embedded, no server.

Sections: the setup, RD plots (matplotlib PNGs in base64), BD-rates, values at fixed rates,
encode/decode times, and per image a drag-to-compare view with three panes (original | vov |
the best baseline at the file size vov reached on that image, best by PSNR among those that reach it).
"""

from __future__ import annotations

import base64
import html
import io
import os
import shutil
import subprocess
import tempfile

import numpy as np

from vov.bench.metrics import METRICS
from vov.files import write_atomic

COLOURS = {"vov": "#d62728", "jpeg": "#7f7f7f", "webp": "#2ca02c", "avif": "#1f77b4", "jxl": "#9467bd",
           "x265": "#ff7f0e"}


def _png_b64(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _file_b64(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def rd_plot(curves: dict, metric: str) -> str:
    """One RD plot as a base64 PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    higher, unit, label = METRICS.get(metric, (True, "", metric))
    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=106)
    for codec, data in curves.items():
        r = data["results"]
        xs = [b for b, v in zip(r["bpp"], r[metric]) if b and v is not None]
        ys = [v for b, v in zip(r["bpp"], r[metric]) if b and v is not None]
        colour = COLOURS.get(codec, None)
        if xs:
            order = np.argsort(xs)
            ax.plot(np.array(xs)[order], np.array(ys)[order], "-", color=colour, label=data["name"],
                    lw=2.2 if codec == "vov" else 1.4)
            ok = [bool(o) for b, v, o in zip(r["bpp"], r[metric], r["reached"]) if b and v is not None]
            ax.plot([x for x, o in zip(xs, ok) if o], [y for y, o in zip(ys, ok) if o], "o", color=colour, ms=4)
            ax.plot([x for x, o in zip(xs, ok) if not o], [y for y, o in zip(ys, ok) if not o], "o", mfc="white",
                    color=colour, ms=5)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("bits per pixel (log)")
    ax.set_ylabel(f"{label} ({unit})" if unit else label + ("" if higher else " (lower is better)"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1150px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:1.6em}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.plots img{margin:4px;border:1px solid #ddd}
.na{color:#999}.note{color:#666;font-size:.85em}
.cmp{position:relative;display:inline-block;max-width:100%;user-select:none;touch-action:none;cursor:ew-resize;
 border:1px solid #999;line-height:0}
.cmp img{display:block;width:100%;image-rendering:pixelated}
.cmp img.layer{position:absolute;top:0;left:0;width:100%;height:100%}
.cmp .bar{position:absolute;top:0;bottom:0;width:2px;background:#fff;box-shadow:0 0 3px #000;pointer-events:none}
.cmp .tag{position:absolute;font:12px sans-serif;line-height:1.2;background:rgba(0,0,0,.6);color:#fff;
 padding:2px 5px;pointer-events:none;white-space:nowrap}
.cmp .t1{top:4px}.cmp .t2{top:24px}.cmp .t3{top:44px}
.compare{margin:10px 0 22px}.compare .cap{font-size:.85em;margin:4px 0}
"""

JS = """
function setup(el){
  var a=0.33,b=0.66, top=el.querySelector('.orig'), mid=el.querySelector('.vov');
  var ba=el.querySelector('.bar.a'), bb=el.querySelector('.bar.b');
  var ta=el.querySelector('.tag.t1'), tb=el.querySelector('.tag.t2'), tc=el.querySelector('.tag.t3');
  function draw(){
    top.style.clipPath='inset(0 '+((1-a)*100)+'% 0 0)';
    mid.style.clipPath='inset(0 '+((1-b)*100)+'% 0 0)';
    ba.style.left=(a*100)+'%'; bb.style.left=(b*100)+'%';
    ta.style.left='4px'; tb.style.left='calc('+(a*100)+'% + 4px)'; tc.style.left='calc('+(b*100)+'% + 4px)';
  }
  var which=null;
  function frac(e){var r=el.getBoundingClientRect();return Math.min(1,Math.max(0,(e.clientX-r.left)/r.width));}
  el.addEventListener('pointerdown',function(e){var f=frac(e);which=Math.abs(f-a)<Math.abs(f-b)?'a':'b';
    el.setPointerCapture(e.pointerId);move(e);});
  function move(e){if(!which)return;var f=frac(e);if(which==='a'){a=Math.min(f,b);}else{b=Math.max(f,a);}draw();}
  el.addEventListener('pointermove',move);
  el.addEventListener('pointerup',function(){which=null;});
  draw();
}
document.querySelectorAll('.cmp').forEach(setup);
"""


def _best_baseline(points: list[dict], image: str, rate: float) -> dict | None:
    """The baseline with the best PSNR at vov's real size on this image (else at the target rate)."""
    for role in ("vov-match", "target"):
        pool = [p for p in points if p["codec"] != "vov" and p["image"] == image and p["target_bpp"] == rate
                and p.get("role", "target") == role and "metrics" in p and p.get("key")]
        reached = [p for p in pool if p.get("reached")]
        if reached:
            return max(reached, key=lambda p: p["metrics"]["psnr-rgb"])
        if pool:  # none gets that small: the one nearest in size, flagged in the caption
            goal = pool[0].get("matched_bpp", rate)
            return {**min(pool, key=lambda p: abs(np.log(p["bpp"] / goal))), "nearest_only": True}
    return None


def _metric_line(p: dict) -> str:
    m = p["metrics"]
    return (f"{p['bpp']:.4f} bpp, PSNR {m['psnr-rgb']:.2f} dB, MS-SSIM {m['ms-ssim']:.4f}, GMSD {m['gmsd']:.4f}"
            + "".join(f", {k.upper()} {m[k]:.4f}" for k in ("lpips", "dists") if k in m))


def bd_rate_section(values: dict, curves: dict, note: str = "") -> list[str]:
    """The report's BD-rate section: vov against each baseline, PSNR and MS-SSIM (dB), with the reason
    where a value is undefined."""
    e = html.escape
    parts = ["<section id='bd'><h2>BD-rate of vov</h2>"]
    if not values:
        return parts + ["<p class='na'>vov or the baselines were not part of this run.</p>", "</section>"]
    metrics = ("psnr-rgb", "ms-ssim-db")
    parts.append("<table><tr><th class='l'>anchor</th><th>BD-rate (PSNR)</th><th>BD-rate (MS-SSIM dB)</th>"
                 "<th class='l'>notes</th></tr>")
    for codec, v in values.items():
        cells = "".join(f"<td>{v[m]['value']:+.1f}%</td>" if v[m]["value"] is not None else "<td class='na'>n/a</td>"
                        for m in metrics)
        notes = "; ".join(f"{m}: {v[m]['note']}" for m in metrics if v[m]["note"])
        parts.append(f"<tr><td class='l'>{e(curves[codec]['name'])}</td>{cells}<td class='l note'>{e(notes)}</td></tr>")
    parts.append("</table>" + (f"<p class='note'>{e(note)}</p>" if note else ""))
    return parts + ["</section>"]


def build_html(runner, points: list[dict], result: dict) -> str:
    c = runner.config
    curves, summary = result["curves"], result["summary"]
    e = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>vov bench report</title>",
             f"<style>{CSS}</style></head><body>", "<h1>vov bench: rate-distortion report</h1>"]
    parts.append("<section id='setup'><h2>Setup</h2><ul>")
    parts.append(f"<li>{len(runner.items)} image(s): " + ", ".join(
        f"{e(it.name)} ({it.size[0]}x{it.size[1]})" for it in runner.items) + "</li>")
    parts.append(f"<li>target rates: {', '.join(f'{r:g}' for r in c.rates)} bpp (bpp from the real file size)</li>")
    for codec in c.codecs:
        parts.append(f"<li><b>{e(curves[codec]['name'])}</b>: {e(curves[codec]['description'])}</li>")
    parts.append(f"<li>{e(summary['averaging'])}</li><li>not measured: {e(summary['not_measured'])}</li></ul></section>")

    parts.append("<section id='rd'><h2>Rate-distortion</h2><div class='plots'>")
    for metric in runner.metrics.names:
        parts.append(f"<img class='rd' alt='{e(metric)} against bpp' src='{rd_plot(curves, metric)}'>")
    parts.append("</div><p class='note'>Hollow markers: the target rate was not reached on every image (the mean of the nearest settings is shown).</p></section>")

    parts += bd_rate_section(summary["bd_rate"]["values"], curves,
                             "PCHIP (bjontegaard package), anchor = baseline, test = vov, mean curves; negative "
                             "means vov needs fewer bits for the same quality.")

    parts.append("<section id='fixed'><h2>Quality at fixed rates</h2><table><tr><th class='l'>codec</th>")
    parts += [f"<th>{b:g} bpp</th>" for b in c.points]
    parts.append("</tr>")
    for codec in c.codecs:
        parts.append(f"<tr><td class='l'>{e(curves[codec]['name'])}</td>")
        for b in c.points:
            cell = summary["fixed_rates"][codec][str(b)]
            if cell["psnr-rgb"]["value"] is None:
                parts.append(f"<td class='na'>{e(cell['psnr-rgb']['note'])}</td>")
            else:
                ms = cell["ms-ssim"]["value"]
                parts.append(f"<td>{cell['psnr-rgb']['value']:.2f} dB / {ms:.4f}</td>")
        parts.append("</tr>")
    parts.append("</table><p class='note'>PSNR / MS-SSIM by PCHIP interpolation of the mean curve in log bpp; "
                 "no extrapolation.</p></section>")

    parts.append("<section id='timing'><h2>Encode and decode times</h2><table><tr><th class='l'>codec</th>"
                 "<th>encode s / image</th><th>decode s / image</th></tr>")
    for codec in c.codecs:
        t = summary["timing_per_image"][codec]
        enc = "-" if t["encode_s"] is None else f"{t['encode_s']:.3f}"
        dec = "-" if t["decode_s"] is None else f"{t['decode_s']:.3f}"
        parts.append(f"<tr><td class='l'>{e(curves[codec]['name'])}</td><td>{enc}</td><td>{dec}</td></tr>")
    parts.append("</table><p class='note'>Wall-clock, this machine; baselines include the external tool's start-up "
                 "and file I/O; a point taken from the cache keeps the time of the run that made it.</p></section>")

    parts.append("<section id='images'><h2>Images</h2><p class='note'>Drag on an image to move the nearer divider: "
                 "original | vov | the baseline with the best PSNR at the file size vov reached on that image "
                 "(at the target rate when vov is not in the run).</p>")
    for item in runner.items:
        parts.append(f"<h3>{e(item.name)}</h3>")
        original = _png_b64(item.original)
        for rate in c.rates:
            vov = next((p for p in points if p["codec"] == "vov" and p["image"] == item.name
                        and p["target_bpp"] == rate and "metrics" in p and p.get("key")), None)
            base = _best_baseline(points, item.name, rate)
            if vov is None and base is None:
                continue
            right = base or vov
            middle = vov or base
            right_name = curves[right["codec"]]["name"]
            mid_name = curves[middle["codec"]]["name"]
            caption = [f"target {rate:g} bpp"]
            if vov:
                caption.append(f"vov: {_metric_line(vov)}")
            if base:
                caption.append(f"{e(right_name)} ({e(_params(base))}): {_metric_line(base)}")
                if base.get("nearest_only"):
                    caption.append("no baseline gets this small; the nearest in size is shown")
            width = min(1100, max(item.size[0], 640))  # small images are shown enlarged, pixels kept sharp
            parts.append(f"<div class='compare' data-image='{e(item.name)}' data-rate='{rate:g}'>"
                         f"<div class='cap'>{' &middot; '.join(caption)}</div><div class='cmp' style='width:{width}px'>"
                         f"<img class='base' alt='{e(right_name)}' src='{_file_b64(runner.cache.path(right['key'], '.png'))}'>"
                         f"<img class='layer vov' alt='{e(mid_name)}' src='{_file_b64(runner.cache.path(middle['key'], '.png'))}'>"
                         f"<img class='layer orig' alt='original' src='{original}'>"
                         "<div class='bar a'></div><div class='bar b'></div>"
                         f"<span class='tag t1'>original</span><span class='tag t2'>{e(mid_name)} {middle['bpp']:.3f} bpp</span>"
                         f"<span class='tag t3'>{e(right_name)} {right['bpp']:.3f} bpp</span></div></div>")
    parts.append("</section>")
    parts.append(f"<section id='summary'><h2>Summary (text)</h2><pre>{e(result['text'])}</pre></section>")
    parts.append(f"<script>{JS}</script></body></html>")
    return "\n".join(parts)


def _params(p: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in p.get("params", {}).items())


def write_report(runner, points: list[dict], result: dict) -> str:
    path = os.path.join(runner.config.out, "report.html")
    write_atomic(path, build_html(runner, points, result).encode("utf-8"))
    return path


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(html_path: str, png_path: str, width: int = 1200, height: int = 2000, timeout: float = 120) -> str:
    """Render a report with headless Chromium (for checking it); returns the PNG's path."""
    from vov.errors import UsageError

    browser = find_chromium()
    if browser is None:
        raise UsageError("no Chromium found: install the Debian package chromium (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="vov-chromium-") as profile:
        argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                f"--screenshot={os.path.abspath(png_path)}", f"--window-size={width},{height}",
                "file://" + os.path.abspath(html_path)]
        try:
            subprocess.run(argv, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UsageError(f"Chromium took more than {timeout:.0f} s to render {html_path}") from None
    if not os.path.isfile(png_path):
        raise UsageError(f"Chromium did not write {png_path}")
    return png_path
