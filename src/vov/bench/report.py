"""The benchmark's HTML report, for images and clips: one static file, media and plots embedded, no server.

Sections: the setup, RD plots (matplotlib PNGs in base64), BD-rates, encode/decode times and the
text summary, the same for both kinds; then what each kind shows of itself:

- images: values at fixed rates, and per image a drag-to-compare view with three panes (original |
  vov | the best baseline at the file size vov reached on that image, best by PSNR among those
  that reach it);
- clips: the table at the size vov reached, and per video and vov rate the original, vov and the
  baseline with the best PSNR at that size side by side on one frame slider (with play/pause at
  the clip's rate), so every pane shows the same frame; under them, PSNR per frame of both codecs
  with the borders of vov's clips marked. Each pane's frames are one lossless image strip (frames
  stacked top to bottom), moved by the slider.

One module for both kinds: the page, the plots and the tables are one code path, and the two media
views are the only kind-specific sections (`_image_views`, `_clip_views`), chosen in `build_html`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import shutil
import subprocess
import tempfile

import numpy as np

from vov.bench.metrics import METRICS
from vov.files import write_atomic

COLOURS = {"vov": "#d62728", "jpeg": "#7f7f7f", "webp": "#2ca02c", "avif": "#1f77b4", "jxl": "#9467bd",
           "x265": "#ff7f0e", "x264": "#7f7f7f", "svt-av1": "#1f77b4", "aom-av1": "#17becf", "vvc": "#9467bd"}
WEBP_MAX_SIDE = 16383  # taller strips go as PNG
TIME_HEADERS = {"encode_s": "encode s / {noun}", "decode_s": "decode s / {noun}", "first_frame_s": "first frame s"}
SETUP_RATES = {"image": "bpp from the real file size",
               "clip": "8 x bytes / (frames x height x width), from the real file or stream"}


def _png_b64(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _file_b64(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def _figure_uri(fig) -> str:
    from matplotlib import pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def rd_plot(curves: dict, metric: str) -> str:
    """One RD plot against bpp on a log axis, one line per codec, as a base64 PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    higher, unit, label = METRICS.get(metric, (True, "", metric))
    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=106)
    for codec, data in curves.items():
        r = data["results"]
        rows = sorted((b, v, bool(ok)) for b, v, ok in zip(r["bpp"], r[metric], r["reached"]) if b and v is not None)
        if not rows:
            continue
        colour = COLOURS.get(codec)
        ax.plot([b for b, _, _ in rows], [v for _, v, _ in rows], "-", color=colour, label=data["name"],
                lw=2.2 if codec == "vov" else 1.4)
        ax.plot([b for b, _, ok in rows if ok], [v for _, v, ok in rows if ok], "o", color=colour, ms=4)
        ax.plot([b for b, _, ok in rows if not ok], [v for _, v, ok in rows if not ok], "o", mfc="white",
                color=colour, ms=5)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("bits per pixel (log)")
    ax.set_ylabel(f"{label} ({unit})" if unit else label + ("" if higher else " (lower is better)"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _figure_uri(fig)


def psnr_plot(series: list[tuple[str, str, list[float]]], boundaries: list[int]) -> str:
    """PSNR per frame of each codec, vov's clip borders as dashed lines; a base64 PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 2.2), dpi=100)
    for codec, name, values in series:
        ax.plot(np.arange(1, len(values) + 1), values, "-o", ms=2.5, lw=1.6 if codec == "vov" else 1.1,
                color=COLOURS.get(codec), label=name)
    for b in boundaries:
        ax.axvline(b + 0.5, color="#999", ls="--", lw=0.8)
    ax.set_xlabel("frame")
    ax.set_ylabel("PSNR-RGB (dB)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=min(4, len(series)))
    fig.tight_layout()
    return _figure_uri(fig)


def strip_uri(frames: np.ndarray) -> str:
    """(frames, height, width, 3) uint8 -> a data URI of the frames stacked top to bottom: lossless
    WebP (a third smaller than PNG on these clips), PNG when the strip is taller than WebP allows."""
    from PIL import Image

    strip = Image.fromarray(np.ascontiguousarray(frames.reshape(-1, *frames.shape[2:])))
    buf = io.BytesIO()
    if strip.height <= WEBP_MAX_SIDE:
        strip.save(buf, format="WEBP", lossless=True, quality=50, method=2)
        return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode()
    strip.save(buf, format="PNG", compress_level=6)
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
COMPARE_JS = """
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

PLAYER_CSS = """
.player{margin:10px 0 26px}.player .cap{font-size:.85em;margin:4px 0}
.panes{display:flex;flex-wrap:wrap;gap:6px}
.pane{position:relative;overflow:hidden;border:1px solid #999;line-height:0}
.pane img{display:block;width:100%;image-rendering:pixelated;transform:translateY(0)}
.pane .tag{position:absolute;top:4px;left:4px;font:12px sans-serif;line-height:1.2;background:rgba(0,0,0,.6);
 color:#fff;padding:2px 5px;white-space:nowrap}
.controls{display:flex;align-items:center;gap:10px;margin:6px 0;font-size:.85em}
.controls input[type=range]{flex:1;max-width:640px}.controls .readout{font-variant-numeric:tabular-nums}
.frames img{border:1px solid #ddd;margin-top:4px}
"""
PLAYER_JS = """
function setupPlayer(el){
  var n=parseInt(el.dataset.frames), fps=parseFloat(el.dataset.fps)||25;
  var slider=el.querySelector('input.frame'), button=el.querySelector('button.play');
  var readout=el.querySelector('.readout'), strips=el.querySelectorAll('.pane img');
  var psnr=JSON.parse(el.dataset.psnr), names=JSON.parse(el.dataset.names), timer=null;
  function show(k){
    strips.forEach(function(img){img.style.transform='translateY('+(-100*k/n)+'%)';});
    var parts=['frame '+(k+1)+' / '+n];
    for(var i=0;i<names.length;i++){parts.push(names[i]+' '+psnr[i][k].toFixed(2)+' dB');}
    readout.textContent=parts.join(' \\u00b7 ');
  }
  slider.addEventListener('input',function(){show(parseInt(slider.value));});
  button.addEventListener('click',function(){
    if(timer){clearInterval(timer);timer=null;button.textContent='play';return;}
    button.textContent='pause';
    timer=setInterval(function(){slider.value=(parseInt(slider.value)+1)%n;show(parseInt(slider.value));},1000/fps);
  });
  show(parseInt(slider.value));
}
document.querySelectorAll('.player').forEach(setupPlayer);
"""


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


def _params(p: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in p.get("params", {}).items())


def _page(runner, result: dict) -> tuple[list[str], list[str]]:
    """The page's head, setup and RD sections, and its tail (text summary, script), for either kind."""
    c, clips = runner.config, runner.kind == "clip"
    curves, summary = result["curves"], result["summary"]
    e = html.escape
    title, h1 = (("vov video bench report", "vov bench: clips, rate-distortion report") if clips else
                 ("vov bench report", "vov bench: rate-distortion report"))
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>",
             f"<style>{CSS}{PLAYER_CSS if clips else ''}</style></head><body>", f"<h1>{h1}</h1>"]
    parts.append("<section id='setup'><h2>Setup</h2><ul>")
    parts.append(f"<li>{len(runner.items)} {runner.noun}(s): " + ", ".join(
        f"{e(it.name)} ({it.size[0]}x{it.size[1]}" + (f", {it.frames} frames at {it.clip.fps[0]}/{it.clip.fps[1]} fps"
                                                      if clips else "") + ")" for it in runner.items) + "</li>")
    parts.append(f"<li>target rates: {', '.join(f'{r:g}' for r in c.rates)} bpp ({SETUP_RATES[runner.kind]})</li>")
    for codec in c.codecs:
        parts.append(f"<li><b>{e(curves[codec]['name'])}</b>: {e(curves[codec]['description'])}</li>")
    parts.append(f"<li>{e(summary['averaging'])}</li>" + (f"<li>{e(summary['timing'])}</li>" if clips else "")
                 + f"<li>not measured: {e(summary['not_measured'])}</li></ul></section>")
    parts.append("<section id='rd'><h2>Rate-distortion</h2><div class='plots'>")
    for metric in runner.metric_names:
        parts.append(f"<img class='rd' alt='{e(metric)} against bpp' src='{rd_plot(curves, metric)}'>")
    parts.append(f"</div><p class='note'>Means over {runner.noun}s at each target rate; hollow markers: the target "
                 f"was not reached on every {runner.noun} (the mean of the nearest settings is shown).</p></section>")
    tail = [f"<section id='summary'><h2>Summary (text)</h2><pre>{e(result['text'])}</pre></section>",
            f"<script>{PLAYER_JS if clips else COMPARE_JS}</script></body></html>"]
    return parts, tail


def _timing_section(runner, result: dict) -> list[str]:
    curves, timing = result["curves"], result["summary"][f"timing_per_{runner.kind}"]
    parts = ["<section id='timing'><h2>Encode and decode times</h2><table><tr><th class='l'>codec</th>"
             + "".join(f"<th>{TIME_HEADERS[t].format(noun=runner.noun)}</th>" for t in runner.times) + "</tr>"]
    for codec in runner.config.codecs:
        t = timing[codec]
        cells = "".join("<td>-</td>" if t[k] is None else f"<td>{t[k]:.3f}</td>" for k in runner.times)
        parts.append(f"<tr><td class='l'>{html.escape(curves[codec]['name'])}</td>{cells}</tr>")
    parts.append(f"</table><p class='note'>Means over {runner.noun}s and target rates; wall-clock on this machine; "
                 "baselines include the external tool's start-up and file I/O. A point taken from the cache keeps "
                 "the times of the run that made it.</p></section>")
    return parts


def build_html(runner, points: list[dict], result: dict) -> str:
    clips = runner.kind == "clip"
    summary = result["summary"]
    parts, tail = _page(runner, result)
    if clips:
        parts += _matched_section(runner, result)
    parts += bd_rate_section(summary["bd_rate"]["values"], result["curves"],
                             "PCHIP (bjontegaard package), anchor = baseline, test = vov, mean curves; negative "
                             "means vov needs fewer bits for the same quality.")
    if not clips:
        parts += _fixed_section(runner, result)
    parts += _timing_section(runner, result)
    parts += _clip_views(runner, points, result) if clips else _image_views(runner, points, result)
    return "\n".join(parts + tail)


def write_report(runner, points: list[dict], result: dict) -> str:
    path = os.path.join(runner.config.out, "report.html")
    write_atomic(path, build_html(runner, points, result).encode("utf-8"))
    return path


# ---- images


def _fixed_section(runner, result: dict) -> list[str]:
    c, curves, summary, e = runner.config, result["curves"], result["summary"], html.escape
    parts = ["<section id='fixed'><h2>Quality at fixed rates</h2><table><tr><th class='l'>codec</th>"]
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
    return parts


def _image_views(runner, points: list[dict], result: dict) -> list[str]:
    curves, e = result["curves"], html.escape
    parts = ["<section id='images'><h2>Images</h2><p class='note'>Drag on an image to move the nearer divider: "
             "original | vov | the baseline with the best PSNR at the file size vov reached on that image "
             "(at the target rate when vov is not in the run).</p>"]
    for item in runner.items:
        parts.append(f"<h3>{e(item.name)}</h3>")
        original = _png_b64(item.original)
        for rate in runner.config.rates:
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
    return parts


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


# ---- clips


def _matched_section(runner, result: dict) -> list[str]:
    summary, e, fvd = result["summary"], html.escape, runner.fvd is not None
    parts = ["<section id='matched'><h2>At the size vov reached</h2>"]
    if summary["matched"]:
        parts.append("<table><tr><th class='l'>video</th><th class='l'>codec</th><th>bpp</th><th>PSNR-RGB dB</th>"
                     "<th>MS-SSIM</th>" + ("<th>FVD</th>" if fvd else "") +
                     "<th>encode s</th><th>decode s</th><th>first frame s</th><th class='l'>settings</th></tr>")
        for row in summary["matched"]:
            for i, en in enumerate(row["entries"]):
                name = e(f"{row['clip']} @{row['target_bpp']:g}") if i == 0 else ""
                flag = "" if en["reached"] else " <span class='na'>(nearest it reaches)</span>"
                parts.append(f"<tr><td class='l'>{name}</td><td class='l'>{e(en['name'])}</td><td>{en['bpp']:.4f}{flag}</td>"
                             f"<td>{en['psnr-rgb']:.2f}</td><td>{en['ms-ssim']:.4f}</td>"
                             + (f"<td>{en['fvd']:.1f}</td>" if fvd and en.get("fvd") is not None else
                                ("<td class='na'>-</td>" if fvd else ""))
                             + f"<td>{en['encode_s']:.2f}</td><td>{en['decode_s']:.2f}</td>"
                               f"<td>{en['first_frame_s']:.3f}</td><td class='l note'>{e(_params(en))}</td></tr>")
        parts.append("</table><p class='note'>Each baseline at the setting whose stream is nearest in size to vov's "
                     "file on that video.</p>")
    else:
        parts.append("<p class='na'>vov was not part of this run.</p>")
    parts.append("</section>")
    return parts


def _clip_views(runner, points: list[dict], result: dict) -> list[str]:
    curves, e = result["curves"], html.escape
    parts = ["<section id='clips'><h2>Clips</h2><p class='note'>One slider moves every pane to the same frame "
             "(play runs them at the clip's rate): original | vov | the baseline with the best PSNR at the "
             "size vov reached (the table above has the others).</p>"]
    for item in runner.items:
        parts.append(f"<h3>{e(item.name)}</h3>")
        original = strip_uri(item.original)
        fps = item.clip.fps[0] / item.clip.fps[1]
        for rate in runner.config.rates:
            shown = _compared(points, item.name, rate)
            if not shown:
                continue
            panes = [("original", original)] + [(curves[p["codec"]]["name"], strip_uri(runner.decoded(p)))
                                                for p in shown]
            width = int(min((1100 - 8 * len(panes)) // len(panes), max(2 * item.size[0], 360)))
            height = round(width * item.size[1] / item.size[0])
            caption = [f"target {rate:g} bpp"] + [
                f"{e(curves[p['codec']]['name'])}"
                + (f" ({e(_params(p))})" if p["codec"] != "vov" else "")
                + f": {_line(p)}" + ("" if p.get("reached", True) else " (nearest size it reaches)")
                for p in shown]
            names = [curves[p["codec"]]["name"] for p in shown]
            psnr = [[round(v, 3) for v in p["metrics"]["psnr-rgb-frames"]] for p in shown]
            vov = next((p for p in shown if p["codec"] == "vov"), None)
            bounds = list(np.cumsum([s["frames"] for s in vov["segments"]])[:-1]) if vov else []
            parts.append(f"<div class='player' data-clip='{e(item.name)}' data-rate='{rate:g}' "
                         f"data-frames='{item.frames}' data-fps='{fps:.6g}' "
                         f"data-names='{e(json.dumps(names))}' data-psnr='{e(json.dumps(psnr))}'>"
                         f"<div class='cap'>{'<br>'.join(caption)}</div><div class='panes'>")
            for label, uri in panes:
                parts.append(f"<div class='pane' style='width:{width}px;height:{height}px'><img alt='{e(label)}' src='{uri}'>"
                             f"<span class='tag'>{e(label)}</span></div>")
            parts.append("</div><div class='controls'><button class='play' type='button'>play</button>"
                         f"<input class='frame' type='range' min='0' max='{item.frames - 1}' value='0' step='1'>"
                         "<span class='readout'></span></div>"
                         f"<div class='frames'><img class='psnr' alt='PSNR per frame' "
                         f"src='{psnr_plot(list(zip([p['codec'] for p in shown], names, psnr)), [int(b) for b in bounds])}'>"
                         "</div></div>")
    parts.append("</section>")
    return parts


def _line(p: dict) -> str:
    m = p["metrics"]
    extra = f", FVD {p['fvd']:.1f}" if "fvd" in p else ""
    return (f"{p['bpp']:.4f} bpp, PSNR {m['psnr-rgb']:.2f} dB, MS-SSIM {m['ms-ssim']:.4f}{extra}, "
            f"encode {p['encode_s']:.2f} s, decode {p['decode_s']:.2f} s, first frame {p['first_frame_s']:.3f} s")


def _compared(points: list[dict], clip: str, rate: float) -> list[dict]:
    """vov at `rate` on `clip` and the baseline with the best PSNR at vov's size (at `rate` itself when
    vov is absent), preferring baselines that get within 10% of that size."""
    out = []
    vov = next((p for p in points if p["codec"] == "vov" and p["clip"] == clip and p["target_bpp"] == rate
                and "metrics" in p and p.get("key")), None)
    role = "vov-match" if vov else "target"
    if vov:
        out.append(vov)
    pool = [p for p in points if p["codec"] != "vov" and p["clip"] == clip and p["target_bpp"] == rate
            and p.get("role", "target") == role and "metrics" in p and p.get("key")]
    if pool:
        out.append(max(pool, key=lambda p: (bool(p["reached"]), p["metrics"]["psnr-rgb"])))
    return out


# ---- checking a report


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
