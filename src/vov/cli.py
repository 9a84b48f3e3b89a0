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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vov", description="Images stored as adaptations of a diffusion model.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="image -> .vov")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    _add_rate_args(p)
    p.add_argument("--kind", choices=("one-vector", "lora"), default="one-vector", help="adapter kind")
    p.add_argument("--rank", type=_positive(int), default=4, help="LoRA rank (default 4)")
    p.add_argument("--dim", type=_positive(int),
                   help="length d of the one vector (default: chosen from --bpp, at most 16384)")
    p.add_argument("--targets", default="", help="layers to adapt: a preset (attn, self-attn, attn+ffn) or a comma-separated list of exact layer names (default: the backbone's, self-attn on embedded)")
    p.add_argument("--steps", type=_positive(int), default=1200, help="fitting steps (default 1200)")
    p.add_argument("--sampler-steps", type=_positive(int), default=50, help="decoder ODE steps (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hash, the noise and the fit (default 0)")
    p.add_argument("--backbone", default="embedded", help="foundation model (default: embedded)")
    _add_server_args(p, "compress")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("decompress", help=".vov -> image")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    _add_server_args(p, "decompress")
    p.add_argument("-q", "--quiet", action="store_true")
    limits.add_arguments(p)

    p = sub.add_parser("info", help="show a .vov file's header and sizes")
    p.add_argument("input")

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


def cmd_compress(args) -> None:
    from tqdm import tqdm

    from vov import codec
    from vov.media import load_image
    from vov.method.adapters import AdapterSpec
    from vov.method.fit import FitConfig

    check_writable(args.output)
    picture = load_image(args.input)
    if picture.had_alpha:
        _note("the alpha channel is not coded; the image was composited over white")
    if picture.source_bits > picture.bits:
        _note(f"a {picture.source_bits}-bit colour image is read at {picture.bits} bits")
    pixels = picture.width * picture.height
    spec = AdapterSpec(args.kind, args.rank, args.dim or AdapterSpec().d, args.seed, args.targets)
    fit_config = FitConfig(steps=args.steps, seed=args.seed, **({"lam": args.lam} if args.lam is not None else {}))
    options = codec.EncodeOptions(backbone=args.backbone, adapter=spec, fit=fit_config,
                                  target_bpp=None if args.lam is not None else args.bpp,
                                  sampler_steps=args.sampler_steps, noise_seed=args.seed, auto_d=args.dim is None)
    if args.server:
        from vov.serving.client import remote_compress

        # with no rate given, the encoder applies the default (and adapts it to small images) itself
        data = remote_compress(args.server, read_bytes(args.input), options, quiet=args.quiet, tls=_tls(args),
                               default_rate=args.bpp is None and args.lam is None)
        write_atomic(args.output, data)
        print(f"{args.output}: {len(data)} bytes, {8 * len(data) / pixels:.4f} bpp")
        return
    options.validate()
    backbone = codec.get_backbone(args.backbone)
    if args.bpp is None and args.lam is None:
        rate, note = codec.default_rate(picture, options, backbone)
        if note:
            _note(note)
        options = dataclasses.replace(options, target_bpp=rate)
    codec.plan(picture, options, backbone)  # every refusal before the first step
    checkpoint = f"{args.output}.partial"
    if os.path.exists(checkpoint):
        print(f"vov: resuming from {checkpoint}", file=sys.stderr)
    bar = None

    def progress(p) -> None:
        nonlocal bar
        if bar is None:  # created at the first step, so errors before it print alone
            bar = tqdm(total=p.total, initial=p.step - 1, desc="fitting", unit="step", disable=args.quiet,
                       dynamic_ncols=True)
        bar.update(1)
        extra = {"stage": p.stage, "loss": f"{p.distortion:.4f}"}
        if p.stage == 2:
            extra["est"] = f"{p.est_bits / 8:.0f}B"
        bar.set_postfix(extra)

    try:
        report = codec.compress(picture, options, backbone=backbone, on_progress=progress, checkpoint=checkpoint)
    finally:
        if bar is not None:
            bar.close()
    write_atomic(args.output, report.data)
    print(f"{args.output}: {len(report.data)} bytes, {report.bpp:.4f} bpp, d={report.d}, "
          f"payload {report.payload_bits} bits vs estimate {report.est_bits:.0f} "
          f"({100 * report.coding_overhead:+.2f}%), {report.seconds:.1f} s")


def cmd_decompress(args) -> None:
    from tqdm import tqdm

    from vov import codec
    from vov.media import save_image

    data = read_bytes(args.input)
    check_writable(args.output)
    if args.server:
        from vov.serving.client import remote_decompress

        decoded_pixels, grey = remote_decompress(args.server, data, tls=_tls(args), quiet=args.quiet)
    else:
        decode_limits = limits.from_args(args)
        codec.parse(data, decode_limits)  # refuse a bad file before any progress bar appears
        bar = None

        def on_step(i: int, n: int) -> None:
            nonlocal bar
            if bar is None:
                bar = tqdm(total=n, desc="decoding", unit="step", disable=args.quiet, dynamic_ncols=True)
            bar.update(1)

        try:
            decoded = codec.decompress(data, on_step=on_step, limits=decode_limits)
        finally:
            if bar is not None:
                bar.close()
        decoded_pixels, grey = decoded.pixels, decoded.grey
    save_image(decoded_pixels, args.output, grey=grey)
    print(f"{args.output}: {decoded_pixels.shape[1]}x{decoded_pixels.shape[0]}")


def cmd_info(args) -> None:
    from vov.format import bitstream

    data = read_bytes(args.input)
    f = bitstream.load(data)
    sizes = bitstream.part_sizes(f)
    pixels = f.pixels
    print(f"format      {f.version[0]}.{f.version[1]}")
    print(f"backbone    {f.backbone} ({f.backbone_hash.hex()})")
    print(f"media       {f.width}x{f.height}, {f.frames} frame(s), {'grey' if f.colour else 'RGB'}")
    print(f"adapter     {f.adapter_name}, rank {f.rank}, d {f.d}, seed {f.adapter_seed}, targets {f.targets}")
    print(f"quantiser   step {f.step_size:.6g}, |q| <= {f.qmax}, prior {len(f.prior_weights)} logistics")
    print(f"sampler     {f.sampler_steps} Euler steps, noise seed {f.noise_seed}, guidance {f.guidance:g}")
    if f.caption:
        print(f"caption     {f.caption}")
    print(f"size        {len(data)} bytes = " + " + ".join(f"{k} {v}" for k, v in sizes.items()))
    print(f"rate        {8 * len(data) / pixels:.5f} bpp ({8 * len(data)} bits / {pixels} pixels)")


def cmd_train_base(args) -> None:
    from vov.train.base import train

    train(args.run_dir, steps=args.steps, out=args.output)


# subcommands whose code lives beside the feature: module.add_arguments(parser) and module.run(args)
EXTENSIONS = [
    ("serve", "vov.serving.serve", "start Triton, the decoder and the encoder services on loopback"),
    ("export", "vov.serving.export", "export the denoiser and the latent decoder to ONNX"),
    ("bench", "vov.bench.cli", "rate-distortion benchmark against classical codecs"),
]

COMMANDS = {"compress": cmd_compress, "decompress": cmd_decompress, "info": cmd_info, "train-base": cmd_train_base}


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
