"""GPU check: Wan2.1-T2V-1.3B at real size with random weights on one CUDA GPU.

    python bench/gpu_check.py [--frames 81 --height 480 --width 832] [--fit-steps 4]
                              [--sampler-steps 50] [--out bench/results/gpu_check.json]

What it measures (nothing is downloaded; the weights are random, the shapes real):
  1. a fitting step at 81x480x832 (21x60x104 latents, 32,760 video tokens, 512 caption tokens):
     rank 1, d = 131072, q/k/v/out of both attentions in all 30 blocks, bf16 weights, gradient
     checkpointing, AdamW on theta: median seconds per step and peak GPU memory;
  2. the same step without checkpointing, only with --no-checkpointing-too (it may not fit);
  3. a 50-step decode: the Euler sampler from portable noise with the adaptation expanded once,
     then the Wan VAE (float32) decoding the 21 latent frames to 81: seconds and peak memory;
  4. the VAE encoding the 81 frames (the encoder's first step).
It writes one JSON record and prints a summary. Expected on an 80 GB H100-class GPU: well under
8 minutes in all, most of it the decode.

Needs: a CUDA build of torch (>= 2.4), diffusers >= 0.35, transformers, peft >= 0.20, numpy, and
vov itself (`pip install -e .` from this repository). Without a GPU it stops at once with exit 2.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--fit-steps", type=int, default=4, help="fitting steps, the first not counted")
    parser.add_argument("--sampler-steps", type=int, default=50)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="1.3B", choices=("1.3B", "14B", "tiny"),
                        help="Wan2.1 size (tiny: a few-layer model to try the script itself)")
    parser.add_argument("--no-checkpointing-too", action="store_true",
                        help="also measure a step without gradient checkpointing")
    parser.add_argument("--skip-vae", action="store_true", help="leave out the VAE encode and decode")
    parser.add_argument("--out", default="bench/results/gpu_check.json")
    args = parser.parse_args()

    import numpy as np
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU is visible to torch {torch.__version__} "
              f"({'built without CUDA' if torch.version.cuda is None else 'CUDA build, no device'}); "
              f"run it on a GPU machine", file=sys.stderr)
        return 2

    import diffusers
    import peft

    from vov.backbones import testing
    from vov.method import sampler
    from vov.method.adapters import AdaptedDenoiser, AdapterSpec, lora_entry_count

    began = time.perf_counter()
    cuda = device.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    record = {"gpu": torch.cuda.get_device_name(device) if cuda else "none (cpu)", "size": args.size,
              "torch": torch.__version__, "cuda": torch.version.cuda,
              "diffusers": diffusers.__version__, "peft": peft.__version__,
              "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
              "setting": {"frames": args.frames, "height": args.height, "width": args.width, "rank": 1, "d": 131072,
                          "targets": "attn", "text_tokens": 512, "weights": "bf16", "vae": "fp32"}}

    def gb(n: int) -> float:
        return round(n / 2**30, 2)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def peak() -> float:
        return gb(torch.cuda.max_memory_allocated(device)) if cuda else float("nan")

    def phase(name: str):
        sync()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        print(f"{name} ...", file=sys.stderr, flush=True)

    start = time.perf_counter()
    backbone = testing.random_wan(args.size, device=device, dtype="bf16", seed=0, vae=not args.skip_vae)
    sync()
    record["build_seconds"] = time.perf_counter() - start
    record["weights_gb"] = gb(torch.cuda.memory_allocated(device)) if cuda else float("nan")
    spec = AdapterSpec(rank=1, d=131072, seed=42, targets="attn")
    condition = backbone.condition("a caption")
    shape = (1, *backbone.latent_shape(args.frames, args.height, args.width))
    record["latents"] = list(shape)
    record["video_tokens"] = shape[2] * (shape[3] // 2) * (shape[4] // 2)
    record["lora_entries"] = lora_entry_count(backbone, spec)

    def fitting(checkpointing: bool) -> dict:
        phase(f"fitting step, checkpointing {'on' if checkpointing else 'off'}")
        adapter = AdaptedDenoiser(backbone, spec)
        adapter.set_gradient_checkpointing(checkpointing)
        generator = torch.Generator(device=device).manual_seed(0)
        adapter.set_theta((torch.rand(adapter.d, generator=generator, device=device) * 2 - 1) * 0.02)
        theta = adapter.raw_theta().requires_grad_(True)
        optimiser = torch.optim.AdamW([theta], lr=2e-3, weight_decay=1e-4)
        x0 = torch.randn(shape, generator=generator, device=device)
        embeddings = condition.embeddings.to(device)
        adapter.train()
        times = []
        try:
            for _ in range(args.fit_steps):
                t = torch.rand(1, generator=generator, device=device)
                eps = torch.randn(shape, generator=generator, device=device)
                sync()
                step_start = time.perf_counter()
                noisy = (1 - t.view(1, 1, 1, 1, 1)) * x0 + t.view(1, 1, 1, 1, 1) * eps
                with backbone.autocast():
                    pred = adapter(noisy, t, embeddings)
                loss = (pred.float() - (eps - x0)).pow(2).mean()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                sync()
                times.append(time.perf_counter() - step_start)
        except torch.OutOfMemoryError:
            return {"gradient_checkpointing": checkpointing, "out_of_memory": True, "peak_gb": peak()}
        finally:
            del adapter, optimiser
        counted = times[1:] if len(times) > 1 else times
        return {"gradient_checkpointing": checkpointing, "step_seconds_median": float(np.median(counted)),
                "step_seconds": times, "peak_gb": peak()}

    record["fitting"] = [fitting(True)]
    if args.no_checkpointing_too:
        record["fitting"].append(fitting(False))

    # the decoder's loop: portable noise, Euler on the backbone's flow-shift schedule, the
    # adaptation expanded once (no gradients), inputs on the device
    phase(f"{args.sampler_steps}-step decode")
    adapter = AdaptedDenoiser(backbone, spec)
    adapter.set_theta((torch.rand(adapter.d, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 0.02)
    embeddings = condition.embeddings.to(device)
    times = backbone.schedule.times(args.sampler_steps)
    sync()
    start = time.perf_counter()
    latents = sampler.initial_noise(shape, 0).to(device)
    with torch.no_grad(), backbone.autocast():
        for i in range(args.sampler_steps):
            t = torch.full((1,), float(times[i]), device=device)
            latents = latents + float(times[i + 1] - times[i]) * adapter(latents, t, embeddings).float()
    sync()
    record["sampler"] = {"steps": args.sampler_steps, "schedule": backbone.schedule.to_json(),
                         "seconds": time.perf_counter() - start, "peak_gb": peak(),
                         "finite": bool(torch.isfinite(latents).all())}
    del adapter

    if not args.skip_vae:
        phase("VAE decode")
        start = time.perf_counter()
        pixels = backbone.decode(latents)
        sync()
        record["vae_decode"] = {"seconds": time.perf_counter() - start, "peak_gb": peak(), "pixels": list(pixels.shape)}
        phase("VAE encode")
        start = time.perf_counter()
        encoded = backbone.encode(pixels.clamp(0, 1))
        sync()
        record["vae_encode"] = {"seconds": time.perf_counter() - start, "peak_gb": peak(), "latents": list(encoded.shape)}
    record["total_seconds"] = time.perf_counter() - began

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    for f in record["fitting"]:
        if f.get("out_of_memory"):
            print(f"fitting step, checkpointing {'on' if f['gradient_checkpointing'] else 'off'}: out of memory")
        else:
            print(f"fitting step, checkpointing {'on' if f['gradient_checkpointing'] else 'off'}: "
                  f"{f['step_seconds_median']:.2f} s, peak {f['peak_gb']} GB")
    s = record["sampler"]
    print(f"{s['steps']}-step sampling: {s['seconds']:.1f} s, peak {s['peak_gb']} GB")
    for key in ("vae_decode", "vae_encode"):
        if key in record:
            print(f"{key.replace('_', ' ')}: {record[key]['seconds']:.1f} s, peak {record[key]['peak_gb']} GB")
    print(f"total {record['total_seconds']:.0f} s on {record['gpu']}; written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
