"""Write the held-out photos (never trained on) as Kodak-sized 768x512 PNGs, the benchmark's test set.

    python bench/held_out_photos.py OUTDIR [--count N]

The photos come from Debian packages (MODEL_CARD.md lists them); run scripts/setup.sh first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from vov.train import data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=len(data.HELD_OUT))
    args = parser.parse_args()
    photos = sorted(data.held_out_photos(), key=lambda p: data.HELD_OUT.index(p.name))[: args.count]
    if not photos:
        raise SystemExit("no held-out photo is installed: run scripts/setup.sh (it installs the photo packages)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        path = out / f"{photo.name}.png"
        Image.fromarray(data.kodak_like(data.load_rgb(photo))).save(path)
        print(path)


if __name__ == "__main__":
    main()
