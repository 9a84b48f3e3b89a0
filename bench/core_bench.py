"""Codec core benchmark on one photo: fitting step, full encode, decode, payload vs estimate, quality.

    python bench/core_bench.py [--image PATH | --photo NAME] [--backbone embedded] [--steps 600]
                               [--bpp 0.03,0.05,0.1] [--out bench/results/core.json]

Without --image it takes a held-out photo (default LadyBird) cropped Kodak-style to 768x512.
Every figure comes from this run; the JSON records the machine's thread count and torch version.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from vov import codec
from vov.backbones import DEFAULT_BACKBONE
from vov.method.adapters import AdaptedDenoiser, AdapterSpec
from vov.method.fit import FitConfig
from vov.media import Picture, load_image
from vov.bench.metrics import ms_ssim, psnr


def step_time(backbone, picture: Picture, spec: AdapterSpec, repeats: int = 8) -> float:
    """Median seconds of one fitting step (forward + backward, bf16 autocast) on the whole image."""
    adapter = AdaptedDenoiser(backbone, spec)
    theta = adapter.raw_theta()
    theta.requires_grad_(True)
    latents = codec.latents_of(backbone, picture)
    times = []
    for _ in range(repeats + 2):
        t = torch.rand(1)
        eps = torch.randn(latents.shape)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = adapter((1 - t) * latents + t * eps, t)
        (pred.float() - (eps - latents)).pow(2).mean().backward()
        times.append(time.perf_counter() - start)
    return float(np.median(times[2:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image")
    parser.add_argument("--photo", default="LadyBird")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--sampler-steps", type=int, default=50)
    parser.add_argument("--bpp", default="0.03,0.05,0.1", help="rate targets (the default mode)")
    parser.add_argument("--lambdas", help="rate weights instead of targets, e.g. 0.003,0.01,0.03 (d from --dim)")
    parser.add_argument("--dim", type=int, default=8192, help="d in --lambdas mode")
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--out", default="bench/results/core.json")
    args = parser.parse_args()

    if args.image:
        picture = load_image(args.image)
        name = os.path.basename(args.image)
    else:
        from vov.train import data

        photo = next(p for p in data.held_out_photos() if p.name == args.photo)
        picture = Picture(data.kodak_like(data.load_rgb(photo)).astype(np.float32) / 255.0)
        name = f"{photo.name} (768x512)"
    backbone = codec.get_backbone(args.backbone)
    print(f"{name}: {picture.width}x{picture.height}, backbone {args.backbone}, {torch.get_num_threads()} threads")

    record = {"image": name, "backbone": args.backbone, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "fit_steps": args.steps, "sampler_steps": args.sampler_steps, "points": []}
    record["fit_step_seconds"] = step_time(backbone, picture, AdapterSpec(rank=args.rank, d=16384))
    print(f"fitting step (fwd+bwd, bf16): {record['fit_step_seconds']:.3f} s")

    if args.lambdas:
        runs = [("lambda", v, FitConfig(steps=args.steps, lam=v), None) for v in map(float, args.lambdas.split(","))]
    else:
        runs = [("target_bpp", v, FitConfig(steps=args.steps), v) for v in map(float, args.bpp.split(","))]
    for mode, value, fit_config, target in runs:
        options = codec.EncodeOptions(backbone=args.backbone, adapter=AdapterSpec(rank=args.rank, d=args.dim),
                                      fit=fit_config, target_bpp=target, sampler_steps=args.sampler_steps,
                                      auto_d=mode == "target_bpp")
        report = codec.compress(picture, options, backbone=backbone)
        start = time.perf_counter()
        decoded = codec.decompress(report.data, backbone=backbone)
        decode_seconds = time.perf_counter() - start
        point = {mode: value, "bpp": report.bpp, "bytes": len(report.data), "d": report.d,
                 "parts": report.parts, "payload_bits": report.payload_bits, "estimated_bits": report.est_bits,
                 "coding_overhead": report.coding_overhead, "encode_seconds": report.seconds,
                 "decode_seconds": decode_seconds, "psnr": psnr(picture.pixels, decoded.pixels),
                 "ms_ssim": ms_ssim(picture.pixels, decoded.pixels), "final_lambda": report.history[-1].lam}
        record["points"].append(point)
        print(f"{mode} {value:g} -> {point['bpp']:.4f} bpp (d={report.d}), PSNR {point['psnr']:.2f} dB, "
              f"MS-SSIM {point['ms_ssim']:.4f}, payload {report.payload_bits} bits vs estimate "
              f"{report.est_bits:.0f} ({100 * report.coding_overhead:+.2f}%), encode {report.seconds:.1f} s, "
              f"decode {decode_seconds:.1f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
