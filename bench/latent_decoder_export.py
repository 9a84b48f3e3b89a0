"""How the export of Wan's latent decoder grows with the latent-frame count it bakes in.

    python bench/latent_decoder_export.py [--tiny 1,2,3,5] [--real 1,2,3] [--out bench/results/latent_decoder_export.json]

Wan's VAE decodes a clip one latent frame at a time with a causal cache, and the exporter traces that
loop into one graph per latent-frame count (docs/services.md, "Exporting"), so each count is an export
of its own. Measured here, one export at a time in this process, with the exporter the services use
(vov.serving.graphs.export_vae_decoder): the wall time, the graph's file size and its node count, for
- `tiny`: the latent decoder of a tiny Wan2.1 folder in the real layout (vov.backbones.testing),
- `real`: Wan2.1's own VAE (127M parameters, its real config) with random weights.
A clip of 81 frames is 21 latent frames; the counts measured are fewer, and the table shows how the
time grows towards it.
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


def measure(backbone, counts: list[int], work: Path, label: str) -> list[dict]:
    import onnx

    from vov.serving.graphs import export_vae_decoder

    rows = []
    for k in counts:
        path = work / f"{label}-{k}" / "model.onnx"
        path.parent.mkdir(parents=True)
        start = time.perf_counter()
        export_vae_decoder(backbone, k, path)
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in path.parent.iterdir())
        nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
        rows.append({"backbone": label, "latent_frames": k, "seconds": round(seconds, 1), "bytes": size, "nodes": nodes})
        print(f"{label:5s} {k:3d} latent frames: {seconds:7.1f} s, {size / 1e6:8.1f} MB, {nodes} nodes", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", default="1,2,3,5")
    parser.add_argument("--real", default="1,2,3")
    parser.add_argument("--out", default="bench/results/latent_decoder_export.json")
    args = parser.parse_args()
    from vov import backbones
    from vov.backbones import testing

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny = backbones.load("wan", str(testing.write_wan_folder(work / "Wan2.1-T2V-tiny-Diffusers", seed=0)),
                              device="cpu")
        rows += measure(tiny, [int(k) for k in args.tiny.split(",") if k], work, "tiny")
        if args.real:
            real = testing.random_wan("1.3B", device="cpu", vae=True)
            rows += measure(real, [int(k) for k in args.real.split(",") if k], work, "real")
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()}, "rows": rows}
    write_atomic(Path(args.out), (json.dumps(result, indent=1) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
