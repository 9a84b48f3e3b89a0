"""The export of Wan's latent decoder: the whole causal loop unrolled for a latent-frame count, against
one latent frame with its cache as inputs and outputs (two graphs, whatever the clip's length).

    python bench/latent_decoder_export.py [--tiny 1,2,3,5] [--real 1,2,3] [--chunks tiny,real]
                                          [--out bench/results/latent_decoder_export.json]

Wan's VAE decodes a clip one latent frame at a time with a causal cache. Traced whole, that loop
unrolls into one graph per latent-frame count (`unrolled`: vov.serving.graphs.export_vae_decoder,
the exporter the services used before); the services now export one step of it, the first latent
frame and a later one, with the cache explicit (`chunk`: vov.serving.graphs.export_decoder_chunk,
docs/services.md, "Exporting"). Measured here, one export at a time in this process: the wall time,
the graph's file size and its node count, for
- `tiny`: the latent decoder of a tiny Wan2.1 folder in the real layout (vov.backbones.testing),
- `real`: Wan2.1's own VAE (127M parameters, its real config) with random weights.
A clip of 81 frames is 21 latent frames; the unrolled counts measured are fewer, and the table shows
how the time grows towards it. Rows already in `--out` that this run does not measure are kept
(an empty list skips a kind: `--tiny "" --real ""` measures the chunk graphs alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vov.files import write_atomic  # noqa: E402


def facts(path: Path, seconds: float) -> dict:
    import onnx

    size = sum(f.stat().st_size for f in path.parent.iterdir())
    nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
    return {"seconds": round(seconds, 1), "bytes": size, "nodes": nodes}


def measure(backbone, counts: list[int], work: Path, label: str) -> list[dict]:
    from vov.serving.graphs import export_vae_decoder

    rows = []
    for k in counts:
        path = work / f"{label}-{k}" / "model.onnx"
        path.parent.mkdir(parents=True)
        start = time.perf_counter()
        export_vae_decoder(backbone, k, path)
        row = {"backbone": label, "export": "unrolled", "latent_frames": k,
               **facts(path, time.perf_counter() - start)}
        rows.append(row)
        print(f"{label:5s} unrolled {k:3d} latent frames: {row['seconds']:7.1f} s, {row['bytes'] / 1e6:8.1f} MB, "
              f"{row['nodes']} nodes", flush=True)
    return rows


def measure_chunks(backbone, work: Path, label: str) -> list[dict]:
    from vov.serving.graphs import export_decoder_chunk

    rows = []
    for graph, first in (("first", True), ("next", False)):
        path = work / f"{label}-chunk-{graph}" / "model.onnx"
        path.parent.mkdir(parents=True)
        start = time.perf_counter()
        caches = export_decoder_chunk(backbone, first, path)
        row = {"backbone": label, "export": "chunk", "graph": graph, "caches": len(caches),
               **facts(path, time.perf_counter() - start)}
        rows.append(row)
        print(f"{label:5s} chunk {graph:5s} ({len(caches)} caches): {row['seconds']:7.1f} s, "
              f"{row['bytes'] / 1e6:8.1f} MB, {row['nodes']} nodes", flush=True)
    return rows


def key(row: dict) -> tuple:
    return row["backbone"], row.get("export", "unrolled"), row.get("latent_frames"), row.get("graph")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", default="1,2,3,5")
    parser.add_argument("--real", default="1,2,3")
    parser.add_argument("--chunks", default="tiny,real", help="backbones whose chunk graphs to export")
    parser.add_argument("--out", default="bench/results/latent_decoder_export.json")
    args = parser.parse_args()
    from vov import backbones
    from vov.backbones import testing

    chunks = [c for c in args.chunks.split(",") if c]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny = backbones.load("wan", str(testing.write_wan_folder(work / "Wan2.1-T2V-tiny-Diffusers", seed=0)),
                              device="cpu")
        rows += measure(tiny, [int(k) for k in args.tiny.split(",") if k], work, "tiny")
        if "tiny" in chunks:
            rows += measure_chunks(tiny, work, "tiny")
        if args.real or "real" in chunks:
            real = testing.random_wan("1.3B", device="cpu", vae=True)
            rows += measure(real, [int(k) for k in args.real.split(",") if k], work, "real")
            if "real" in chunks:
                rows += measure_chunks(real, work, "real")
    out = Path(args.out)
    measured = {key(r) for r in rows}
    kept = []
    if out.exists():
        kept = [{"export": "unrolled", **r} for r in json.loads(out.read_text()).get("rows", []) if key(r) not in measured]
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()}, "rows": sorted(kept + rows, key=lambda r: str(key(r)))}
    write_atomic(out, (json.dumps(result, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
