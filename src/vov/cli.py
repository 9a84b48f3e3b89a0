"""The `vov` command. Every subcommand is a thin shell over the library.

Bad input ends with one line `vov: error: ...` and exit status 2; an interrupted compress keeps its
checkpoint (`OUT.partial`) and resumes when run again with the same arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import os
import sys

from vov import limits
from vov.errors import VovError
from vov.files import check_writable, read_bytes, write_atomic


def _add_rate_args(p: argparse.ArgumentParser) -> None:
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--bpp", type=_positive(float),
                      help="target bits per pixel of the whole file (default 0.05, or the smallest rate that works "
                           "for a small image)")
    rate.add_argument("--lambda", dest="lam", type=_positive(float), help="rate weight instead of a target (per bpp)")


def _add_server_args(p: argparse.ArgumentParser, service: str) -> None:
    p.add_argument("--server", help=f"{service} through a vov {service[:-2]}er service at HOST:PORT")
    p.add_argument("--tls-ca", help="with --server: verify the server's certificate against this CA (PEM); "
                                    "turns TLS on")
    p.add_argument("--tls-cert", help="with --server: client certificate (PEM) for mutual TLS")
    p.add_argument("--tls-key", help="with --server: client private key (PEM) for mutual TLS")


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a positive finite number, not {text}")
        return value

    return parse


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


def _add_backbone_args(p: argparse.ArgumentParser, compress: bool) -> None:
    if compress:
        p.add_argument("--backbone", default="embedded", help="foundation model (default: embedded; `vov backbones`)")
    p.add_argument("--model", help="the backbone's weights: a folder in the diffusers layout or a hub id "
                                   "(default: the backbone's own; a file records which weights it needs)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the backbone's)")


def build_parser() -> argparse.ArgumentParser:
    from vov.options import EncodeOptions, ScalingOptions

    defaults, scaling = EncodeOptions(), ScalingOptions()
    parser = argparse.ArgumentParser(prog="vov", description="Images and clips stored as adaptations of a diffusion "
                                                             "model.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="image or video -> .vov")
    p.add_argument("input", help="an image, a video (.y4m, .mp4, .mkv, .webm, .mov) or a folder of numbered PNG frames")
    p.add_argument("-o", "--output", required=True)
    _add_rate_args(p)
    p.add_argument("--kind", choices=("one-vector", "lora"), default=defaults.adapter.kind, help="adapter kind")
    p.add_argument("--rank", type=_positive(int), help="LoRA rank (default: the backbone's; 4 on embedded)")
    p.add_argument("--dim", type=_positive(int),
                   help="length d of the one vector (default: chosen from --bpp, at most 16384)")
    p.add_argument("--targets", default="", help="layers to adapt: a preset (attn, self-attn, attn+ffn) or a comma-separated list of exact layer names (default: the backbone's, self-attn on embedded)")
    p.add_argument("--steps", type=_positive(int), help="fitting steps per clip (default: the backbone's; 1200 on embedded)")
    p.add_argument("--draws", type=_positive(int),
                   help="noise draws per fitting step, back-propagated one at a time (default 1); under torchrun "
                        "every rank draws its own and the gradients are averaged")
    p.add_argument("--sampler-steps", type=_positive(int), default=defaults.sampler_steps,
                   help=f"decoder ODE steps (default {defaults.sampler_steps})")
    p.add_argument("--best-of", type=_positive(int), metavar="N",
                   help="best-of-N: at each scaled step keep the best of N candidate noises (a power of two) and store "
                        f"its index (default off; {scaling.candidates} when only --scaling-steps is given)")
    p.add_argument("--scaling-steps", type=_positive(int), metavar="K",
                   help=f"best-of-N: sampler steps of the scaled decode (default {scaling.steps} with --best-of)")
    p.add_argument("--caption", default="", help="condition the adaptation on this caption (text-conditioned "
                                                 "backbones only; stored in the file)")
    p.add_argument("--fps", type=_fps, help="frame rate of a folder of PNG frames (default 25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hash, the noise and the fit (default 0)")
    _add_backbone_args(p, compress=True)
    _add_server_args(p, "compress")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("decompress", help=".vov -> image or video")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True,
                   help="an image (.png, .jpg, ...) for an image file; for a clip a .y4m, .mp4, .mkv or .webm file, "
                        "or a folder (no suffix) of PNG frames")
    _add_backbone_args(p, compress=False)
    _add_server_args(p, "decompress")
    p.add_argument("-q", "--quiet", action="store_true")
    limits.add_arguments(p)

    p = sub.add_parser("info", help="show a .vov file's header, clips and sizes")
    p.add_argument("input")

    sub.add_parser("backbones", help="the backbones vov knows, what each needs and its defaults")

    for name, module, text in EXTENSIONS:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).add_arguments(sub.add_parser(name, help=text))

    p = sub.add_parser("train-base", help="train the embedded backbone from the allowed photos")
    p.add_argument("--run-dir", default="runs/base", help="checkpoints and logs (resumes if present)")
    p.add_argument("--steps", type=_positive(int), default=12000)
    p.add_argument("-o", "--output", help="weights file (default: RUN_DIR/embedded.safetensors)")
    return parser


def _tls(args):
    from vov.serving.client import ClientTls

    return ClientTls.from_files(args.tls_ca, args.tls_cert, args.tls_key)


def _note(text: str) -> None:
    print(f"vov: note: {text}", file=sys.stderr)


def _load_media(args):
    """The input as a Picture or a Clip, with notes about what is not coded."""
    from vov.media.video import load_media

    media = load_media(args.input, fps=args.fps)
    if getattr(media, "had_alpha", False):
        _note("the alpha channel is not coded; the image was composited over white")
    if getattr(media, "source_bits", 8) > getattr(media, "bits", 8):
        _note(f"a {media.source_bits}-bit colour image is read at {media.bits} bits")
    return media


def _scaling(args):
    from vov.options import ScalingOptions

    if args.best_of is None and args.scaling_steps is None:
        return None
    defaults = ScalingOptions()
    return ScalingOptions(candidates=args.best_of or defaults.candidates, steps=args.scaling_steps or defaults.steps)


class _Bars:
    """One progress bar per clip and stage (fitting, best-of-N search), made at its first step."""

    def __init__(self, quiet: bool):
        from tqdm import tqdm

        self.tqdm, self.quiet, self.bar, self.key = tqdm, quiet, None, None

    def __call__(self, p) -> None:
        key = (p.clip, p.stage == 3)
        if key != self.key:
            self.close()
            what = "searching" if p.stage == 3 else "fitting"
            clip = f" clip {p.clip}/{p.clips}" if p.clips > 1 else ""
            self.bar = self.tqdm(total=p.total, initial=p.step - 1, desc=f"{what}{clip}", unit="step",
                                 disable=self.quiet, dynamic_ncols=True)
            self.key = key
        self.bar.update(1)
        if p.stage != 3:
            extra = {"stage": p.stage, "loss": f"{p.distortion:.4f}"}
            if p.stage == 2:
                extra["est"] = f"{p.est_bits / 8:.0f}B"
            self.bar.set_postfix(extra)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_compress(args) -> None:
    from vov import codec
    from vov.method.adapters import AdapterSpec
    from vov.options import EncodeOptions

    check_writable(args.output)
    media = _load_media(args)
    frames = codec.Frames.of(media)
    spec = AdapterSpec(args.kind, args.rank, args.dim, args.seed, args.targets)
    options = EncodeOptions(backbone=args.backbone, model=args.model, device=args.device, adapter=spec,
                            steps=args.steps, draws=args.draws, lam=args.lam,
                            target_bpp=None if args.lam is not None else args.bpp, sampler_steps=args.sampler_steps,
                            noise_seed=args.seed, auto_d=args.dim is None, caption=args.caption,
                            scaling=_scaling(args))
    if args.server:
        from vov.serving.client import remote_compress

        # with no rate given, the encoder applies the default (and adapts it to small media) itself
        data = remote_compress(args.server, _upload_bytes(args, media), options, quiet=args.quiet, tls=_tls(args),
                               default_rate=args.bpp is None and args.lam is None)
        write_atomic(args.output, data)
        print(f"{args.output}: {len(data)} bytes, {8 * len(data) / frames.size:.4f} bpp")
        return
    options.validate()
    from vov.method import parallel

    device = parallel.join_from_environment(args.device)  # under torchrun: this rank's device
    try:
        _compress_here(args, frames, dataclasses.replace(options, device=device), parallel.is_writer())
    finally:
        parallel.leave()


def _compress_here(args, frames, options, writer: bool) -> None:
    """Compress in this process (one rank of several under torchrun: only rank 0 writes and prints)."""
    from vov import codec

    backbone = codec.get_backbone(args.backbone, args.model, options.device)
    if args.bpp is None and args.lam is None:
        rate, note = codec.default_rate(frames, options, backbone)
        if note and writer:
            _note(note)
        options = dataclasses.replace(options, target_bpp=rate)
    the_plan = codec.plan(frames, options, backbone)  # every refusal before the first step
    if len(the_plan.lengths) > 1 and writer:
        print(f"vov: {frames.count} frames in {len(the_plan.lengths)} clips of up to {the_plan.lengths[0]}",
              file=sys.stderr)
    checkpoint = f"{args.output}.partial"
    if (os.path.exists(checkpoint) or os.path.exists(f"{checkpoint}.clips")) and writer:
        print(f"vov: resuming from {checkpoint}", file=sys.stderr)
    bars = _Bars(args.quiet or not writer)
    try:
        report = codec.compress(frames, options, backbone=backbone, on_progress=bars, checkpoint=checkpoint)
    finally:
        bars.close()
    if not writer:
        return
    write_atomic(args.output, report.data)
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


class DecodeBar:
    """A decode's `on_step(step, total)` as one progress bar, made at the first step and closed on exit."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar = quiet, None

    def __call__(self, step: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="decoding", unit="step", disable=self.quiet, dynamic_ncols=True)
        self.bar.update(max(0, step - self.bar.n))

    def __enter__(self) -> "DecodeBar":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_decompress(args) -> None:
    from vov import codec
    from vov.format import bitstream
    from vov.media.output import check_output, write_clips

    data = read_bytes(args.input)
    f = bitstream.load(data)
    check_output(args.output, f.frames)
    if args.server:
        from vov.serving.client import remote_decompress_to

        remote_decompress_to(args.server, data, args.output, tls=_tls(args), quiet=args.quiet)
        print(f"{args.output}: {f.width}x{f.height}" + (f", {f.frames} frames" if f.frames > 1 else ""))
        return
    decode_limits = limits.from_args(args)
    codec.parse(f, decode_limits)  # refuse a bad file before any progress bar appears
    with DecodeBar(args.quiet) as on_step:
        clips = codec.decode_clips(f, on_step=on_step, limits=decode_limits, model=args.model, device=args.device)
        write_clips((clip.frames for clip in clips), args.output, f.width, f.height, f.frames, (f.fps_num, f.fps_den),
                    f.colour == 1)  # each clip lands as soon as it is decoded
    print(f"{args.output}: {f.width}x{f.height}" + (f", {f.frames} frames" if f.frames > 1 else ""))


def cmd_info(args) -> None:
    from vov.format import bitstream

    data = read_bytes(args.input)
    f = bitstream.load(data)
    sizes = bitstream.part_sizes(f)
    pixels = f.pixels
    print(f"format      {f.version[0]}.{f.version[1]}")
    print(f"backbone    {f.backbone} ({f.backbone_hash.hex()})")
    rate = f", {f.fps_num}/{f.fps_den} fps" if f.frames > 1 else ""
    print(f"media       {f.width}x{f.height}, {f.frames} frame(s){rate}, {'grey' if f.colour else 'RGB'}")
    print(f"adapter     {f.adapter_name}, rank {f.rank}, d {f.d}, seed {f.adapter_seed}, targets {f.targets}")
    schedule = "uniform" if f.schedule == 0 else f"flow shift {f.shift:g}"
    print(f"sampler     {f.sampler_steps} {'Euler' if f.sampler == 0 else 'SDE'} steps ({schedule}), "
          f"noise seed {f.noise_seed}, guidance {f.guidance:g}")
    if f.sampler == 1:
        index_bits = sum(8 * len(s.search) for s in f.segments)
        print(f"best-of-N   N = {1 << f.search_bits}, {f.sde_steps} scaled steps from step {f.sde_start}, g cap "
              f"{f.g_cap:g}; indices {index_bits} bits in all ({f.search_bits} bits each)")
    if f.caption:
        print(f"caption     {f.caption}")
    for i, (s, size) in enumerate(zip(f.segments, bitstream.segment_sizes(f))):
        print(f"clip {i:<6} {s.frames} frame(s), {size} bytes, {8 * size / (s.frames * f.width * f.height):.5f} bpp, "
              f"step {s.step_size:.6g}, |q| <= {s.qmax}, prior {len(s.prior_weights)} logistics")
    print(f"size        {len(data)} bytes = " + " + ".join(f"{k} {v}" for k, v in sizes.items()))
    print(f"rate        {8 * len(data) / pixels:.5f} bpp ({8 * len(data)} bits / {pixels} pixels)")


def cmd_backbones(args) -> None:
    from vov.backbones import format_listing

    print(format_listing(), end="")


def cmd_train_base(args) -> None:
    from vov.train.base import train

    train(args.run_dir, steps=args.steps, out=args.output)


# subcommands whose code lives beside the feature: module.add_arguments(parser) and module.run(args)
EXTENSIONS = [
    ("serve", "vov.serving.serve", "start Triton, the decoder and the encoder services on loopback"),
    ("export", "vov.serving.export", "export the denoiser and the latent decoder to ONNX"),
    ("bench", "vov.bench.cli", "rate-distortion benchmark against classical codecs"),
    ("edit", "vov.edit", "decode .vov files edited: another caption, merged files, a strength"),
]

COMMANDS = {"compress": cmd_compress, "decompress": cmd_decompress, "info": cmd_info, "backbones": cmd_backbones,
            "train-base": cmd_train_base}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in COMMANDS:
            COMMANDS[args.command](args)
        else:
            module = dict((n, m) for n, m, _ in EXTENSIONS)[args.command]
            importlib.import_module(module).run(args)
    except VovError as e:
        print(f"vov: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vov: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
