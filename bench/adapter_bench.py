"""Decoding with the adaptation expanded once, against gathering it from theta in every layer call.

    python bench/adapter_bench.py [--backbone embedded] [--width 128 --height 96] [--steps 20]
                                  [--rounds 9] [--threads 1,2] [--out bench/results/adapter.json]

Three ways to run the same decode (the Euler sampler of `vov decompress`, bf16 autocast):
  peft      the previous adapter: a deep copy of the denoiser with peft's UniLoRA layers, which
            gather A and B from theta in every call of every adapted layer;
  gathered  the shared-base adapter with expansion off (`expand_when_fixed = False`): the same
            gathers, without the copy;
  expanded  the shared-base adapter as decoders use it: the factors gathered once per decode.
The runs alternate (peft, gathered, expanded, then the next round in rotated order) so that a
machine whose load changes slows all three alike; the ratios are medians of per-round ratios.
Each run is timed twice: wall-clock, and the CPU time the process used (`time.process_time`).
On a machine shared with other jobs both are disturbed; the least disturbed run of each path (its
minimum over the rounds) is the headline, with the median of the per-round ratios beside it.
Every thread count in --threads runs in each round too: on a busy machine, torch's OpenMP threads
wait for cores that other jobs hold, and a small decode with two threads can take many times
longer than with one. The three decodes must agree exactly (same arithmetic); the record says
whether they did.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from vov import backbones
from vov.method import sampler
from vov.method.adapters import ADAPTER_NAME, AdaptedDenoiser, AdapterSpec


def peft_adapter(backbone, spec: AdapterSpec, theta: torch.Tensor) -> torch.nn.Module:
    """The adapter as it was built before the shared base: a deep copy with peft's layers."""
    from peft.tuners.unilora import UniLoraConfig, UniLoraModel

    class Copied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            names = backbone.target_layers(spec.targets)
            config = UniLoraConfig(r=spec.rank, theta_d_length=spec.d, proj_seed=spec.seed, target_modules=names)
            self.denoiser = copy.deepcopy(backbone.denoiser)
            with torch.random.fork_rng():
                self.tuner = UniLoraModel(self.denoiser, config, ADAPTER_NAME)
            with torch.no_grad():
                self.tuner.unilora_theta_d[ADAPTER_NAME].copy_(theta)

        def forward(self, latents, t, condition=None):
            return self.denoiser(latents, t, condition)

    return Copied().eval()


def owned_bytes(module: torch.nn.Module, shared: torch.nn.Module) -> int:
    """Bytes of the tensors `module` holds that are not `shared`'s."""
    seen = {t.data_ptr() for t in list(shared.parameters()) + list(shared.buffers())}
    total = 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=backbones.DEFAULT_BACKBONE)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--steps", type=int, default=20, help="sampler steps per decode")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--dim", type=int, default=16384)
    parser.add_argument("--threads", default="1,2", help="torch thread counts to compare, comma-separated")
    parser.add_argument("--out", default="bench/results/adapter.json")
    args = parser.parse_args()

    thread_counts = [int(n) for n in args.threads.split(",")]
    backbone = backbones.load(args.backbone)
    spec = AdapterSpec(rank=args.rank, d=args.dim, seed=0, targets=backbone.default_targets)
    theta = (torch.rand(args.dim, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.05
    shared = AdaptedDenoiser(backbone, spec)
    shared.set_theta(theta)
    gathered = AdaptedDenoiser(backbone, spec)
    gathered.set_theta(theta)
    gathered.expand_when_fixed = False
    paths = {"peft": peft_adapter(backbone, spec, theta), "gathered": gathered, "expanded": shared}
    shape = (1, *backbone.latent_shape(1, args.height, args.width))

    def decode(module) -> tuple[float, float, torch.Tensor]:
        wall, cpu = time.perf_counter(), time.process_time()
        out = sampler.sample(sampler.torch_velocity(module), shape, 0, args.steps)
        return time.perf_counter() - wall, time.process_time() - cpu, out

    for name in paths:  # warm-up: allocator, kernels
        decode(paths[name])
    runs = [(n, name) for n in thread_counts for name in paths]  # (threads, path)
    times = {run: [] for run in runs}
    cpu_times = {run: [] for run in runs}
    outputs = {}
    for r in range(args.rounds):
        for threads, name in runs[r % len(runs):] + runs[: r % len(runs)]:
            torch.set_num_threads(threads)
            wall, cpu, outputs[name] = decode(paths[name])
            times[threads, name].append(wall)
            cpu_times[threads, name].append(cpu)
        print(f"round {r + 1}: " + ", ".join(f"{n}x{p} {times[n, p][-1]:.2f} s" for n, p in runs), flush=True)

    def per_threads(threads: int) -> dict:
        cpu = {name: cpu_times[threads, name] for name in paths}
        wall = {name: times[threads, name] for name in paths}

        def median_ratio(clock, a, b):
            return float(np.median(np.array(clock[a]) / np.array(clock[b])))

        return {"cpu_seconds_min": {n: float(min(v)) for n, v in cpu.items()},
                "cpu_seconds_median": {n: float(np.median(v)) for n, v in cpu.items()},
                "seconds_min": {n: float(min(v)) for n, v in wall.items()},
                "seconds_median": {n: float(np.median(v)) for n, v in wall.items()},
                "best_ratio_peft_over_expanded": float(min(cpu["peft"]) / min(cpu["expanded"])),
                "best_ratio_gathered_over_expanded": float(min(cpu["gathered"]) / min(cpu["expanded"])),
                "median_ratio_peft_over_expanded": median_ratio(cpu, "peft", "expanded"),
                "median_ratio_gathered_over_expanded": median_ratio(cpu, "gathered", "expanded"),
                "wall_median_ratio_peft_over_expanded": median_ratio(wall, "peft", "expanded"),
                "cpu_seconds": cpu, "seconds": wall}

    results = {str(n): per_threads(n) for n in thread_counts}
    record = {"backbone": backbone.name, "size": f"{args.width}x{args.height}", "sampler_steps": args.steps,
              "rounds": args.rounds, "adapter": {"rank": spec.rank, "d": spec.d, "targets": spec.targets,
                                                 "layers": len(shared.target_names)},
              "by_threads": results,
              "max_abs_difference": {n: float((outputs[n] - outputs["expanded"]).abs().max()) for n in paths},
              "adapter_bytes": {"peft": owned_bytes(paths["peft"], backbone.denoiser),
                                "shared": owned_bytes(shared, backbone.denoiser)},
              "load_average": os.getloadavg(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    for n, r in results.items():
        m, w = r["cpu_seconds_min"], r["seconds_median"]
        print(f"{n} thread(s), decode {args.width}x{args.height}, {args.steps} steps: least CPU time peft {m['peft']:.2f} s, "
              f"gathered {m['gathered']:.2f} s, expanded {m['expanded']:.2f} s (peft / expanded "
              f"{r['best_ratio_peft_over_expanded']:.2f}, median of rounds {r['median_ratio_peft_over_expanded']:.2f}); "
              f"median wall peft {w['peft']:.2f} s, expanded {w['expanded']:.2f} s")
    print(f"outputs differ by {max(record['max_abs_difference'].values()):.1e}; one adapter holds "
          f"{record['adapter_bytes']['peft'] / 1e6:.1f} MB (peft copy) vs {record['adapter_bytes']['shared'] / 1e6:.2f} MB")
    print(f"written {out}")


if __name__ == "__main__":
    main()
