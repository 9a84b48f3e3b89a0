"""Best-of-N decoding against plain files of the same size, on the held-out photos (embedded backbone).

    python bench/scaling_eval.py explore [--photos 2 | --names A,B] [--crop 256] [--bpp 0.1] [--fit-steps 400]
                                         [--path-share 1,0.5] [--configs 250:256:1:outcome+w,...]

The exploration that chose the defaults of vov.method.scaling.ScalingConfig: it searches outside the
codec and counts the indices with an allowance for the search fields. The table of K x N through the
codec itself, files and all, is bench/scaling_table.py.

For each photo (a centred crop of --crop pixels a side, or the whole 768x512 picture with --crop 0):

1. a plain file is fitted at --bpp (`vov.codec.compress`, the fit's share of decoder-path noise
   --path-share) and decoded as usual (50 Euler steps);
2. for each configuration K:N:cap:selection[:count[@start][:g_kind]], the encoder searches the K-step
   stochastic decode of that file toward the photo's latents (vov.method.scaling.search), the
   decoder replays it from the indices (checked identical), and the file grows by the packed
   indices plus an allowance for the search parameters (PARAMETER_BYTES);
3. a plain file of that total size (within 3%) is fitted (for each of --equal-shares, by default
   the codec's 1.0 and 0.5, keeping the better) and decoded: the honest comparison.

Reported per row: bpp, PSNR, MS-SSIM, encode and decode seconds of the scaled file and its
equal-size plain file, the gain in dB, the plain SDE decode (N = 1) and the K-step ODE decode of
the same file, the search's mean KL(p || q) per step (nats) against log N, the packed indices and
a chi-square test of their uniformity (could a model code them in fewer bits than log2 N?).
Results go to bench/results/scaling_<mode>.json, written after every row. Times are wall-clock on
the machine as it was shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path

# Two processes spinning in OpenMP barriers on 2 shared cores made one 256x256 model call take 0.1-2.8 s
# instead of 0.03 s here; passive waiting keeps the timings about what the search itself costs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vov import codec  # noqa: E402
from vov.media import Picture  # noqa: E402
from vov.method import sampler, scaling  # noqa: E402
from vov.method.fit import FitConfig  # noqa: E402
from vov.bench.metrics import ms_ssim, psnr  # noqa: E402
from vov.train import data  # noqa: E402

RESULTS = Path("bench/results")
# The search parameters a file must carry besides search_bits and the index blob (which the format
# already counts): noise-scale kind (u8) and cap (f32), stochastic steps (varint, <= 2 bytes), flow
# shift (f32) and the blob length's growth past one byte. An allowance, not a format decision.
PARAMETER_BYTES = 12
SIZE_TOLERANCE = 0.03
# The exploration's comparison (rounds 1-5 in bench/results/scaling_explore_r*.json ran subsets of
# these, with the selections of their day).
EXPLORE = ",".join(("250:256:1:gumbel", "250:256:1:greedy", "250:256:1:outcome", "250:256:1:outcome+w",
                    "250:256:0.5:outcome+w", "250:256:2:outcome+w", "250:256:1:outcome+w:124",
                    "50:256:1:outcome+w", "1000:16:1:outcome+w", "250:16:1:outcome+w"))


def parse_config(text: str) -> tuple[scaling.ScalingConfig, bool]:
    """K:N:cap:selection[:count[@start][:g_kind]] -> (config, weighted).

    count@start: `count` stochastic steps from step `start` (default: every step but the last);
    a selection with the suffix "+w" weighs the latent channels by the backbone's pixel weights.
    """
    parts = text.split(":")
    if not 4 <= len(parts) <= 6:
        raise SystemExit(f"bad configuration {text!r}: K:N:cap:selection[:count[@start][:g_kind]]")
    window = parts[4].split("@") if len(parts) > 4 and parts[4] else []
    stochastic = int(window[0]) if window and window[0] else None
    start = int(window[1]) if len(window) > 1 else 0
    g_kind = int(parts[5]) if len(parts) > 5 else 0
    selection, weighted = parts[3].removesuffix("+w"), parts[3].endswith("+w")
    return scaling.ScalingConfig(steps=int(parts[0]), candidates=int(parts[1]), g_cap=float(parts[2]),
                                 selection=selection, stochastic=stochastic, start=start, g_kind=g_kind), weighted


def label(c: scaling.ScalingConfig, weighted: bool = False) -> str:
    text = f"{c.steps}:{c.candidates}:{c.g_cap:g}:{c.selection}{'+w' if weighted else ''}"
    if c.stochastic is not None or c.start or c.g_kind:
        text += ":" + ("" if c.stochastic is None else str(c.stochastic)) + (f"@{c.start}" if c.start else "")
    return text + (f":{c.g_kind}" if c.g_kind else "")


def photos(count: int, crop: int, names: list[str] | None = None) -> list[tuple[str, np.ndarray]]:
    chosen = sorted(data.held_out_photos(), key=lambda p: data.HELD_OUT.index(p.name))
    chosen = [p for p in chosen if p.name in names] if names else chosen[:count]
    if not chosen:
        raise SystemExit("no held-out photo is installed: run scripts/setup.sh")
    out = []
    for p in chosen:
        img = data.kodak_like(data.load_rgb(p)).astype(np.float32) / 255.0
        if crop:
            y, x = (img.shape[0] - crop) // 2, (img.shape[1] - crop) // 2
            img = img[y: y + crop, x: x + crop]
        out.append((p.name, np.ascontiguousarray(img)))
    return out


def encode_options(bpp: float, fit_steps: int, path_share: float) -> codec.EncodeOptions:
    """Plain-file options at a whole-file rate, whichever of the codec's two rate APIs is present."""
    fit = FitConfig(steps=fit_steps, path_share=path_share)
    if "target_bpp" in {f.name for f in dataclasses.fields(codec.EncodeOptions)}:
        return codec.EncodeOptions(fit=fit, target_bpp=bpp)
    return codec.EncodeOptions(fit=dataclasses.replace(fit, target_bpp=bpp))


def quality(reference: np.ndarray, pixels: np.ndarray) -> dict:
    return {"psnr": round(psnr(reference, pixels), 3), "ms_ssim": round(ms_ssim(reference, pixels), 5)}


def to_pixels(backbone, latents: torch.Tensor, height: int, width: int) -> np.ndarray:
    with torch.no_grad():
        pixels = backbone.decode(latents)[0, :, 0].clamp(0, 1).cpu().numpy().transpose(1, 2, 0)
    return np.ascontiguousarray(pixels[:height, :width])


def plain_file(backbone, img: np.ndarray, bpp: float, fit_steps: int, path_share: float) -> dict:
    picture = Picture(img)
    report = codec.compress(picture, encode_options(bpp, fit_steps, path_share), backbone=backbone)
    start = time.perf_counter()
    decoded = codec.decompress(report.data, backbone=backbone)
    decode_s = time.perf_counter() - start
    pixels = img.shape[0] * img.shape[1]
    return {"data": report.data, "bytes": len(report.data), "bpp": round(8 * len(report.data) / pixels, 5),
            **quality(img, decoded.pixels), "encode_s": round(report.seconds, 2), "decode_s": round(decode_s, 2)}


def equal_size_plain(backbone, img: np.ndarray, size: int, fit_steps: int, path_share: float) -> dict:
    """A plain file within SIZE_TOLERANCE of `size` bytes."""
    pixels = img.shape[0] * img.shape[1]
    target = 8 * size / pixels
    best = None
    for _ in range(4):
        row = plain_file(backbone, img, target, fit_steps, path_share)
        row.pop("data")
        gap = row["bytes"] / size - 1
        if best is None or abs(gap) < abs(best["size_gap"]):
            best = {**row, "path_share": path_share, "size_gap": round(gap, 4)}
        if abs(gap) <= SIZE_TOLERANCE:
            break
        target *= size / row["bytes"]
    return best


def best_equal_size_plain(backbone, img: np.ndarray, size: int, fit_steps: int, shares: list[float]) -> dict:
    """The best (PSNR) of the equal-size plain files fitted with each of `shares`."""
    rows = [equal_size_plain(backbone, img, size, fit_steps, share) for share in shares]
    best = max(rows, key=lambda r: r["psnr"])
    return {**best, "others": [r for r in rows if r is not best]} if len(rows) > 1 else best


def uniformity(indices: np.ndarray, n: int) -> dict:
    """Chi-square of the indices' top bits (at most 16 bins) against uniform: are they compressible?"""
    bins = min(n, 16)
    top = indices.astype(np.int64) * bins // n
    counts = np.bincount(top, minlength=bins)
    expected = len(indices) / bins
    chi2 = float(((counts - expected) ** 2).sum() / expected)
    row = {"bins": bins, "count": int(len(indices)), "chi2": round(chi2, 2)}
    try:
        from scipy.stats import chi2 as distribution

        row["p"] = round(float(distribution.sf(chi2, bins - 1)), 4)
    except ImportError:
        pass
    return row


def run(args) -> None:
    torch.set_num_threads(args.threads)
    backbone = codec.get_backbone("embedded")
    configs = [parse_config(c) for c in args.configs.split(",") if c]
    shares = [float(s) for s in args.path_share.split(",")]
    equal_shares = [float(s) for s in args.equal_shares.split(",")]
    out = Path(args.out or RESULTS / f"scaling_{args.mode}.json")
    record = {"mode": args.mode, "backbone": "embedded", "crop": args.crop, "bpp": args.bpp,
              "fit_steps": args.fit_steps, "equal_shares": equal_shares, "threads": args.threads,
              "parameter_bytes": PARAMETER_BYTES, "plain": [], "rows": []}
    equal_cache: dict[tuple[str, int], dict] = {}

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1) + "\n")

    for name, img in photos(args.photos, args.crop, args.names.split(",") if args.names else None):
        h, w = img.shape[:2]
        pixels = h * w
        x0 = codec.latents_of(backbone, Picture(img))
        shape = tuple(x0.shape)
        for share in shares:
            base = plain_file(backbone, img, args.bpp, args.fit_steps, share)
            data_bytes = base.pop("data")
            record["plain"].append({"photo": name, "path_share": share, **base})
            print(f"{name} share {share}: plain {base['bpp']:.4f} bpp {base['psnr']:.2f} dB", flush=True)
            velocity = sampler.torch_velocity(codec.adapter_for(codec.parse(data_bytes), backbone))
            sde_cache: dict[tuple, dict] = {}
            ode_cache: dict[int, dict] = {}
            for config, weighted in configs:
                key = (config.steps, config.g_cap, config.g_kind, config.scaled_steps, config.start)
                if key not in sde_cache:
                    start = time.perf_counter()
                    sde = scaling.sample_sde(velocity, shape, 0, config)
                    sde_cache[key] = {**quality(img, to_pixels(backbone, sde, h, w)),
                                      "decode_s": round(time.perf_counter() - start, 2)}
                if config.steps not in ode_cache:  # the same file decoded as usual, with K steps
                    start = time.perf_counter()
                    ode = sampler.sample(velocity, shape, 0, config.steps)
                    ode_cache[config.steps] = {**quality(img, to_pixels(backbone, ode, h, w)),
                                               "decode_s": round(time.perf_counter() - start, 2)}
                records: list[scaling.StepRecord] = []
                start = time.perf_counter()
                weights = backbone.distortion_weights() if weighted else None
                indices, searched = scaling.search(velocity, x0, shape, 0, config, records=records, weights=weights)
                search_s = time.perf_counter() - start
                coded = scaling.encode_indices(indices, config.candidates)
                start = time.perf_counter()
                replayed = scaling.replay(velocity, shape, 0, config, scaling.decode_indices(coded, config.scaled_steps,
                                                                                             config.candidates))
                scaled_pixels = to_pixels(backbone, replayed, h, w)
                decode_s = time.perf_counter() - start
                if not torch.equal(replayed, searched):
                    raise SystemExit(f"{label(config, weighted)}: the replay differs from the search")
                size = base["bytes"] + len(coded) + PARAMETER_BYTES
                if (name, size) not in equal_cache:
                    equal_cache[(name, size)] = best_equal_size_plain(backbone, img, size, args.fit_steps, equal_shares)
                equal = equal_cache[(name, size)]
                scaled = {"bytes": size, "index_bytes": len(coded), "bpp": round(8 * size / pixels, 5),
                          **quality(img, scaled_pixels), "encode_s": round(base["encode_s"] + search_s, 2),
                          "search_s": round(search_s, 2), "decode_s": round(decode_s, 2)}
                kl = np.array([r.kl_nats for r in records]) if records else np.zeros(1)
                row = {"photo": name, "path_share": share, "config": label(config, weighted), "K": config.steps,
                       "N": config.candidates, "g_cap": config.g_cap, "g_kind": config.g_kind,
                       "selection": config.selection, "weighted": weighted, "stochastic": config.scaled_steps,
                       "start": config.start,
                       "index_bits": config.index_bits, "scaled": scaled, "plain_equal": equal,
                       "gain_db": round(scaled["psnr"] - equal["psnr"], 3),
                       "gain_over_base_db": round(scaled["psnr"] - base["psnr"], 3),
                       "sde_n1": sde_cache[key], "ode_k": ode_cache[config.steps],
                       "kl_nats_mean": round(float(kl.mean()), 2), "kl_nats_max": round(float(kl.max()), 2),
                       "log_n_nats": round(math.log(config.candidates), 3),
                       "index_uniformity": uniformity(indices, config.candidates) if config.candidates > 1 else None,
                       "indices_hex": coded.hex()}
                record["rows"].append(row)
                print(f"  {label(config, weighted):>22} {scaled['bpp']:.4f} bpp {scaled['psnr']:.2f} dB | plain "
                      f"{equal['bpp']:.4f} bpp {equal['psnr']:.2f} dB | gain {row['gain_db']:+.2f} | N=1 "
                      f"{row['sde_n1']['psnr']:.2f} dB | search {search_s:.0f} s decode {decode_s:.1f} s", flush=True)
                save()
    save()
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("explore",))
    parser.add_argument("--photos", type=int)
    parser.add_argument("--names", help="comma-separated held-out photo names (instead of the first --photos)")
    parser.add_argument("--crop", type=int, help="side of the centred crop; 0 for the whole 768x512 picture")
    parser.add_argument("--bpp", type=float, default=0.1, help="rate of the plain file that the search decodes")
    parser.add_argument("--fit-steps", type=int)
    parser.add_argument("--path-share", default="0.5", help="comma-separated shares of decoder-path noise in the fit")
    parser.add_argument("--equal-shares", default="1.0,0.5",
                        help="path shares of the equal-size plain files; the best of them is the comparison")
    parser.add_argument("--configs", help="comma-separated K:N:cap:selection[:count[@start][:g_kind]]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out")
    args = parser.parse_args()
    args.photos = args.photos or 1
    args.crop = 256 if args.crop is None else args.crop
    args.fit_steps = args.fit_steps or 400
    args.configs = args.configs or EXPLORE
    run(args)


if __name__ == "__main__":
    main()
