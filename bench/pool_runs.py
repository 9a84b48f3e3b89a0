"""Pool the points of several `vov bench` runs over disjoint images into one table of means.

    python bench/pool_runs.py RUN_DIR RUN_DIR... -o OUT.json

A long benchmark can be split over images (each run is a complete `vov bench` output folder); this
checks that the runs measured the same codecs at the same rates with the same vov settings, that no
image is counted twice, and then averages every codec's per-image values at each target rate over
all images, as `vov bench` does within one run (PSNR per image, then the mean). It writes the table
as JSON and prints it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

METRICS = ("psnr-rgb", "ms-ssim", "gmsd")


def load_run(folder: Path) -> tuple[dict, list[dict]]:
    missing = [name for name in ("summary.json", "per_image.json") if not (folder / name).is_file()]
    if missing:
        raise SystemExit(f"{folder} is not a finished `vov bench` output folder (no {' or '.join(missing)})")
    summary = json.loads((folder / "summary.json").read_text())
    settings = {"rates": summary["rates"], "codecs": summary["codecs"],
                "vov": json.loads((folder / "vov.json").read_text())["description"] if "vov" in summary["codecs"] else None}
    points = [p for p in json.loads((folder / "per_image.json").read_text())["points"] if p.get("role") == "target"]
    return settings, points


def pool(folders: list[Path]) -> dict:
    runs = [load_run(f) for f in folders]
    settings = runs[0][0]
    for folder, (other, _) in zip(folders[1:], runs[1:]):
        if other != settings:
            raise SystemExit(f"{folder} measured other settings than {folders[0]}: {other} vs {settings}")
    images: dict[str, Path] = {}
    for folder, (_, points) in zip(folders, runs):
        for name in {p["image"] for p in points}:
            if name in images:
                raise SystemExit(f"{name} is in both {images[name]} and {folder}")
            images[name] = folder
    points = [p for _, run_points in runs for p in run_points]
    table = []
    for codec in settings["codecs"]:
        for rate in settings["rates"]:
            group = [p for p in points if p["codec"] == codec and p["target_bpp"] == rate and "metrics" in p]
            row = {"codec": codec, "target_bpp": rate, "images": len(group),
                   "reached": len(group) == len(images) and all(p["reached"] for p in group),
                   "bpp": float(np.mean([p["bpp"] for p in group]))}
            row.update({m: float(np.mean([p["metrics"][m] for p in group])) for m in METRICS})
            table.append(row)
    return {"runs": [str(f) for f in folders], "images": sorted(images), "settings": settings,
            "averaging": "per image, then the mean over all images at each target rate", "rows": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    result = pool(args.runs)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{len(result['images'])} images from {len(args.runs)} runs; mean per target rate:")
    print("  codec  target |    bpp  | PSNR dB | MS-SSIM |  GMSD")
    for r in result["rows"]:
        flag = "" if r["reached"] else "  (not reached on every image)"
        print(f"  {r['codec']:<6} {r['target_bpp']:<6g} | {r['bpp']:.4f}  | {r['psnr-rgb']:7.2f} | "
              f"{r['ms-ssim']:.4f}  | {r['gmsd']:.4f}{flag}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
