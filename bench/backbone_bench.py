"""Wan2.1-T2V-1.3B at real size on the CPU, random weights: one fitting step's time and peak memory.

    flock /tmp/vov-heavy.lock python bench/backbone_bench.py [--height 480 --width 832 --frames 1]
        [--steps 3] [--threads 2] [--out bench/results/backbones.json]

The setting is the paper's adapter on the real architecture: rank 1, d = 131072, q/k/v/out of self-
and cross-attention in all 30 blocks (240 layers, 737,280 LoRA entries), a 512-token caption, one
480x832 frame (60x104 latents, 1560 video tokens). A fitting step is what the encoder repeats:
x_t from the latents and fresh noise, the adapted forward under the backbone's autocast (bf16 on
CPU), the squared error to eps - x_0, the backward pass to theta, one AdamW step.

Each variant (without and with gradient checkpointing) runs in its own process, so that its peak
resident memory (ru_maxrss) is its own; both numbers include the fp32 weights (5.7 GB). The first
step warms up and is not counted; the median of the others is reported. Nothing is downloaded.
About 12 GB of memory and a few minutes per step on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def rss_gb() -> float:
    """Peak resident set of this process so far, in GB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def current_rss_gb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9
    except OSError:
        return float("nan")


def one_variant(args) -> dict:
    import numpy as np
    import torch

    from vov.backbones import testing
    from vov.method.adapters import AdaptedDenoiser, AdapterSpec, lora_entry_count

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    backbone = testing.random_wan("1.3B", device="cpu", dtype="fp32", seed=0)
    build_seconds = time.perf_counter() - start
    spec = AdapterSpec(rank=1, d=131072, seed=42, targets="attn")
    adapter = AdaptedDenoiser(backbone, spec)
    adapter.set_gradient_checkpointing(args.checkpointing)
    generator = torch.Generator().manual_seed(0)
    adapter.set_theta((torch.rand(adapter.d, generator=generator) * 2 - 1) * 0.02)
    theta = adapter.raw_theta().requires_grad_(True)
    optimiser = torch.optim.AdamW([theta], lr=2e-3, weight_decay=1e-4)
    condition = backbone.condition("a caption of 512 tokens")
    shape = (1, *backbone.latent_shape(args.frames, args.height, args.width))
    x0 = torch.randn(shape, generator=generator)
    after_build = current_rss_gb()
    adapter.train()
    times, losses = [], []
    for step in range(args.steps):
        t = torch.rand(1, generator=generator)
        eps = torch.randn(shape, generator=generator)
        began = time.perf_counter()
        noisy = (1 - t.view(1, 1, 1, 1, 1)) * x0 + t.view(1, 1, 1, 1, 1) * eps
        with backbone.autocast():
            pred = adapter(noisy, t, condition)
        loss = (pred.float() - (eps - x0)).pow(2).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - began)
        losses.append(float(loss.detach()))
        print(f"  step {step + 1}/{args.steps}: {times[-1]:.1f} s, loss {losses[-1]:.4f}", file=sys.stderr, flush=True)
    counted = times[1:] if len(times) > 1 else times
    return {"gradient_checkpointing": args.checkpointing, "step_seconds_median": float(np.median(counted)),
            "step_seconds_min": float(min(counted)),
            "step_seconds": times, "peak_rss_gb": rss_gb(), "rss_after_build_gb": after_build,
            "build_seconds": build_seconds, "losses": losses,
            "parameters": sum(p.numel() for p in backbone.transformer.parameters()),
            "adapted_layers": len(adapter.target_names), "lora_entries": lora_entry_count(backbone, spec),
            "video_tokens": shape[2] * (shape[3] // 2) * (shape[4] // 2), "text_tokens": condition.embeddings.shape[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="steps per variant, the first not counted")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", choices=("plain", "checkpointing"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default="bench/results/backbones.json")
    args = parser.parse_args()

    if args.variant:  # the child process: one variant, its record as JSON on stdout
        args.checkpointing = args.variant == "checkpointing"
        print(json.dumps(one_variant(args)))
        return

    import torch

    import diffusers
    import peft

    record = {"what": "Wan2.1-T2V-1.3B, random weights, one fitting step on the CPU",
              "setting": {"height": args.height, "width": args.width, "frames": args.frames, "rank": 1, "d": 131072,
                          "targets": "attn", "text_tokens": 512, "autocast": "bf16", "weights": "fp32"},
              "threads": args.threads, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "torch": torch.__version__, "diffusers": diffusers.__version__, "peft": peft.__version__,
              "date": time.strftime("%Y-%m-%d"), "load_average_before": os.getloadavg(), "variants": []}
    for variant in ("plain", "checkpointing"):
        print(f"{variant}:", file=sys.stderr, flush=True)
        command = [sys.executable, __file__, "--variant", variant, "--height", str(args.height), "--width",
                   str(args.width), "--frames", str(args.frames), "--steps", str(args.steps), "--threads",
                   str(args.threads)]
        result = subprocess.run(command, capture_output=True, text=True)
        sys.stderr.write(result.stderr[-4000:])
        if result.returncode:
            raise SystemExit(f"{variant} failed (exit {result.returncode})")
        record["variants"].append(json.loads(result.stdout.strip().splitlines()[-1]))
    record["load_average_after"] = os.getloadavg()
    plain, checkpointed = record["variants"]
    record["checkpointing_time_ratio"] = checkpointed["step_seconds_median"] / plain["step_seconds_median"]
    record["checkpointing_memory_saved_gb"] = plain["peak_rss_gb"] - checkpointed["peak_rss_gb"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    for v in record["variants"]:
        print(f"{'with' if v['gradient_checkpointing'] else 'without'} checkpointing: "
              f"{v['step_seconds_median']:.1f} s per step, peak {v['peak_rss_gb']:.1f} GB "
              f"(weights and adapter built: {v['rss_after_build_gb']:.1f} GB)")
    print(f"written {out}")


if __name__ == "__main__":
    main()
