"""`vov decompress`: a .vov file into an image or a clip, here or through a decoder service."""

from __future__ import annotations

import argparse

from vov.cli import flags
from vov.files import read_bytes

NAME = "decompress"
HELP = ".vov -> image or video"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True,
                   help="an image (.png, .jpg, ...) for an image file; for a clip a .y4m, .mp4, .mkv or .webm file, "
                        "or a folder (no suffix) of PNG frames")
    flags.add_backbone(p, name=False)
    flags.add_server(p, "decoder", "decompress")
    flags.add_quiet(p)
    flags.add_limits(p)


def run(args) -> None:
    from vov import codec
    from vov.format import bitstream
    from vov.media.output import check_output, write_clips
    from vov.progress import StepBar

    data = read_bytes(args.input)
    f = bitstream.load(data)
    check_output(args.output, f.frames)
    if args.server:
        from vov.serving.client import remote_decompress_to

        remote_decompress_to(args.server, data, args.output, tls=flags.tls(args), quiet=args.quiet)
        print(f"{args.output}: {f.width}x{f.height}" + (f", {f.frames} frames" if f.frames > 1 else ""))
        return
    decode_limits = flags.limits_of(args)
    codec.parse(f, decode_limits)  # refuse a bad file before any progress bar appears
    with StepBar(args.quiet) as on_step:
        clips = codec.decode_clips(f, on_step=on_step, limits=decode_limits, model=args.model, device=args.device)
        write_clips((clip.frames for clip in clips), args.output, f.width, f.height, f.frames, (f.fps_num, f.fps_den),
                    f.colour == 1)  # each clip lands as soon as it is decoded
    print(f"{args.output}: {f.width}x{f.height}" + (f", {f.frames} frames" if f.frames > 1 else ""))
