"""`vov compress`: an image or a clip into a .vov file, here or through an encoder service.

An interrupted compress keeps its checkpoint (`OUT.partial`) and resumes when run again with the
same arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from vov.cli import flags
from vov.files import check_writable, read_bytes, write_atomic

NAME = "compress"
HELP = "image or video -> .vov"


def _fps(text: str) -> tuple[int, int]:
    """25, 30000/1001, 29.97 -> an exact fraction."""
    from fractions import Fraction

    try:
        rate = Fraction(text).limit_denominator(1001) if "/" not in text else Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a frame rate: {text!r}") from None
    if not 0 < rate <= 1000:
        raise argparse.ArgumentTypeError(f"a frame rate between 0 and 1000, not {text}")
    return rate.numerator, rate.denominator


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vov.format.bitstream import ADAPTER_KINDS
    from vov.backbones import DEFAULT_BACKBONE, REGISTRY
    from vov.method.scaling import MAX_SEARCH_STEPS, MIN_SEARCH_STEPS, SEARCH_CANDIDATES, SEARCH_TILES
    from vov.options import DEFAULT_BPP, EncodeOptions
    from vov.plan import MAX_AUTO_D

    defaults = EncodeOptions()
    positive, non_negative = flags.positive, flags.non_negative
    default_backbone = REGISTRY[DEFAULT_BACKBONE]  # its defaults, quoted in the help
    p.add_argument("input", help="an image, a video (.y4m, .mp4, .mkv, .webm, .mov) or a folder of numbered PNG frames")
    p.add_argument("-o", "--output", required=True)
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--bpp", type=positive(float),
                      help=f"target bits per pixel of the whole file (default {DEFAULT_BPP:g}, or the smallest rate "
                           "that works for a small image)")
    rate.add_argument("--lambda", dest="lam", type=positive(float), help="rate weight instead of a target (per bpp)")
    p.add_argument("--kind", choices=ADAPTER_KINDS, default=defaults.adapter.kind, help="adapter kind")
    p.add_argument("--rank", type=positive(int),
                   help=f"LoRA rank (default: the backbone's; {default_backbone.adapter.rank} on {DEFAULT_BACKBONE})")
    p.add_argument("--dim", type=positive(int),
                   help=f"length d of the one vector (default: chosen from --bpp, at most {MAX_AUTO_D})")
    p.add_argument("--targets", default="", help="layers to adapt: a preset (attn, self-attn, attn+ffn) or a "
                                                 "comma-separated list of exact layer names (default: the "
                                                 f"backbone's, {default_backbone.adapter.targets} on {DEFAULT_BACKBONE})")
    p.add_argument("--steps", type=positive(int),
                   help=f"fitting steps per clip (default: the backbone's; {default_backbone.fit.steps} on "
                        f"{DEFAULT_BACKBONE})")
    p.add_argument("--draws", type=positive(int),
                   help="noise draws per fitting step, back-propagated one at a time (default 1); under torchrun "
                        "every rank draws its own and the gradients are averaged")
    p.add_argument("--sampler-steps", type=positive(int), default=defaults.sampler_steps,
                   help=f"decoder ODE steps (default {defaults.sampler_steps})")
    p.add_argument("--best-of", type=positive(int), nargs="?", const=0, metavar="N",
                   help="best-of-N: at each scaled step keep the best of N candidate noises (a power of two) and store "
                        "its index; alone, or with only --scaling-steps or --best-of-tile, N is chosen "
                        f"({SEARCH_CANDIDATES}) (default off)")
    p.add_argument("--scaling-steps", type=positive(int), metavar="K",
                   help=f"best-of-N: sampler steps of the scaled decode (default: as many as half the file's bits pay "
                        f"for, {MIN_SEARCH_STEPS} to {MAX_SEARCH_STEPS})")
    p.add_argument("--best-of-tile", type=non_negative(int), metavar="T",
                   help="best-of-N: keep a candidate per tile of T x T latent cells (at most 255); 0: one for the "
                        f"whole latent (default: tiles of {SEARCH_TILES[0]}, larger where they cost over half the file)")
    p.add_argument("--caption", default="", help="condition the adaptation on this caption (text-conditioned "
                                                 "backbones only; stored in the file)")
    p.add_argument("--fps", type=_fps, help="frame rate of a folder of PNG frames (default 25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hash, the noise and the fit (default 0)")
    flags.add_backbone(p, name=True)
    flags.add_server(p, "encoder", "compress")
    flags.add_quiet(p)


def _load_media(args):
    """The input as a Picture or a Clip, with notes about what is not coded."""
    from vov.media.video import load_media

    media = load_media(args.input, fps=args.fps)
    if getattr(media, "had_alpha", False):
        flags.note("the alpha channel is not coded; the image was composited over white")
    if getattr(media, "source_bits", 8) > getattr(media, "bits", 8):
        flags.note(f"a {media.source_bits}-bit colour image is read at {media.bits} bits")
    return media


def _scaling(args):
    from vov.options import ScalingOptions

    if args.best_of is None and args.scaling_steps is None and args.best_of_tile is None:
        return None
    return ScalingOptions(candidates=args.best_of or None, steps=args.scaling_steps, tile=args.best_of_tile)


def options_of(args):
    """The EncodeOptions and the Rate of the flags: the command line's one translation."""
    from vov.method.adapters import AdapterSpec
    from vov.options import EncodeOptions, Rate

    rate = Rate.of(args.bpp, args.lam)
    spec = AdapterSpec(args.kind, args.rank, args.dim, args.seed, args.targets)
    options = EncodeOptions(backbone=args.backbone, model=args.model, device=args.device, adapter=spec,
                            steps=args.steps, draws=args.draws, sampler_steps=args.sampler_steps,
                            noise_seed=args.seed, auto_d=args.dim is None, caption=args.caption,
                            scaling=_scaling(args)).with_rate(rate)
    return options, rate


def run(args) -> None:
    from vov import codec

    check_writable(args.output)
    media = _load_media(args)
    frames = codec.Frames.of(media)
    options, rate = options_of(args)
    if args.server:
        from vov.serving.client import remote_compress

        data = remote_compress(args.server, _upload_bytes(args, media), options, quiet=args.quiet,
                               tls=flags.tls(args), rate=rate, on_note=flags.note)
        write_atomic(args.output, data)
        print(f"{args.output}: {len(data)} bytes, {8 * len(data) / frames.size:.4f} bpp")
        return
    options.validate()
    from vov.method import parallel

    device = parallel.join_from_environment(args.device)  # under torchrun: this rank's device
    try:
        _compress_here(args, frames, dataclasses.replace(options, device=device), rate, parallel.is_writer())
    finally:
        parallel.leave()


def _compress_here(args, frames, options, rate, writer: bool) -> None:
    """Compress in this process (one rank of several under torchrun: only rank 0 writes and prints)."""
    from vov import codec
    from vov.options import rate_note
    from vov.progress import FitBars

    backbone = codec.get_backbone(args.backbone, args.model, options.device)
    the_plan = codec.plan(frames, options, backbone, rate=rate)  # every refusal before the first step
    if the_plan.note and writer:
        flags.note(the_plan.note)
    options = the_plan.options
    if len(the_plan.lengths) > 1 and writer:
        print(f"vov: {frames.count} frames in {len(the_plan.lengths)} clips of up to {the_plan.lengths[0]}",
              file=sys.stderr)
    checkpoint = f"{args.output}.partial"
    if (os.path.exists(checkpoint) or os.path.exists(f"{checkpoint}.clips")) and writer:
        print(f"vov: resuming from {checkpoint}", file=sys.stderr)
    with FitBars(args.quiet or not writer) as bars:
        report = codec.compress(frames, options, backbone=backbone, on_progress=bars, checkpoint=checkpoint,
                                planned=the_plan)
    if not writer:
        return
    write_atomic(args.output, report.data)
    missed = rate_note(options.target_bpp, report.bpp, report.d)
    if missed:
        flags.note(missed)
    extra = f", best-of-N indices {report.index_bits} bits" if report.index_bits else ""
    print(f"{args.output}: {len(report.data)} bytes, {report.bpp:.4f} bpp, d={report.d}, "
          f"payload {report.payload_bits} bits vs estimate {report.est_bits:.0f} "
          f"({100 * report.coding_overhead:+.2f}%){extra}, {report.seconds:.1f} s")


def _upload_bytes(args, media) -> bytes:
    """What goes to the encoder service: the file as given, or for a folder of frames one Y4M stream."""
    if not os.path.isdir(args.input):
        return read_bytes(args.input)
    import tempfile

    from vov.media.video import save_video

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "frames.y4m")
        save_video(media, path)
        return read_bytes(path)
