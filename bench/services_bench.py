"""Decoder serving benchmark: one run, every figure a ratio against a baseline of the same run.

    python bench/services_bench.py [--backbone embedded] [--size 768x512] [--sampler-steps 50]
                                   [--clients 1,4,8] [--repeats 3] [--out bench/results/services.json]

Latency of one decode, on the same files:
  - torch eager in this process (bf16 autocast, what `vov decompress` runs),
  - the exported graphs with ONNX Runtime in this process (fp32),
  - the decoder service with ONNX Runtime in its process (gRPC, no Triton),
  - the decoder service with Triton (gRPC to the decoder, gRPC to Triton, ONNX Runtime in Triton).
Throughput of the decoder service with Triton at 1, 4 and 8 concurrent clients (each client decodes
its own file), and the same with the in-process engine, so that Triton's batching is compared with
no batching on the same machine.

The files are real .vov files of one photo made with a short fit (the fit's length changes what the
picture looks like, not what decoding costs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from vov import codec
from vov.backbones import DEFAULT_BACKBONE

from vov.serving import client
from vov.method.adapters import AdapterSpec
from vov.serving.engines.onnx import OrtEngine
from vov.serving.repository import default_repository, export_repository, is_current
from vov.method.fit import FitConfig
from vov.media import Picture
from vov.serving.serve import Stack


def test_picture(width: int, height: int) -> Picture:
    try:
        from vov.train import data

        photo = next(p for p in data.held_out_photos() if p.name == "LadyBird")
        return Picture(data.kodak_like(data.load_rgb(photo), width, height).astype(np.float32) / 255.0)
    except StopIteration:  # the photo packages are missing: a synthetic picture costs the same to decode
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        return Picture(np.stack([x / width, y / height, 0.5 + 0.3 * np.sin(x / 9)], -1).astype(np.float32))


def make_files(backbone, picture: Picture, count: int, sampler_steps: int) -> list[bytes]:
    files = []
    for seed in range(count):
        options = codec.EncodeOptions(backbone=backbone.name, adapter=AdapterSpec(rank=4, d=8192, seed=seed),
                                      fit=FitConfig(steps=20, lam=0.02, seed=seed), sampler_steps=sampler_steps,
                                      noise_seed=seed, auto_d=False)
        files.append(codec.compress(picture, options, backbone=backbone).data)
    return files


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def throughput(address: str, files: list[bytes], clients: int, rounds: int = 1) -> float:
    """Decodes per second with `clients` concurrent callers, each decoding `rounds` files."""
    work = [files[i % len(files)] for i in range(clients * rounds)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda f: client.remote_decompress_png(address, f), work))
    return len(work) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--size", default="768x512", help="WIDTHxHEIGHT of the decoded image")
    parser.add_argument("--sampler-steps", type=int, default=50)
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--repeats", type=int, default=3, help="decodes per latency figure (median)")
    parser.add_argument("--out", default="bench/results/services.json")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    clients = [int(c) for c in args.clients.split(",")]

    backbone = codec.get_backbone(args.backbone)
    repository = default_repository(backbone.name)
    if not is_current(repository, backbone, 8):
        export_repository(backbone, repository, 8, log=lambda m: print(f"export: {m}"))
    files = make_files(backbone, test_picture(width, height), max(clients), args.sampler_steps)
    record = {"backbone": backbone.name, "size": [width, height], "sampler_steps": args.sampler_steps,
              "cores": os.cpu_count(), "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    print(f"{backbone.name}, {width}x{height}, {args.sampler_steps} steps, {os.cpu_count()} cores")

    engine = OrtEngine(repository)
    latency = {
        "torch_eager_bf16": median_seconds(lambda: codec.decompress(files[0], backbone=backbone), args.repeats),
        "onnxruntime_in_process": median_seconds(lambda: codec.decompress(files[0], engine=engine, backbone=backbone),
                                                 args.repeats),
    }
    work = Path(tempfile.mkdtemp(prefix="vov-bench-"))
    rates = {}
    for name, with_triton in (("service_onnxruntime", False), ("service_triton", True)):
        with Stack(backbone.name, repository, work / name, with_encoder=False, with_triton=with_triton) as stack:
            client.remote_decompress_png(stack.decoder_address, files[0])  # warm up both processes
            latency[name] = median_seconds(lambda: client.remote_decompress_png(stack.decoder_address, files[0]),
                                           args.repeats)
            rates[name] = {str(c): throughput(stack.decoder_address, files, c) for c in clients}
    record["latency_s"] = latency
    record["throughput_decodes_per_s"] = rates
    base = latency["onnxruntime_in_process"]
    record["latency_ratio_vs_onnxruntime_in_process"] = {k: v / base for k, v in latency.items()}
    record["throughput_ratio_vs_1_client"] = {
        name: {c: r / per[str(clients[0])] for c, r in per.items()} for name, per in rates.items()}
    record["triton_vs_in_process_service_throughput"] = {
        c: rates["service_triton"][c] / rates["service_onnxruntime"][c] for c in rates["service_triton"]}

    for name, seconds in latency.items():
        print(f"latency {name:26s} {seconds:7.2f} s  ({seconds / base:.2f}x in-process ONNX Runtime)")
    for name, per in rates.items():
        print(f"throughput {name:22s} " + ", ".join(
            f"{c} clients {r:.3f}/s ({r / per[str(clients[0])]:.2f}x)" for c, r in per.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
