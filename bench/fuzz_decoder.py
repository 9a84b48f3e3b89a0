"""Fuzz campaign: hostile .vov files through the decoder's whole path up to sampling.

Each case is a file derived from valid seeds (files of the seeded `tiny` backbone: images of
several sizes, one-vector and plain LoRA, an all-zero vector) by one of:
- `flip`: 1 to 8 random bit flips (the checksum then usually refuses it);
- `truncate`: the file cut at a random length;
- `field`: one header field re-encoded with a hostile value (boundaries, huge varints, random bytes,
  random text), the rest kept, the checksum fixed so the parser's own checks are reached;
- `payload`: random bytes written over the payload or its length, checksum fixed;
- `splice`: the head of one seed and the tail of another, checksum fixed or not.
The decoder path is what `vov decompress` runs before its first sampler step: parse the header and
check it against the limits (vov.codec.parse), find the backbone, rebuild the adapter and entropy-
decode its vector (vov.codec.adapter_for), and draw the initial noise of the declared latent.

A case passes if it decodes or ends in a vov error (VovError: BitstreamError, LimitExceeded,
BackboneMismatch, ...). Anything else is an untyped failure. Each case is timed, and the worker's
peak memory is read after every case (ru_maxrss only grows, so a jump names the case that made it).

    python bench/fuzz_decoder.py --cases 100000 --workers 2 --out bench/results/fuzz.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import struct
import sys
import time
import traceback
import zlib
from concurrent.futures import ProcessPoolExecutor

KINDS = ("flip", "truncate", "field", "payload", "splice")
INTERESTING_INTS = (0, 1, 2, 3, 7, 8, 15, 16, 17, 63, 64, 65, 127, 128, 255, 256, 1023, 1024, 4095, 4096, 10000,
                    10001, 16384, 16385, 65535, 65536, (1 << 20), (1 << 22), (1 << 22) + 1, (1 << 31), (1 << 32) - 1,
                    (1 << 32), (1 << 35) - 1)
INTERESTING_FLOATS = (0.0, -0.0, 1e-45, 1e-38, 1e-8, 0.5, 1.0, 256.0, 1e10, 3.4e38, float("inf"), float("-inf"),
                      float("nan"), -1.0)


def seeds() -> list[bytes]:
    """Valid files of the tiny backbone, of several kinds and sizes."""
    import numpy as np

    from vov import codec
    from vov.backbones import load
    from vov.media import Picture
    from vov.method.adapters import AdapterSpec
    from vov.method.fit import FitConfig

    backbone = load("tiny")
    out = []
    for i, (w, h, kind, rank, d, target) in enumerate([(56, 40, "one-vector", 2, 512, 2.0), (64, 48, "one-vector", 4, 256, 4.0),
                                                        (33, 17, "lora", 1, 0, 8.0), (80, 64, "one-vector", 2, 128, None)]):
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        pixels = np.stack([x / w, y / h, 0.5 + 0.4 * np.sin(x / 5 + i)], -1).astype(np.float32)
        options = codec.EncodeOptions(backbone="tiny", adapter=AdapterSpec(kind, rank, d or 16, seed=i),
                                      fit=FitConfig(steps=6, seed=i, lam=1e4 if target is None else 0.02),
                                      target_bpp=target, sampler_steps=3 + i, noise_seed=i, auto_d=False)
        out.append(codec.compress(Picture(pixels), options, backbone=backbone).data)
    return out


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def junk(rng: random.Random, original: bytes) -> bytes:
    """Bytes that ignore the field's type: random, over-long varints, lying lengths."""
    from vov.format.bitstream import varint

    choice = rng.randrange(3)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(max(1, len(original))))
    if choice == 1:
        return b"\xff" * rng.choice((1, 5, 6, 9))
    n = rng.choice((0, 1, 64, 65, 512, 513, 4096, 4097, 1 << 30))
    return varint(n) + bytes(rng.randrange(256) for _ in range(min(n, 600)))


TEXTS = ["attn", "self-attn", "attn+ffn", "", ".*", "(.*.*)*X", "a{99999999999}", "transformer.blocks.0.attn1.to_q",
         "transformer.blocks.0.attn1.to_q,transformer.blocks.0.attn1.to_q", ",", "x" * 600, "tiny", "embedded", "wan"]


def hostile_field(rng: random.Random, name: str, write, original: bytes) -> bytes:
    """The field re-encoded with an extreme value of its own type (or, one time in five, junk)."""
    import zlib as z

    from vov.format import bitstream

    if rng.random() < 0.2:
        return junk(rng, original)
    if write is bitstream.F32[0]:
        return write(rng.choice(INTERESTING_FLOATS))
    if write is bitstream.U8[0]:
        return write(rng.choice([v for v in INTERESTING_INTS if v < 256]))
    if write is bitstream.U16[0]:
        return write(rng.choice([v for v in INTERESTING_INTS if v < 65536]))
    if write is bitstream.VARINT[0]:
        return write(rng.choice(INTERESTING_INTS))
    if write is bitstream.HASH[0]:
        return bytes(rng.randrange(256) for _ in range(8))
    if name == "caption_z":
        text = rng.choice(["", "a cat", "x" * 20000])
        return bitstream.varint(len(z.compress(text.encode()))) + z.compress(text.encode()) if text else b"\0"
    if name in ("prior_weights", "prior_scale_codes"):
        n = rng.choice((0, 1, 3, 8, 9, 255))
        return bytes([n]) + bytes(rng.randrange(256) for _ in range(min(n, 255)))
    text = rng.choice(TEXTS).encode()
    return bitstream.varint(len(text)) + text


def mutate(rng: random.Random, corpus: list[bytes]) -> tuple[str, bytes]:
    from vov.format import bitstream

    kind = rng.choice(KINDS)
    base = rng.choice(corpus)
    if kind == "flip":
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        return kind, bytes(data)
    if kind == "truncate":
        return kind, base[: rng.randrange(len(base))]
    if kind == "splice":
        other = rng.choice(corpus)
        cut_a, cut_b = rng.randrange(len(base)), rng.randrange(len(other))
        body = base[:cut_a] + other[cut_b:-4]
        return kind, with_crc(body) if rng.random() < 0.8 else body + other[-4:]
    parts = bitstream.dump_parts(bitstream.load(base))  # (part, bytes) in order: magic+version, fields, sections, crc
    pieces = [p for _, p in parts[:-1]]
    if kind == "field":
        for _ in range(1 if rng.random() < 0.8 else 2):  # one header field, sometimes two
            i = rng.randrange(len(bitstream.HEADER_FIELDS))
            name, (write, _), _, _ = bitstream.HEADER_FIELDS[i]
            pieces[1 + i] = hostile_field(rng, name, write, pieces[1 + i])
    else:  # payload
        i = len(pieces) - 2
        payload = bytearray(pieces[i])
        if rng.random() < 0.5 and len(payload) > 1:
            for _ in range(rng.randint(1, 16)):
                payload[rng.randrange(1, len(payload))] = rng.randrange(256)
        else:
            payload = bytearray(junk(rng, bytes(payload)))
        pieces[i] = bytes(payload)
    return kind, with_crc(b"".join(pieces))


def decode_until_sampling(data: bytes, limits) -> str:
    """The decoder's path before its first sampler step; returns "ok" or the error's class name."""
    from vov import codec
    from vov.errors import VovError
    from vov.method import sampler

    try:
        f = codec.parse(data, limits)
        backbone = codec.backbone_for(f)
        codec.adapter_for(f, backbone)
        m = backbone.pixel_multiple
        shape = (1, *backbone.latent_shape(f.frames, -(-f.height // m) * m, -(-f.width // m) * m))
        sampler.initial_noise(shape, f.noise_seed)
        return "ok"
    except VovError as e:
        return type(e).__name__


def run_chunk(args: tuple[int, int, float]) -> dict:
    """Run `count` cases from `seed` in this worker process; the outcome counts and the worst cases."""
    import torch

    from vov.limits import Limits

    seed, count, slow = args
    torch.set_num_threads(1)
    corpus = seeds()
    rng = random.Random(seed)
    limits = Limits()
    decode_until_sampling(corpus[0], limits)  # warm the backbone's cache before any case is timed
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    untyped, slow_cases = [], []
    worst_seconds, worst_rss = 0.0, base_rss
    for _ in range(count):
        kind, data = mutate(rng, corpus)
        by_kind[kind] = by_kind.get(kind, 0) + 1
        start = time.perf_counter()
        try:
            outcome = decode_until_sampling(data, limits)
        except Exception as e:  # an untyped failure: the campaign's finding
            outcome = "UNTYPED"
            untyped.append({"kind": kind, "error": repr(e)[:300], "file": data.hex()[:4000],
                            "trace": traceback.format_exc()[-1500:]})
        seconds = time.perf_counter() - start
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        worst_seconds = max(worst_seconds, seconds)
        if seconds > slow:
            slow_cases.append({"kind": kind, "seconds": round(seconds, 3), "outcome": outcome, "file": data.hex()[:4000]})
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        worst_rss = max(worst_rss, rss)
    return {"cases": count, "outcomes": outcomes, "kinds": by_kind, "untyped": untyped, "slow": slow_cases,
            "worst_seconds": worst_seconds, "peak_rss_kib": worst_rss, "base_rss_kib": base_rss}


def campaign(cases: int, seed: int = 0, workers: int = 2, slow: float = 2.0, chunk: int = 2500) -> dict:
    jobs = [(seed * 1_000_003 + i, min(chunk, cases - i * chunk), slow) for i in range(-(-cases // chunk))]
    start = time.perf_counter()
    if workers <= 1:
        results = [run_chunk(job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(run_chunk, jobs))
    total = {"cases": 0, "outcomes": {}, "kinds": {}, "untyped": [], "slow": [], "worst_seconds": 0.0,
             "peak_rss_growth_mib": 0.0, "peak_rss_mib": 0.0}
    for r in results:
        total["cases"] += r["cases"]
        for key in ("outcomes", "kinds"):
            for k, v in r[key].items():
                total[key][k] = total[key].get(k, 0) + v
        total["untyped"] += r["untyped"]
        total["slow"] += r["slow"]
        total["worst_seconds"] = max(total["worst_seconds"], r["worst_seconds"])
        total["peak_rss_mib"] = max(total["peak_rss_mib"], r["peak_rss_kib"] / 1024)
        total["peak_rss_growth_mib"] = max(total["peak_rss_growth_mib"], (r["peak_rss_kib"] - r["base_rss_kib"]) / 1024)
    total["seconds"] = time.perf_counter() - start
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slow", type=float, default=2.0, help="seconds over which a case counts as slow")
    parser.add_argument("--out", help="write the campaign's JSON here")
    args = parser.parse_args(argv)
    result = campaign(args.cases, args.seed, args.workers, args.slow)
    summary = {k: result[k] for k in ("cases", "outcomes", "kinds", "worst_seconds", "peak_rss_mib",
                                      "peak_rss_growth_mib", "seconds")}
    summary.update(untyped=len(result["untyped"]), slow=len(result["slow"]))
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({**summary, "untyped_cases": result["untyped"][:20], "slow_cases": result["slow"][:20],
                       "command": "python bench/fuzz_decoder.py " + " ".join(argv or sys.argv[1:])}, f, indent=1)
    return 1 if result["untyped"] or result["slow"] else 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    sys.exit(main())
