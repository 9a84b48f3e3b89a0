"""`vov bench`: vov against classical codecs on the same images, in one run.

    vov bench IMAGES... -o OUTDIR [--rates 0.02,0.05,0.1] [--codecs vov,jpeg,webp,avif,jxl,x265]
              [--steps N] [--sampler-steps N] [--backbone NAME] [--points 0.02,0.05,0.1]
              [--lpips-weights FILE[,FILE]] [--dists-weights FILE[,FILE]] [--cache DIR] [--no-report]

Writes OUTDIR/CODEC.json (CompressAI-style means over images), OUTDIR/per_image.json,
OUTDIR/summary.json, OUTDIR/summary.txt and OUTDIR/report.html. Finished points are cached in
OUTDIR/cache (or --cache), so an interrupted or extended run computes only what is missing.

    vov bench VIDEOS... -o OUTDIR [--codecs vov,x264,x265,svt-av1,aom-av1,vvc] [--video]
              [--warm-start] [--fvd-weights FILE] [the options above]

Videos (Y4M, MP4, MKV, WebM, MOV; with --video, folders of numbered PNG frames) run the video
benchmark instead (vov.bench.video_runner): OUTDIR/per_clip.json in place of per_image.json.
"""

from __future__ import annotations

import argparse

from vov.cli import flags

NAME = "bench"
HELP = "rate-distortion benchmark against classical codecs"

KNOWN_CODECS = ("vov", "jpeg", "webp", "avif", "jxl", "x265")
VIDEO_ONLY_CODECS = ("x264", "svt-av1", "aom-av1", "vvc")  # with vov and x265: the video benchmark's


def _rate_list(text: str) -> list[float]:
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a number of bits per pixel") from None
        if not (value > 0 and value < 64):
            raise argparse.ArgumentTypeError(f"{part} is not a rate in bits per pixel (0 < bpp < 64)")
        values.append(value)
    if not values:
        raise argparse.ArgumentTypeError("give at least one rate, e.g. 0.02,0.05,0.1")
    return sorted(set(values))


def _codec_list(text: str) -> list[str]:
    names = [p.strip().lower() for p in text.split(",") if p.strip()]
    unknown = [n for n in names if n not in KNOWN_CODECS + VIDEO_ONLY_CODECS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown codec {unknown[0]!r}; known: {', '.join(KNOWN_CODECS)} "
                                         f"(images), {', '.join(('vov', 'x265') + VIDEO_ONLY_CODECS)} (videos)")
    if not names:
        raise argparse.ArgumentTypeError("give at least one codec")
    return list(dict.fromkeys(names))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vov.backbones import DEFAULT_BACKBONE

    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="images to code (PNG, JPEG, ...), or folders whose images are all coded; or videos "
                             "(Y4M, MP4, MKV, WebM, MOV), which run the video benchmark")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the JSON and the report")
    parser.add_argument("--rates", type=_rate_list, default=[0.02, 0.05, 0.1],
                        help="target bits per pixel, comma-separated (default 0.02,0.05,0.1)")
    parser.add_argument("--codecs", type=_codec_list, default=None,
                        help=f"comma-separated, from {','.join(KNOWN_CODECS)} (default: all); on videos from "
                             f"vov,x265,{','.join(VIDEO_ONLY_CODECS)} (default: all but aom-av1)")
    parser.add_argument("--points", type=_rate_list, default=[0.02, 0.05, 0.1],
                        help="bpp at which the summary interpolates quality (default 0.02,0.05,0.1)")
    parser.add_argument("--steps", type=flags.positive(int), default=1200, help="vov fitting steps (default 1200)")
    parser.add_argument("--sampler-steps", type=flags.positive(int), default=50, help="vov decoder ODE steps (default 50)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"vov backbone (default: {DEFAULT_BACKBONE})")
    parser.add_argument("--seed", type=int, default=0, help="vov seed (default 0)")
    parser.add_argument("--lpips-weights", metavar="FILE[,FILE]",
                        help="LPIPS weights (AlexNet trunk + linear layers); LPIPS is left out without them")
    parser.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex", help="LPIPS trunk (default alex)")
    parser.add_argument("--dists-weights", metavar="FILE[,FILE]",
                        help="DISTS weights (VGG-16 trunk + alpha/beta); DISTS is left out without them")
    parser.add_argument("--cache", metavar="DIR", help="cache of finished points (default OUTDIR/cache)")
    parser.add_argument("--no-report", action="store_true", help="write the JSON only, no report.html")
    parser.add_argument("--video", action="store_true",
                        help="videos: a folder is one clip of numbered PNG frames (without it, a folder means its images)")
    parser.add_argument("--warm-start", action="store_true",
                        help="videos: each clip's fit starts from the previous clip's vector")
    parser.add_argument("--fvd-weights", metavar="FILE",
                        help="videos: Kinetics-400 I3D weights for FVD; FVD is left out without them")
    flags.add_quiet(parser, "no progress bars")


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".ppm", ".pgm"}


def expand_images(paths: list[str]) -> list[str]:
    """Files as given; a folder gives its images (by suffix, sorted), and none is an error."""
    import os

    from vov.errors import UsageError

    out = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(path, n) for n in os.listdir(path)
                           if os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES and os.path.isfile(os.path.join(path, n)))
            if not found:
                raise UsageError(f"{path}: a folder with no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out.extend(found)
        else:
            out.append(path)
    return out


def run(args) -> None:
    import os

    from vov.bench.image_runner import BenchConfig, ImageRunner
    from vov.bench.video_runner import is_video

    videos = [p for p in args.images if is_video(p) or (args.video and os.path.isdir(p))]
    if videos:
        return run_video(args, videos)
    if args.codecs is None:
        args.codecs = list(KNOWN_CODECS)
    video_only = [n for n in args.codecs if n in VIDEO_ONLY_CODECS]
    video_flags = [f for f, v in (("--warm-start", args.warm_start), ("--fvd-weights", args.fvd_weights)) if v]
    if video_only or video_flags:
        from vov.errors import UsageError

        if video_only:
            raise UsageError(f"{video_only[0]} codes videos; on images: {', '.join(KNOWN_CODECS)}")
        raise UsageError(f"{video_flags[0]} applies to videos, and these are images")
    config = BenchConfig(
        images=expand_images(args.images), out=args.output, rates=args.rates, codecs=args.codecs, points=args.points,
        steps=args.steps, sampler_steps=args.sampler_steps, backbone=args.backbone, seed=args.seed,
        cache=args.cache, lpips_weights=args.lpips_weights, lpips_net=args.lpips_net,
        dists_weights=args.dists_weights, quiet=args.quiet, report=not args.no_report,
    )
    result = ImageRunner(config).run()
    _print_results(result, config, "per_image.json")


def _print_results(result: dict, config, per_item: str) -> None:
    """The summary, then the files a run wrote (`per_item`: per_image.json or per_clip.json)."""
    import os

    print(result["text"], end="")
    written = [f"{c}.json" for c in config.codecs] + [per_item, "summary.json", "summary.txt"]
    if config.report:
        written.append("report.html")
    print(f"wrote {', '.join(os.path.join(config.out, w) for w in written)}")


def run_video(args, videos: list[str]) -> None:
    from vov.bench.video_runner import DEFAULT_VIDEO_CODECS, VideoBenchConfig, VideoRunner
    from vov.errors import UsageError

    others = [p for p in args.images if p not in videos]
    if others:
        raise UsageError(f"{others[0]} is not a video; give either images or videos to one benchmark"
                         + ("" if args.video else " (a folder of PNG frames counts as a video with --video)"))
    for flag, value in (("--lpips-weights", args.lpips_weights), ("--dists-weights", args.dists_weights)):
        if value:
            raise UsageError(f"{flag} measures images; the video benchmark measures PSNR, MS-SSIM and FVD")
    config = VideoBenchConfig(
        videos=videos, out=args.output, rates=args.rates, codecs=args.codecs or list(DEFAULT_VIDEO_CODECS),
        points=args.points, steps=args.steps, sampler_steps=args.sampler_steps, backbone=args.backbone,
        seed=args.seed, warm_start=args.warm_start, cache=args.cache, fvd_weights=args.fvd_weights,
        quiet=args.quiet, report=not args.no_report,
    )
    result = VideoRunner(config).run()
    _print_results(result, config, "per_clip.json")
