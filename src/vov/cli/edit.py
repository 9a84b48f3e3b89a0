"""`vov edit`: decode .vov files edited through their adaptations (vov.edit, docs/editing.md).

    vov edit IN.vov --caption "a panda" -o OUT              decode the same vector with another caption
    vov edit A.vov B.vov --merge --weights 0.6,0.4 -o OUT   dW = 0.6 B_A A_A + 0.4 B_B A_B
    vov edit IN.vov --strength 0.5 -o OUT                   dW = 0.5 B A (1: the plain decode, 0: the base model)
"""

from __future__ import annotations

import argparse

from vov.cli import flags
from vov.errors import UsageError

NAME = "edit"
HELP = "decode .vov files edited: another caption, merged files, a strength"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from vov.method.edit import MAX_PARTS, STRENGTH_RANGE

    p.add_argument("inputs", nargs="+", metavar="IN.vov",
                   help=f"the file to edit; with --merge 2 to {MAX_PARTS} files of one backbone")
    p.add_argument("-o", "--output", required=True,
                   help="as for decompress: an image file, or for a clip a video file or a folder of PNG frames")
    p.add_argument("--caption", help="decode with this caption instead of the file's (text-conditioned backbones); "
                                     "\"\" is the null caption")
    p.add_argument("--merge", action="store_true", help="merge the files' adaptations: dW = sum of w_i B_i A_i")
    p.add_argument("--weights", metavar="W1,W2", help="with --merge: one weight per file, each in "
                                                       "[-4, 4] (default 1/n each)")
    p.add_argument("--strength", default="1", metavar="S",
                   help=f"scale the adaptation: 1 the plain decode, 0 the base model (in [{STRENGTH_RANGE[0]:g}, "
                        f"{STRENGTH_RANGE[1]:g}], default 1)")
    p.add_argument("--replay", action="store_true", help="a best-of-N file: replay its chosen noises with the edit "
                                                         "(default: the plain ODE on the same grid)")
    flags.add_backbone(p, name=False)
    flags.add_server(p, "decoder", "edit")
    flags.add_quiet(p)
    flags.add_limits(p)


def options_from_args(args):
    """The EditOptions of the flags; UsageError for flags that do not go together."""
    from vov.edit import EditOptions
    from vov.method.edit import MAX_PARTS, STRENGTH_RANGE, check_number

    count = len(args.inputs)
    if count > 1 and not args.merge:
        raise UsageError(f"{count} files: add --merge to merge their adaptations")
    if args.merge and count < 2:
        raise UsageError("--merge needs two or more files")
    weights = None
    if args.weights is not None:
        if not args.merge:
            raise UsageError("--weights go with --merge; scale one file with --strength")
        items = args.weights.split(",")
        if len(items) > MAX_PARTS:
            raise UsageError(f"at most {MAX_PARTS} weights")
        weights = tuple(check_number(f"weight {i + 1}", w.strip(), (-float("inf"), float("inf")))
                        for i, w in enumerate(items))
    return EditOptions(caption=args.caption, weights=weights,
                       strength=check_number("--strength", args.strength, STRENGTH_RANGE), replay=args.replay)


def run(args) -> None:
    from vov import codec
    from vov.edit import decode_plan, plan
    from vov.files import read_bytes
    from vov.media.output import check_output, write_clips
    from vov.progress import StepBar

    options = options_from_args(args)
    datas = [read_bytes(path) for path in args.inputs]
    decode_limits = flags.limits_of(args)
    the_plan = plan(datas, options, decode_limits)  # every refusal before any model is loaded
    check_output(args.output, the_plan.header.frames)
    for text in the_plan.notes():
        flags.note(text)
    h = the_plan.header
    what = f"{h.width}x{h.height}" + (f", {h.frames} frames" if h.frames > 1 else "")
    if args.server:
        from vov.serving.client import remote_edit_to

        remote_edit_to(args.server, datas, args.output, options, tls=flags.tls(args), quiet=args.quiet)
        print(f"{args.output}: {what}")
        return
    backbone = codec.backbone_for(h, args.model, args.device)
    with StepBar(args.quiet) as on_step:
        clips = decode_plan(the_plan, backbone, on_step=on_step, limits=decode_limits)
        write_clips((clip.frames for clip in clips), args.output, h.width, h.height, h.frames, (h.fps_num, h.fps_den),
                    h.colour == 1)
    print(f"{args.output}: {what}")
