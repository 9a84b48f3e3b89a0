"""The video benchmark's HTML report: one static file, frames and plots embedded, no server.

The image report's structure (setup, RD plots, BD-rates, times, then the media) with clips in place
of images: per video and vov rate, the original, vov and the baseline with the best PSNR at the
size vov reached, side by side on one frame slider (with play/pause at the clip's rate), so every
pane shows the same frame; under them, PSNR per frame of both codecs, with the borders of vov's
clips marked. Each pane's frames are one lossless image strip (frames stacked top to bottom),
moved by the slider.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os

import numpy as np

from vov.bench.report import CSS, _params, bd_rate_section
from vov.files import write_atomic

COLOURS = {"vov": "#d62728", "x264": "#7f7f7f", "x265": "#ff7f0e", "svt-av1": "#1f77b4", "aom-av1": "#17becf",
           "vvc": "#9467bd"}
WEBP_MAX_SIDE = 16383  # taller strips go as PNG

VIDEO_CSS = """
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

JS = """
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


def _png_uri(fig) -> str:
    from matplotlib import pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def rd_plot(curves: dict, metric: str, label: str) -> str:
    """`metric` against bpp, one line (or point) per codec, as a base64 PNG data URI."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=106)
    for codec, data in curves.items():
        r = data["results"]
        rows = sorted((b, v, bool(ok)) for b, v, ok in zip(r["bpp"], r[metric], r["reached"])
                      if b is not None and v is not None)
        if not rows:
            continue
        colour = COLOURS.get(codec)
        xs, ys = [b for b, _, _ in rows], [v for _, v, _ in rows]
        ax.plot(xs, ys, "-", color=colour, lw=2.2 if codec == "vov" else 1.4, label=data["name"])
        ax.plot([b for b, _, ok in rows if ok], [v for _, v, ok in rows if ok], "o", color=colour, ms=5)
        ax.plot([b for b, _, ok in rows if not ok], [v for _, v, ok in rows if not ok], "o", mfc="white",
                color=colour, ms=6)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(label)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png_uri(fig)


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
    return _png_uri(fig)


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


def build_html(runner, points: list[dict], result: dict) -> str:
    c = runner.config
    curves, summary = result["curves"], result["summary"]
    e = html.escape
    fvd = runner.fvd is not None
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>vov video bench report</title>",
             f"<style>{CSS}{VIDEO_CSS}</style></head><body>", "<h1>vov bench: clips, rate-distortion report</h1>"]
    parts.append("<section id='setup'><h2>Setup</h2><ul>")
    parts.append(f"<li>{len(runner.items)} video(s): " + ", ".join(
        f"{e(it.name)} ({it.size[0]}x{it.size[1]}, {it.frames} frames at {it.clip.fps[0]}/{it.clip.fps[1]} fps)"
        for it in runner.items) + "</li>")
    parts.append(f"<li>target rates: {', '.join(f'{r:g}' for r in c.rates)} bpp (8 x bytes / (frames x height x "
                 "width), from the real file or stream)</li>")
    for codec in c.codecs:
        parts.append(f"<li><b>{e(curves[codec]['name'])}</b>: {e(curves[codec]['description'])}</li>")
    parts.append(f"<li>{e(summary['averaging'])}</li><li>{e(summary['timing'])}</li>"
                 f"<li>not measured: {e(summary['not_measured'])}</li></ul></section>")

    parts.append("<section id='rd'><h2>Rate-distortion</h2><div class='plots'>")
    for metric, label in (("psnr-rgb", "PSNR-RGB (dB)"), ("ms-ssim", "MS-SSIM")):
        parts.append(f"<img class='rd' alt='{e(metric)} against bpp' src='{rd_plot(curves, metric, label)}'>")
    parts.append("</div><p class='note'>Means over videos at each target rate; hollow markers: the target was not "
                 "reached on every video.</p></section>")

    parts.append("<section id='matched'><h2>At the size vov reached</h2>")
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

    parts += bd_rate_section(summary["bd_rate"]["values"], curves)

    parts.append("<section id='timing'><h2>Encode and decode times</h2><table><tr><th class='l'>codec</th>"
                 "<th>encode s / video</th><th>decode s / video</th><th>first frame s</th></tr>")
    for codec in c.codecs:
        t = summary["timing_per_clip"][codec]
        cells = "".join("<td>-</td>" if t[k] is None else f"<td>{t[k]:.3f}</td>" for k in
                        ("encode_s", "decode_s", "first_frame_s"))
        parts.append(f"<tr><td class='l'>{e(curves[codec]['name'])}</td>{cells}</tr>")
    parts.append("</table><p class='note'>Means over videos and target rates; wall-clock on this machine. A point "
                 "taken from the cache keeps the times of the run that made it.</p></section>")

    parts.append("<section id='clips'><h2>Clips</h2><p class='note'>One slider moves every pane to the same frame "
                 "(play runs them at the clip's rate): original | vov | the baseline with the best PSNR at the "
                 "size vov reached (the table above has the others).</p>")
    for item in runner.items:
        parts.append(f"<h3>{e(item.name)}</h3>")
        original = strip_uri(item.original)
        fps = item.clip.fps[0] / item.clip.fps[1]
        for rate in c.rates:
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
    parts.append(f"<section id='summary'><h2>Summary (text)</h2><pre>{e(result['text'])}</pre></section>")
    parts.append(f"<script>{JS}</script></body></html>")
    return "\n".join(parts)


def write_report(runner, points: list[dict], result: dict) -> str:
    path = os.path.join(runner.config.out, "report.html")
    write_atomic(path, build_html(runner, points, result).encode("utf-8"))
    return path
