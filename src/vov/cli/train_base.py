"""`vov train-base`: train (or go on training) the embedded backbone's denoiser on a photo pack."""

from __future__ import annotations

import argparse

from vov.cli import flags

NAME = "train-base"
HELP = "train the embedded backbone's denoiser on a photo pack (resumable)"
GPU_BATCH_FACTOR = 8  # a CPU step's batch leaves a GPU mostly idle; not yet tuned on one


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vov.train.base import TrainConfig

    defaults = TrainConfig()
    p.add_argument("--pack", help="a photo pack (`vov data gather`, then `vov data pack`)")
    p.add_argument("--run-dir", default="runs/base", help="checkpoint, latent cache and log; a run resumes from it")
    p.add_argument("--steps", type=flags.positive(int), default=defaults.steps,
                   help=f"the run's total steps (default {defaults.steps})")
    p.add_argument("--cooldown", type=flags.positive(int), default=defaults.cooldown,
                   help=f"the learning rate decays over the last steps (default {defaults.cooldown})")
    p.add_argument("--batch", type=flags.positive(int), default=None,
                   help=f"crops a step (default {defaults.batch}; {defaults.batch * GPU_BATCH_FACTOR} on a GPU)")
    p.add_argument("--minutes", type=flags.positive(float),
                   help="stop with a checkpoint after this long; the same command goes on from there")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when there is one)")
    p.add_argument("--export", action="store_true",
                   help="write the run's averaged weights as they stand to --output, without training")
    p.add_argument("-o", "--output", help="weights file (default: RUN_DIR/embedded.safetensors)")
    flags.add_quiet(p)


def run(args) -> None:
    import dataclasses
    from pathlib import Path

    import torch

    from vov.backbones.device import resolve_device
    from vov.errors import UsageError
    from vov.train.base import TrainConfig, export_weights, train

    out = args.output or str(Path(args.run_dir) / "embedded.safetensors")
    if args.export:
        step = export_weights(args.run_dir, out)
        print(f"wrote {out}: the averaged weights at step {step}")
        return
    if not args.pack:
        raise UsageError("give --pack PACK: `vov data gather DIR` then `vov data pack DIR PACK` make one")
    if args.cooldown > args.steps:
        raise UsageError(f"--cooldown ({args.cooldown}) cannot be longer than --steps ({args.steps})")
    device = resolve_device(args.device, "cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or TrainConfig.batch * (GPU_BATCH_FACTOR if device.type == "cuda" else 1)
    cfg = dataclasses.replace(TrainConfig(), steps=args.steps, cooldown=args.cooldown, batch=batch)
    train(args.run_dir, args.pack, cfg, device=str(device), minutes=args.minutes, out=args.output,
          progress=not args.quiet)
