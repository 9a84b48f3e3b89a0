"""The picture and numbers of docs/editing.md: what editing does on the small models vov ships and tests.

    python bench/edit_figure.py [--steps 600] [--bpp 0.5] [--out docs/images/editing.png]

Row 1, the embedded backbone (trained on photos, null caption only): two held-out photos are each
compressed to a file; the first is decoded at strengths 0, 0.5, 1 (its plain decode) and 1.5, then
merged with the second at weights (0.5, 0.5); the second's plain decode closes the row.
Row 2, the tiny Wan2.1 folder of the tests (random weights, a real UMT5 text encoder and
tokenizer): a picture compressed with the caption "a red cat", decoded with it, with "a blue dog",
their difference amplified, and at strength 0. Its weights are random, so the caption moves
pixels without meaning: the row shows the mechanics, not what a trained model draws.

Writes the PNG grid and bench/results/edit_figure.json (PSNR of each tile against the photo).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vov import codec
from vov import edit as editing
from vov.backbones import testing
from vov.edit import EditOptions
from vov.media import Picture
from vov.method.adapters import AdapterSpec
from vov.method.fit import FitConfig
from vov.bench.metrics import psnr
from vov.train import data

PHOTOS = ("LadyBird", "Garden")
WIDTH, HEIGHT = 192, 128
AMPLIFY = 100  # the caption edit's difference, times this


def photo(name: str) -> np.ndarray:
    found = [p for p in data.held_out_photos() if p.name == name]
    if not found:
        raise SystemExit(f"photo {name} is not installed: run scripts/setup.sh")
    return data.kodak_like(data.load_rgb(found[0]), WIDTH, HEIGHT).astype(np.float32) / 255.0


def tile(pixels: np.ndarray, label: str) -> Image.Image:
    img = Image.fromarray((np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8)).resize((WIDTH, HEIGHT), Image.NEAREST)
    out = Image.new("RGB", (WIDTH, HEIGHT + 14), "white")
    out.paste(img, (0, 14))
    ImageDraw.Draw(out).text((2, 1), label, fill="black")
    return out


def grid(rows: list[list[Image.Image]]) -> Image.Image:
    columns = max(len(r) for r in rows)
    w, h = rows[0][0].size
    out = Image.new("RGB", (columns * (w + 4), len(rows) * (h + 4)), "white")
    for y, row in enumerate(rows):
        for x, t in enumerate(row):
            out.paste(t, (x * (w + 4), y * (h + 4)))
    return out


def embedded_row(args, record: dict) -> list[Image.Image]:
    backbone = codec.get_backbone("embedded")
    options = codec.EncodeOptions(backbone="embedded", target_bpp=args.bpp, steps=args.steps, sampler_steps=50)
    originals = [photo(name) for name in PHOTOS]
    files = [codec.compress(Picture(img), options, backbone=backbone).data for img in originals]
    a, b = files
    tiles = [tile(originals[0], f"{PHOTOS[0]} (photo)")]
    cases = [("strength 0", [a], EditOptions(strength=0.0)), ("strength 0.5", [a], EditOptions(strength=0.5)),
             ("strength 1 (decode)", [a], EditOptions()), ("strength 1.5", [a], EditOptions(strength=1.5)),
             ("merge 0.5 / 0.5", [a, b], EditOptions(weights=(0.5, 0.5))), (f"{PHOTOS[1]} decode", [b], EditOptions())]
    for label, datas, edit_options in cases:
        pixels = editing.edit(datas, edit_options, backbone=backbone).pixels
        reference = originals[1] if label.startswith(PHOTOS[1]) else originals[0]
        record["embedded"][label] = {"psnr": round(float(psnr(pixels, reference)), 2), "bytes": sum(map(len, datas))}
        tiles.append(tile(pixels, label))
    return tiles


def wan_row(args, record: dict) -> list[Image.Image]:
    with tempfile.TemporaryDirectory() as folder:
        path = testing.write_wan_folder(Path(folder) / "wan", seed=0)
        backbone = codec.get_backbone("wan", str(path))
        y, x = np.mgrid[0:HEIGHT // 2, 0:WIDTH // 2].astype(np.float32)
        picture = np.stack([0.5 + 0.4 * np.sin(x / 5), y / (HEIGHT // 2), 0.5 + 0.3 * np.cos((x + y) / 9)], -1)
        options = codec.EncodeOptions(backbone="wan", adapter=AdapterSpec(rank=1, d=1024), target_bpp=None,
                                      fit=FitConfig(steps=args.wan_steps, lam=0.001), sampler_steps=20,
                                      caption="a red cat")
        data_ = codec.compress(Picture(picture), options, backbone=backbone).data
        own = editing.edit([data_], EditOptions(), backbone=backbone).pixels
        other = editing.edit([data_], EditOptions(caption="a blue dog"), backbone=backbone).pixels
        base = editing.edit([data_], EditOptions(strength=0.0), backbone=backbone).pixels
    difference = np.abs(other - own)
    record["wan"] = {"psnr_decode": round(float(psnr(own, picture)), 2),
                     "caption_edit_mean_abs": float(difference.mean()), "caption_edit_max_abs": float(difference.max()),
                     "strength_0_psnr": round(float(psnr(base, picture)), 2)}
    return [tile(picture, "tiny Wan: picture"), tile(own, '"a red cat" (decode)'), tile(other, '"a blue dog"'),
            tile(np.clip(difference * AMPLIFY, 0, 1), f"|difference| x {AMPLIFY}"), tile(base, "strength 0")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600, help="fitting steps of the embedded backbone's files")
    parser.add_argument("--bpp", type=float, default=0.5, help="rate of the embedded backbone's files")
    parser.add_argument("--wan-steps", type=int, default=200, help="fitting steps of the tiny Wan file")
    parser.add_argument("--out", default="docs/images/editing.png")
    args = parser.parse_args()
    start = time.perf_counter()
    record = {"photos": list(PHOTOS), "size": [WIDTH, HEIGHT], "bpp": args.bpp, "steps": args.steps, "embedded": {}}
    rows = [embedded_row(args, record), wan_row(args, record)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    grid(rows).save(args.out, optimize=True)
    record["seconds"] = round(time.perf_counter() - start, 1)
    results = Path("bench/results/edit_figure.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    print(f"wrote {args.out} and {results}")


if __name__ == "__main__":
    main()
