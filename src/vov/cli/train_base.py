"""`vov train-base`: train the embedded backbone's denoiser from the allowed photos."""

from __future__ import annotations

import argparse

from vov.cli import flags

NAME = "train-base"
HELP = "train the embedded backbone from the allowed photos"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", default="runs/base", help="checkpoints and logs (resumes if present)")
    p.add_argument("--steps", type=flags.positive(int), default=12000)
    p.add_argument("-o", "--output", help="weights file (default: RUN_DIR/embedded.safetensors)")


def run(args) -> None:
    from vov.train.base import train

    train(args.run_dir, steps=args.steps, out=args.output)
