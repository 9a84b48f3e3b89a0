"""The embedded model's two generations side by side, in one run, on the eight held-out photos.

    python bench/embedded_generations.py codec [--rates 0.02,0.05,0.1] [--steps 600] [--workers 2] [--resume]
        [--generations first,second] [--modes plain,best-of-n] [--photos 8]
    python bench/embedded_generations.py speed [--repeats 8]
    python bench/embedded_generations.py latents
    python bench/embedded_generations.py samples
    python bench/embedded_generations.py curve --run-dir RUN [--until STEP]
    python bench/embedded_generations.py table                 # the Markdown tables of the JSON files

- `codec`: every held-out photo (768x512) at every rate, a plain file and a file with the best-of-N
  defaults, made by `vov.codec.compress` and decoded by `vov.codec.decompress` on each generation:
  bpp, PSNR (RGB, per image, then the mean), MS-SSIM and blockiness (below). Jobs run in parallel
  workers (one torch thread each); the JSON is rewritten after each job; --resume keeps what is done.
- `speed`: a fitting step (forward and backward with the default adapter) and a whole decode (50
  steps and the latent decode) at 768x512, both generations alternating in one process; ratios of
  the second to the first.
- `latents`: each generation's latent round trip on the held-out photos (PSNR, MS-SSIM, encode and
  decode seconds), and what a decode looks like when the latent is off: Gaussian error of a given
  size in the whitened latent, decoded, measured, and saved as pictures.
- `samples`: eight samples (256x256, seeds 0-7, 50 steps) of each prior, one row each, as a PNG.
- `curve`: the training curve of a run folder (its train.log) as a PNG and its compute.

Blockiness: the mean absolute difference between neighbouring pixels across the 8-pixel grid's
boundaries divided by the same mean inside the blocks, both directions together; about 1 for a
photo, far above 1 for a picture built of 8x8 blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

RESULTS = Path("bench/results/generations")
IMAGES = Path("docs/images")
GENERATIONS = {"first": "embedded-1", "second": "embedded-2"}


def blockiness(pixels: np.ndarray, block: int = 8) -> float:
    """Mean |step| across `block`-pixel boundaries over the mean |step| inside blocks (grey, both axes)."""
    grey = np.asarray(pixels, dtype=np.float64)
    if grey.ndim == 3:
        grey = grey.mean(axis=2)
    across, inside = [], []
    for axis in (0, 1):
        steps = np.abs(np.diff(grey, axis=axis))
        position = np.arange(steps.shape[axis]) % block == block - 1
        on = steps.compress(position, axis=axis)
        off = steps.compress(~position, axis=axis)
        across.append(on.ravel())
        inside.append(off.ravel())
    return float(np.concatenate(across).mean() / max(np.concatenate(inside).mean(), 1e-12))


def held_out() -> list[tuple[str, np.ndarray]]:
    from vov.train import data

    return [(p.name, data.kodak_like(data.load_rgb(p)).astype(np.float32) / 255.0) for p in data.held_out_photos()]


def _write(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------- codec


def codec_job(job: tuple[str, str, float, str, int]) -> dict:
    import dataclasses

    import torch

    from vov import codec
    from vov.media import Picture
    from vov.bench.metrics import ms_ssim, psnr
    from vov.options import EncodeOptions, ScalingOptions

    photo, generation, bpp, mode, steps = job
    torch.set_num_threads(1)
    pixels = dict(held_out())[photo]
    backbone = codec.get_backbone(GENERATIONS[generation])
    options = EncodeOptions(target_bpp=bpp, steps=steps)
    if mode == "best-of-n":
        options = dataclasses.replace(options, scaling=ScalingOptions(candidates=256, steps=250, tile=0))  # as measured
    start = time.perf_counter()
    report = codec.compress(Picture(pixels), options, backbone=backbone)
    encode = time.perf_counter() - start
    start = time.perf_counter()
    decoded = codec.decompress(report.data, backbone=backbone).pixels
    decode = time.perf_counter() - start
    return {"photo": photo, "generation": generation, "target_bpp": bpp, "mode": mode, "bpp": report.bpp,
            "psnr": psnr(pixels, decoded), "ms_ssim": ms_ssim(pixels, decoded), "blockiness": blockiness(decoded),
            "original_blockiness": blockiness(pixels), "index_bits": report.index_bits,
            "encode_seconds": encode, "decode_seconds": decode}


def codec_summary(rows: list[dict]) -> list[dict]:
    out = []
    keys = ("bpp", "psnr", "ms_ssim", "blockiness", "original_blockiness", "encode_seconds", "decode_seconds")
    for generation in GENERATIONS:
        for mode in ("plain", "best-of-n"):
            for bpp in sorted({r["target_bpp"] for r in rows}):
                group = [r for r in rows if (r["generation"], r["mode"], r["target_bpp"]) == (generation, mode, bpp)]
                if group:
                    out.append({"generation": generation, "mode": mode, "target_bpp": bpp, "photos": len(group),
                                **{k: float(np.mean([r[k] for r in group])) for k in keys}})
    return out


def run_codec(args) -> None:
    rates = [float(r) for r in args.rates.split(",")]
    out = RESULTS / "codec.json"
    generations = args.generations.split(",")
    modes = args.modes.split(",")
    unknown = sorted(set(generations) - set(GENERATIONS)) + sorted(set(modes) - {"plain", "best-of-n"})
    if unknown:
        sys.exit(f"unknown generation or mode: {', '.join(unknown)}")
    jobs = [(name, g, bpp, mode, args.steps) for name, _ in held_out()[: args.photos] for g in generations
            for bpp in rates for mode in modes]
    rows, before = [], 0.0
    if args.resume and out.exists():
        done = json.loads(out.read_text())
        if done["fit_steps"] != args.steps:
            sys.exit(f"{out} was made with {done['fit_steps']} fitting steps; give the same --steps")
        rows, before = done["rows"], done["seconds"]
        finished = {(r["photo"], r["generation"], r["target_bpp"], r["mode"]) for r in rows}
        jobs = [j for j in jobs if j[:4] not in finished]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        for future in as_completed([pool.submit(codec_job, job) for job in jobs]):
            row = future.result()
            rows.append(row)
            _write(out, {"command": "python bench/embedded_generations.py " + " ".join(sys.argv[2:]),
                         "fit_steps": args.steps, "seconds": before + time.perf_counter() - started,
                         "summary": codec_summary(rows), "rows": rows})
            print(f"{row['photo']} {row['generation']} {row['mode']} {row['target_bpp']}: {row['bpp']:.4f} bpp, "
                  f"{row['psnr']:.2f} dB, MS-SSIM {row['ms_ssim']:.3f}, blockiness {row['blockiness']:.2f}", flush=True)


# ---------------------------------------------------------------------------------------- speed


def run_speed(args) -> None:
    import torch

    from vov import codec
    from vov.method import sampler
    from vov.method.adapters import AdaptedDenoiser, AdapterSpec

    torch.set_num_threads(2)
    picture = held_out()[0][1]
    pixels = torch.from_numpy(np.ascontiguousarray(picture.transpose(2, 0, 1)))[None, :, None]
    steps = {}
    for generation, name in GENERATIONS.items():
        backbone = codec.get_backbone(name)
        latents = backbone.encode(pixels)
        adapter = AdaptedDenoiser(backbone, AdapterSpec())
        adapter.raw_theta().requires_grad_(True)

        def fit_step(adapter=adapter, latents=latents):
            t, eps = torch.rand(1), torch.randn(latents.shape)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                pred = adapter((1 - t) * latents + t * eps, t)
            (pred.float() - (eps - latents)).pow(2).mean().backward()

        decoder = AdaptedDenoiser(backbone, AdapterSpec())
        decoder.set_theta(torch.randn(decoder.d) * 0.01)
        velocity = sampler.torch_velocity(decoder)

        def decode(backbone=backbone, velocity=velocity, shape=tuple(latents.shape)):
            with torch.no_grad():
                backbone.decode(sampler.sample(velocity, shape, seed=0, steps=50))

        steps[f"{generation}_fit_step"] = fit_step
        steps[f"{generation}_decode"] = decode
    for fn in steps.values():
        fn()
    times = {k: [] for k in steps}
    names = list(steps)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    medians = {k: float(np.median(v)) for k, v in times.items()}
    record = {"threads": 2, "repeats": args.repeats, "median_seconds": medians,
              "fit_step_ratio": medians["second_fit_step"] / medians["first_fit_step"],
              "decode_ratio": medians["second_decode"] / medians["first_decode"]}
    _write(RESULTS / "speed.json", record)
    print(json.dumps(record, indent=1))


# ---------------------------------------------------------------------------------------- latents


def run_latents(args) -> None:
    import torch
    from PIL import Image

    from vov import codec
    from vov.bench.metrics import ms_ssim, psnr

    torch.set_num_threads(2)
    photos = held_out()
    rows, crops = [], []
    levels = [float(x) for x in args.errors.split(",")]
    for generation, name in GENERATIONS.items():
        backbone = codec.get_backbone(name)
        strip = []
        for photo, img in photos:
            x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None, :, None]
            start = time.perf_counter()
            with torch.no_grad():
                z = backbone.encode(x)
            encode = time.perf_counter() - start
            row = {"generation": generation, "photo": photo, "encode_seconds": encode}
            for level in [0.0, *levels]:
                g = torch.Generator().manual_seed(0)
                noisy = z + level * torch.randn(z.shape, generator=g)
                start = time.perf_counter()
                with torch.no_grad():
                    out = backbone.decode(noisy)[0, :, 0].clamp(0, 1).numpy().transpose(1, 2, 0)
                seconds = time.perf_counter() - start
                row[f"error_{level:g}"] = {"psnr": psnr(img, out), "ms_ssim": ms_ssim(img, out),
                                           "blockiness": blockiness(out), "decode_seconds": seconds}
                if photo == photos[0][0]:
                    strip.append((out[128:384, 256:512] * 255).round().astype(np.uint8))
            rows.append(row)
            print(generation, photo, {k: v for k, v in row.items() if k.startswith("error_0")}, flush=True)
        crops.append(np.concatenate(strip, axis=1))
    summary = {}
    for generation in GENERATIONS:
        group = [r for r in rows if r["generation"] == generation]
        summary[generation] = {"encode_seconds": float(np.mean([r["encode_seconds"] for r in group]))}
        for level in [0.0, *levels]:
            key = f"error_{level:g}"
            summary[generation][key] = {m: float(np.mean([r[key][m] for r in group]))
                                        for m in ("psnr", "ms_ssim", "blockiness", "decode_seconds")}
    _write(RESULTS / "latents.json", {"errors": levels, "summary": summary, "rows": rows})
    IMAGES.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(crops, axis=0)).save(IMAGES / "latent_errors.png")
    print(json.dumps(summary, indent=1))


# ---------------------------------------------------------------------------------------- samples


def run_samples(args) -> None:
    import torch
    from PIL import Image

    from vov import codec
    from vov.method import sampler

    torch.set_num_threads(2)
    rows = []
    for name in GENERATIONS.values():
        backbone = codec.get_backbone(name)
        velocity = sampler.torch_velocity(backbone.denoiser)
        row = []
        for seed in range(args.count):
            shape = (1, *backbone.latent_shape(1, args.size, args.size))
            with torch.no_grad():
                pixels = backbone.decode(sampler.sample(velocity, shape, seed=seed, steps=50))
            row.append((pixels[0, :, 0].clamp(0, 1).numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8))
        rows.append(np.concatenate(row, axis=1))
    IMAGES.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(IMAGES / "samples.png")
    blocks = {g: blockiness(r) for g, r in zip(GENERATIONS, rows)}
    _write(RESULTS / "samples.json", {"count": args.count, "size": args.size, "blockiness": blocks})
    print(f"wrote {IMAGES / 'samples.png'}; blockiness {blocks}")


# ---------------------------------------------------------------------------------------- curve


def run_curve(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # a resumed run logs again from its checkpoint: a later line for a step replaces what followed it
    path: dict[int, tuple[float, str, float]] = {}
    for line in (Path(args.run_dir) / "train.log").read_text().splitlines():
        cols = line.split()
        if len(cols) != 4:
            continue
        step = int(cols[0])
        if args.until and step > args.until:
            continue
        path = {s: v for s, v in path.items() if s < step}
        path[step] = (float(cols[1]), cols[2], float(cols[3]))
    steps = sorted(path)
    losses = [path[s][0] for s in steps]
    seconds = {}
    for s in steps:
        seconds[path[s][1]] = path[s][2]
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=120)
    ax.plot(steps, losses)
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss (smoothed)")
    ax.set_title("embedded, second generation: training")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    IMAGES.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMAGES / "training_curve.png")
    record = {"steps": steps[-1], "hours": {k: v / 3600 for k, v in seconds.items()},
              "loss": {str(s): l for s, l in zip(steps, losses) if s % 5000 == 0 or s == steps[-1]}}
    _write(RESULTS / "training.json", record)
    print(json.dumps(record, indent=1))


def run_table(_args) -> None:
    codec_rows = json.loads((RESULTS / "codec.json").read_text())["summary"]
    print("| generation | file | target | bpp | PSNR | MS-SSIM | blockiness (originals) |")
    print("|---|---|---|---|---|---|---|")
    for r in codec_rows:
        print(f"| {r['generation']} | {r['mode']} | {r['target_bpp']} | {r['bpp']:.4f} | {r['psnr']:.2f} dB | "
              f"{r['ms_ssim']:.3f} | {r['blockiness']:.2f} ({r['original_blockiness']:.2f}) |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("codec")
    p.add_argument("--rates", default="0.02,0.05,0.1")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--photos", type=int, default=8)
    p.add_argument("--generations", default="first,second", help="which generations (first, second)")
    p.add_argument("--modes", default="plain,best-of-n", help="which files (plain, best-of-n)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--out", default=str(RESULTS / "codec.json"))
    p = sub.add_parser("speed")
    p.add_argument("--repeats", type=int, default=8)
    p = sub.add_parser("latents")
    p.add_argument("--errors", default="0.1,0.3", help="sizes of the latent error (whitened units)")
    p = sub.add_parser("samples")
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p = sub.add_parser("curve")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--until", type=int, help="the step of the weights shipped (later log lines are left out)")
    sub.add_parser("table")
    args = parser.parse_args(argv)
    {"codec": run_codec, "speed": run_speed, "latents": run_latents, "samples": run_samples, "curve": run_curve,
     "table": run_table}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
