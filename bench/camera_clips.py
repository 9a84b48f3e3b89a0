"""Write the video benchmark's clips: camera moves over the held-out photos, as Y4M.

    python bench/camera_clips.py OUTDIR [--size 256x192] [--clips pan:EveningGlow:17,...]

Each clip is `vov.media.camera_move` (pan, tilt, zoom-in, zoom-out, rotate, mixed) over one of the
held-out photos (never trained on; MODEL_CARD.md; run scripts/setup.sh to install them), and no
other image or video. The photo is first made Kodak-like (768x512, as bench/held_out_photos.py
does), then scaled with Lanczos so that its shorter side is `--scene` times the view's (default 2):
a view then shows about half of the scene, and the move crosses the rest. Frames are written as
Y4M 4:2:0, 8 bits, limited range, BT.601 (what a reader assumes for a picture this size), at 25
frames per second; OUTDIR/clips.json lists each clip's photo, move, size, frames and sha256.

The default set: two 17-frame clips of different moves (one vector each on the embedded backbone)
and one 51-frame move that needs three vectors (17 frames per clip).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from vov.media import save_video
from vov.media.camera import CAMERA_MOVES, camera_move
from vov.train import data

DEFAULT_CLIPS = "pan:EveningGlow:17,zoom-in:Garden:17,mixed:picosdeeuropa_by_Aitzol_Berasategi:51"


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT") from None
    if not (16 <= w <= 768 and 16 <= h <= 512):
        raise argparse.ArgumentTypeError("a view is 16..768 pixels wide and 16..512 high (the photos are 768x512)")
    return w, h


def parse_clips(text: str) -> list[tuple[str, str, int]]:
    out = []
    for part in text.split(","):
        try:
            move, photo, frames = part.strip().split(":")
            frames = int(frames)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not MOVE:PHOTO:FRAMES") from None
        if move not in CAMERA_MOVES:
            raise argparse.ArgumentTypeError(f"{move!r} is not a camera move ({', '.join(CAMERA_MOVES)})")
        if photo not in data.HELD_OUT:
            raise argparse.ArgumentTypeError(f"{photo!r} is not a held-out photo ({', '.join(data.HELD_OUT)})")
        if not 2 <= frames <= 1000:
            raise argparse.ArgumentTypeError(f"a clip has 2..1000 frames, not {frames}")
        out.append((move, photo, frames))
    return out


def scene(photo: np.ndarray, view: tuple[int, int], factor: float) -> np.ndarray:
    """The Kodak-like photo scaled so that it is `factor` times the view on its tighter side."""
    h, w = photo.shape[:2]
    scale = min(1.0, factor * max(view[0] / w, view[1] / h))
    size = (max(view[0], round(w * scale)), max(view[1], round(h * scale)))
    return np.asarray(Image.fromarray(photo).resize(size, Image.LANCZOS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--size", type=parse_size, default=(256, 192), help="view WIDTHxHEIGHT (default 256x192)")
    parser.add_argument("--clips", type=parse_clips, default=parse_clips(DEFAULT_CLIPS),
                        help=f"MOVE:PHOTO:FRAMES,... (default {DEFAULT_CLIPS})")
    parser.add_argument("--scene", type=float, default=2.0,
                        help="the photo's shorter side in views (default 2; 1 would leave no room to pan)")
    args = parser.parse_args()
    if not 1.0 <= args.scene <= 4.0:
        parser.error("--scene is between 1 and 4")
    photos = {p.name: p for p in data.held_out_photos()}
    missing = sorted({photo for _, photo, _ in args.clips} - set(photos))
    if missing:
        raise SystemExit(f"held-out photo(s) {', '.join(missing)} not installed: run scripts/setup.sh")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for move, name, frames in args.clips:
        picture = scene(data.kodak_like(data.load_rgb(photos[name])), args.size, args.scene)
        clip = camera_move(picture, frames, move, size=args.size, fps=(25, 1))
        path = out / f"{move}-{name.split('_')[0]}-{frames}f.y4m"
        save_video(clip, path, chroma="420", range="limited", matrix="bt601", bits=8)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        listing.append({"file": path.name, "photo": name, "move": move, "frames": frames, "width": args.size[0],
                        "height": args.size[1], "fps": [25, 1], "scene": list(picture.shape[1::-1]),
                        "format": "Y4M 4:2:0 8-bit limited range BT.601", "sha256": digest})
        print(path)
    (out / "clips.json").write_text(json.dumps(listing, indent=1) + "\n")


if __name__ == "__main__":
    main()
