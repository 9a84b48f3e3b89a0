"""`vov export`: a backbone's denoiser and latent decoder as ONNX graphs in a Triton model repository
that serves every file made for the backbone (vov.serving.repository, vov.serving.graphs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vov.cli import flags
from vov.errors import UsageError

NAME = "export"
HELP = "export the denoiser and the latent decoder to ONNX"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vov.serving.contract import DEFAULT_MAX_RANK
    from vov.serving.repository import DEFAULT_MAX_SEQUENCES, MAX_BATCH, PLAN_SCRIPT, VARIANTS

    flags.add_backbone(p, name=True, device_help="where the backbone is loaded for the export (cpu, cuda, cuda:N)")
    p.add_argument("--repository", help="Triton model repository to write (default: "
                                        "~/.cache/vov/triton/BACKBONE-ENV, one per Python environment)")
    p.add_argument("--max-rank", type=int, default=DEFAULT_MAX_RANK,
                   help=f"largest adapter rank the engine serves (default {DEFAULT_MAX_RANK})")
    p.add_argument("--variant", choices=VARIANTS, default="cpu",
                   help="cpu: Python backend + ONNX Runtime; gpu: TensorRT plans, built on the GPU node by "
                        f"the {PLAN_SCRIPT} written into the repository (default cpu)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per Triton instance (0: auto)")
    p.add_argument("--max-batch", type=flags.positive(int), default=MAX_BATCH,
                   help=f"rows of one model call: Triton's max_batch_size and the plans' largest batch "
                        f"(default {MAX_BATCH})")
    p.add_argument("--max-sequences", type=flags.positive(int), default=DEFAULT_MAX_SEQUENCES,
                   help=f"decodes whose adaptation Triton holds at once (default {DEFAULT_MAX_SEQUENCES})")
    p.add_argument("--plan-opt", metavar="BATCHxFRAMESxWIDTHxHEIGHT",
                   help="the TensorRT profiles' optimum in pixels (default 8x1x768x512; Wan: 1x81x832x480)")
    p.add_argument("--check", action="store_true", help="compare the ONNX graphs with torch on random inputs")
    p.add_argument("--force", action="store_true", help="export even if the repository is current")


def _plan_shapes(text: str | None, backbone) -> dict:
    if not text:
        return {}
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"--plan-opt is BATCHxFRAMESxWIDTHxHEIGHT, not {text!r}")
    batch, frames, w, h = (int(p) for p in parts)
    f = backbone.latent_factor
    m = max(1, backbone.pixel_multiple // f)
    cells = lambda n: max(2 * m, -(-n // backbone.pixel_multiple) * m)  # noqa: E731
    return {"opt_batch": batch, "opt_frames": backbone.latent_frames(frames), "opt_size": (cells(h), cells(w))}


def run(args) -> None:
    from vov import backbones
    from vov.format.bitstream import MAX_RANK
    from vov.serving.contract import DENOISER_MODEL, SESSION_MODEL, read_engine
    from vov.serving.graphs import latent_decoder_frames
    from vov.serving.parity import parity
    from vov.serving.repository import default_repository, export_repository, is_current

    if not 1 <= args.max_rank <= MAX_RANK:
        raise UsageError(f"--max-rank must be between 1 and {MAX_RANK}, not {args.max_rank}")
    backbone = backbones.load(args.backbone, args.model, device=args.device)
    repo = Path(args.repository) if args.repository else default_repository(backbone.name)
    info = read_engine(repo) or {}
    asked = {"max_batch": args.max_batch, "max_sequences": args.max_sequences,
             "decoders": sorted(map(str, latent_decoder_frames(backbone)))}
    held = {"max_batch": info.get("max_batch"), "max_sequences": info.get("session", {}).get("max_sequences"),
            "decoders": sorted(info.get("latent_decoders", {}))}
    if args.force or held != asked or not is_current(repo, backbone, args.max_rank, args.variant):
        try:
            export_repository(backbone, repo, args.max_rank, variant=args.variant, threads=args.threads,
                              log=lambda m: print(f"vov: {m}", file=sys.stderr), max_batch=args.max_batch,
                              max_sequences=args.max_sequences,
                              plan_shapes=_plan_shapes(args.plan_opt, backbone))
        except OSError as e:
            raise UsageError(f"{repo}: cannot write ({e.strerror or e})") from None
    info = read_engine(repo)
    models = ", ".join([SESSION_MODEL, DENOISER_MODEL, *info["latent_decoders"].values()])
    print(f"{repo}: {models} for {backbone.name} ({backbone.content_hash.hex()})")
    if args.check:
        for name, diff in parity(backbone, repo).items():
            print(f"{name}: max |onnx - torch| = {diff:.2e}")
