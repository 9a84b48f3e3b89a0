"""Best-of-N files against plain files of the same total size, through the codec, on the held-out photos.

    python bench/scaling_table.py [--crop 256] [--bpp 0.25] [--steps 400] [--workers 2] \
        [--clip F] [--settings K:N[:T]|chosen,...] [--out bench/results/scaling_table.json] [--resume] [--markdown]

For each of the eight held-out photos (a centred crop of --crop pixels a side, or with --clip F an
F-frame 256x192 pan across it; embedded backbone):

- a plain file at --bpp (`vov.codec.compress`, 50 Euler steps to decode);
- for K in {50, 250, 1000} and N in {16, 256, 1024} (or the --settings given: K steps, N candidates and,
  with a third number T, a choice per tile of T x T latent cells; "chosen": N, K and T as the codec
  chooses them when a caller leaves them open), a best-of-N file at the same --bpp
  (`EncodeOptions.scaling`): the codec counts the indices in the file, so both files have the same
  total size and the vector of the best-of-N file gets what the indices leave;
- every file decoded by `vov.codec.decompress` (the decoder replays the chosen noises), and the
  best-of-N file's vector also decoded by the plain ODE on its K-step grid, for the decode-time
  comparison ("at most that of K plain steps").

Rows: bpp, PSNR (RGB, per image), MS-SSIM, encode and decode seconds, the index bits, and the gain
in dB over the plain file. Photos run in parallel workers (one torch thread each); times are wall
clock on the machine as it was shared. The JSON is rewritten after every photo; --resume keeps the
photos already in --out (made with the same crop, rate, fitting steps and settings) and runs the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

KS = (50, 250, 1000)
NS = (16, 256, 1024)


def crops(side: int) -> list[tuple[str, "object"]]:
    import numpy as np

    from vov.media import Picture
    from vov.train import data

    out = []
    for photo in data.held_out_photos():
        img = data.kodak_like(data.load_rgb(photo))
        h, w = img.shape[:2]
        if side:
            top, left = (h - side) // 2, (w - side) // 2
            img = img[top: top + side, left: left + side]
        out.append((photo.name, Picture(np.ascontiguousarray(img, dtype=np.float32) / 255.0)))
    return out


def pans(frames: int, size: tuple[int, int] = (256, 192)) -> list[tuple[str, "object"]]:
    """A `frames`-frame pan across each held-out photo (bench/camera_clips.py's scene, 2 views a side)."""
    from camera_clips import scene

    from vov.media.camera import camera_move
    from vov.train import data

    return [(photo.name, camera_move(scene(data.kodak_like(data.load_rgb(photo)), size, 2.0), frames, "pan", size=size,
                                     fps=(25, 1))) for photo in data.held_out_photos()]


def frame_means(metric, reference, decoded) -> float:
    """A picture metric of an image, or its mean over a clip's frames."""
    if reference.ndim == 3:
        return metric(reference, decoded)
    return sum(metric(a, b) for a, b in zip(reference, decoded)) / len(reference)


def run_photo(args: tuple[str, int, float, int, list[tuple[int, ...]]]) -> dict:
    import torch

    from vov import codec
    from vov.edit import ode_file
    from vov.format import bitstream
    from vov.bench.metrics import ms_ssim, psnr
    from vov.options import EncodeOptions, ScalingOptions

    name, side, bpp, steps, settings, clip_frames = args
    torch.set_num_threads(1)
    media = dict(pans(clip_frames) if clip_frames else crops(side))[name]
    reference = media.frames if clip_frames else media.pixels
    backbone = codec.get_backbone("embedded")

    def measure(options) -> dict:
        start = time.perf_counter()
        report = codec.compress(media, options, backbone=backbone)
        encode = time.perf_counter() - start
        start = time.perf_counter()
        decoded = codec.decompress(report.data, backbone=backbone)
        decoded = decoded.frames if clip_frames else decoded.pixels
        decode = time.perf_counter() - start
        return {"bpp": report.bpp, "bytes": len(report.data), "index_bits": report.index_bits,
                "psnr": frame_means(psnr, reference, decoded), "ms_ssim": frame_means(ms_ssim, reference, decoded),
                "encode_seconds": encode, "decode_seconds": decode, "data": report.data}

    base = EncodeOptions(target_bpp=bpp, steps=steps)
    plain = measure(base)
    rows = []
    for setting in settings:
        k, n, tile = (*setting, 0)[:3] if setting else (None, None, None)  # (): N, K and T as the codec chooses
        row = measure(dataclasses.replace(base, scaling=ScalingOptions(candidates=n, steps=k, tile=tile)))
        searched = bitstream.load(row["data"])
        f = ode_file(searched)  # the same vector decoded by the plain ODE on the K-step grid
        start = time.perf_counter()
        codec.decompress(f, backbone=backbone)
        row.update(K=searched.sampler_steps, N=1 << searched.search_bits, T=searched.search_tile,
                   chosen=not setting, ode_k_decode_seconds=time.perf_counter() - start,
                   gain_db=row["psnr"] - plain["psnr"], size_ratio=row["bytes"] / plain["bytes"])
        rows.append({key: v for key, v in row.items() if key != "data"})
    return {"photo": name, "plain": {key: v for key, v in plain.items() if key != "data"}, "rows": rows}


def summarise(photos: list[dict]) -> list[dict]:
    import numpy as np

    table = []
    keys = ("bpp", "psnr", "ms_ssim", "encode_seconds", "decode_seconds", "ode_k_decode_seconds", "gain_db",
            "index_bits", "size_ratio")
    table.append({"setting": "plain", **{k: float(np.mean([p["plain"][k] for p in photos]))
                                          for k in ("bpp", "psnr", "ms_ssim", "encode_seconds", "decode_seconds")}})
    for setting in sorted({setting_of(r) for p in photos for r in p["rows"]}):
        rows = [r for p in photos for r in p["rows"] if setting_of(r) == setting]
        table.append({"setting": setting, "photos": len(rows),
                      **{key: float(np.mean([r[key] for r in rows])) for key in keys}})
        if setting == "chosen":
            table[-1]["choices"] = sorted({f"K={r['K']} N={r['N']} T={r['T']}" for r in rows})
    return table


def setting_of(row: dict) -> str:
    """A row's setting as the summary names it: K, N (and T) given, or "chosen" by the codec."""
    if row.get("chosen"):
        return "chosen"
    return f"K={row['K']} N={row['N']}" + (f" T={row['T']}" if row.get("T") else "")


def markdown(summary: list[dict]) -> str:
    """The summary as the Markdown table the README and docs/best-of-n.md show."""
    plain = summary[0]
    lines = ["| file | bpp | PSNR | gain at equal size | MS-SSIM | index bits | encode s | decode s (K-step ODE) |",
             "|---|---|---|---|---|---|---|---|",
             f"| plain, 50 ODE steps | {plain['bpp']:.4f} | {plain['psnr']:.2f} dB | | {plain['ms_ssim']:.3f} | | "
             f"{plain['encode_seconds']:.0f} | {plain['decode_seconds']:.1f} |"]
    for row in summary[1:]:
        if row["setting"] == "chosen":
            name = "chosen by the codec: " + "; ".join(row["choices"])
        else:
            values = dict(part.split("=") for part in row["setting"].split())
            name = f"K = {values['K']}, N = {values['N']}" + (f", tiles of {values['T']}" if "T" in values else "")
        lines.append(f"| {name} | {row['bpp']:.4f} | {row['psnr']:.2f} dB | {row['gain_db']:+.2f} dB | "
                     f"{row['ms_ssim']:.3f} | {row['index_bits']:.0f} | {row['encode_seconds']:.0f} | "
                     f"{row['decode_seconds']:.1f} ({row['ode_k_decode_seconds']:.1f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--bpp", type=float, default=0.25)
    parser.add_argument("--steps", type=int, default=400, help="fitting steps of every file")
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--clip", type=int, default=0, metavar="F",
                        help="code an F-frame 256x192 pan across each photo instead of a crop (PSNR and MS-SSIM: "
                             "means over the frames)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--settings", default=",".join(f"{k}:{n}" for k in KS for n in NS),
                        help="K:N, K:N:T or chosen, comma-separated")
    parser.add_argument("--out", default="bench/results/scaling_table.json")
    parser.add_argument("--resume", action="store_true", help="keep the photos already in --out, run the rest")
    parser.add_argument("--markdown", action="store_true", help="print the table of --out as Markdown and stop")
    args = parser.parse_args(argv)
    if args.markdown:
        with open(args.out) as f:
            print(markdown(json.load(f)["summary"]))
        return 0
    try:
        settings = [() if s == "chosen" else tuple(int(x) for x in s.split(":")) for s in args.settings.split(",")]
    except ValueError:
        settings = [(0,)]
    if any(len(s) not in (0, 2, 3) for s in settings):
        parser.error("--settings takes K:N, K:N:T or chosen items")
    from vov.train import data

    names = [photo.name for photo in data.held_out_photos()][: args.photos]
    photos, started, before = [], time.perf_counter(), 0.0
    if args.resume and os.path.exists(args.out):
        with open(args.out) as f:
            done = json.load(f)
        same = ((done["crop"], done["target_bpp"], done["fit_steps"], done.get("clip_frames", 0))
                == (args.crop, args.bpp, args.steps, args.clip))
        asked = sorted("chosen" if not s else f"K={s[0]} N={s[1]}" + (f" T={s[2]}" if len(s) > 2 and s[2] else "")
                       for s in settings)
        if not same or any(sorted(setting_of(r) for r in p["rows"]) != asked for p in done["photos"]):
            parser.error(f"{args.out} was made with other settings; give another --out")
        photos, before = [p for p in done["photos"] if p["photo"] in names], done["seconds"]
        names = [name for name in names if name not in {p["photo"] for p in photos}]
    with ProcessPoolExecutor(args.workers) as pool:
        jobs = [pool.submit(run_photo, (name, args.crop, args.bpp, args.steps, settings, args.clip)) for name in names]
        for job in as_completed(jobs):
            photos.append(job.result())
            command = " ".join(a for a in argv or sys.argv[1:] if a != "--resume")
            result = {"command": f"python bench/scaling_table.py {command}",
                      "crop": args.crop, "clip_frames": args.clip, "target_bpp": args.bpp, "fit_steps": args.steps,
                      "seconds": before + time.perf_counter() - started, "summary": summarise(photos), "photos": photos}
            with open(args.out + ".tmp", "w") as f:
                json.dump(result, f, indent=1)
            os.replace(args.out + ".tmp", args.out)
            print(f"{photos[-1]['photo']}: plain {photos[-1]['plain']['psnr']:.2f} dB; "
                  + ", ".join(f"{r['K']}:{r['N']}:{r['T']} {r['gain_db']:+.2f}" for r in photos[-1]["rows"]), flush=True)
    for row in summarise(photos):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
