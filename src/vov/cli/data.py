"""`vov data`: gather the training photos from their catalogued sources, and pack them for a trip."""

from __future__ import annotations

import argparse

from vov.cli import flags

NAME = "data"
HELP = "gather the embedded model's training photos, or pack a gathered set"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", required=True)
    g = sub.add_parser("gather", help="collect every catalogued photo available here into a folder with a manifest")
    g.add_argument("out", help="the folder to write (JPEGs and manifest.json)")
    g.add_argument("--repos", help="a folder of git clones (OWNER+NAME) of the catalogued repositories")
    g.add_argument("--no-install", action="store_true", help="never apt-get install the Debian packages")
    g.add_argument("--source", action="append", help="only this catalogued source (repeatable)")
    flags.add_quiet(g)
    k = sub.add_parser("pack", help="one safetensors file of a gathered set's photos, to carry to a GPU machine")
    k.add_argument("folder", help="a folder that `vov data gather` wrote")
    k.add_argument("out", help="the pack file to write")
    k.add_argument("--long-side", type=flags.positive(int), default=512, help="pixels (default 512)")
    k.add_argument("--quality", type=flags.positive(int), default=90, help="JPEG quality, 50-100 (default 90)")
    k.add_argument("--max-mb", type=flags.positive(float), default=64.0, help="refuse a larger pack (default 64)")
    flags.add_quiet(k)


def run(args) -> None:
    if args.data_command == "gather":
        from vov.train.gather import gather

        report = gather(args.out, args.repos, install=not args.no_install, only=args.source, progress=not args.quiet)
        print(f"{report.gathered} photos in {args.out}")
        for source, count in sorted(report.per_source.items(), key=lambda kv: -kv[1]):
            print(f"  {count:5d}  {source}")
        for reason, count in sorted(report.skipped.items()):
            print(f"  skipped {count}: {reason}")
        for line in report.missing:
            print(f"  not available here: {line}")
        return
    from vov.train.pack import build_pack

    summary = build_pack(args.folder, args.out, args.long_side, args.quality, args.max_mb, progress=not args.quiet)
    licences = ", ".join(f"{k} {v}" for k, v in sorted(summary["licences"].items(), key=lambda kv: -kv[1]))
    print(f"{args.out}: {summary['photos']} photos, {summary['bytes'] / 2**20:.1f} MiB ({licences})")
