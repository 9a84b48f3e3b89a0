"""Measurements of the embedded backbone for MODEL_CARD.md, all on the held-out photos.

    python bench/embedded_eval.py autoencoder          # PSNR / MS-SSIM of the latent round trip
    python bench/embedded_eval.py speed                # fitting step, image decode, clip decode
    python bench/embedded_eval.py attention            # vov's attention savings against diffusers' own
    python bench/embedded_eval.py shapes               # step times of other transformer shapes
    python bench/embedded_eval.py grids                # samples and reconstructions as PNG
    python bench/embedded_eval.py rates [--photos N] [--steps S] [--bpp 0.03,0.05,0.1] [--targets attn,self-attn]
    python bench/embedded_eval.py curves [--photo NAME] [--steps S]   # quality vs fitting steps

Results are printed and written as JSON under bench/results/; pictures under docs/images/.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vov import codec

from vov.method import sampler
from vov.method.adapters import AdaptedDenoiser, AdapterSpec
from vov.backbones.embedded import FlowConfig, build, use_attention_savings
from vov.method.fit import FitConfig, fit
from vov.media import Picture
from vov.bench.metrics import ms_ssim, psnr
from vov.train import data

RESULTS = Path("bench/results")
IMAGES = Path("docs/images")


def held_out() -> list[tuple[str, np.ndarray]]:
    return [(p.name, data.kodak_like(data.load_rgb(p)).astype(np.float32) / 255.0) for p in data.held_out_photos()]


def as_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None, :, None]


def as_image(t: torch.Tensor) -> np.ndarray:
    return t[0, :, 0].clamp(0, 1).numpy().transpose(1, 2, 0)


def save(name: str, record) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {RESULTS / name}.json")


def autoencoder(backbone, _args) -> None:
    rows = []
    for name, img in held_out():
        with torch.no_grad():
            rec = as_image(backbone.decode(backbone.encode(as_tensor(img))))
        rows.append({"photo": name, "psnr": psnr(img, rec), "ms_ssim": ms_ssim(img, rec)})
        print(f"{name:40s} PSNR {rows[-1]['psnr']:.2f} dB  MS-SSIM {rows[-1]['ms_ssim']:.4f}")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "ms_ssim")}
    print(f"mean (per image, then averaged): PSNR {mean['psnr']:.2f} dB, MS-SSIM {mean['ms_ssim']:.4f}")
    save("autoencoder", {"rows": rows, "mean": mean})


def fitting_step(adapter: AdaptedDenoiser, latents: torch.Tensor):
    """One forward + backward of the flow-matching loss at a random t, as a fit takes it."""
    def step():
        t, eps = torch.rand(1), torch.randn(latents.shape)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = adapter((1 - t) * latents + t * eps, t)
        (pred.float() - (eps - latents)).pow(2).mean().backward()
    return step


def clip_step(adapter: AdaptedDenoiser, backbone):
    """One denoiser evaluation on a 17-frame 256x192 clip, as a decode takes it 50 times."""
    clip = torch.randn(1, *backbone.latent_shape(17, 192, 256))

    def step():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            adapter(clip, torch.rand(1))
    return step


def fitting_adapter(backbone) -> AdaptedDenoiser:
    adapter = AdaptedDenoiser(backbone, AdapterSpec(rank=4, d=16384))
    adapter.raw_theta().requires_grad_(True)
    return adapter


def alternating_medians(fns: dict, repeats: int) -> dict:
    """Median time of each function, run in turn (order rotating) so drifts of the machine hit all alike."""
    for fn in fns.values():
        fn()
    names = list(fns)
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def speed(backbone, _args) -> None:
    latents = backbone.encode(as_tensor(held_out()[0][1]))
    adapter = fitting_adapter(backbone)
    fit_step = alternating_medians({"fit": fitting_step(adapter, latents)}, 8)["fit"]
    record = {"threads": torch.get_num_threads(), "fit_step_768x512_s": fit_step}
    adapter.raw_theta().requires_grad_(False)
    adapter.set_theta(torch.randn(adapter.d) * 0.01)
    velocity = sampler.torch_velocity(adapter)

    def decode(frames, height, width):
        start = time.perf_counter()
        shape = (1, *backbone.latent_shape(frames, height, width))
        with torch.no_grad():
            backbone.decode(sampler.sample(velocity, shape, seed=0, steps=50))
        return time.perf_counter() - start

    record["decode_768x512_50_steps_s"] = decode(1, 512, 768)
    record["decode_17x256x192_50_steps_s"] = decode(17, 192, 256)
    for k, v in record.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    save("speed", record)


def attention(backbone, args) -> None:
    """The fitting step and a clip's denoiser step with vov's exact attention savings (one-token
    cross-attention, float32 rotary tables) and with diffusers' processor and float64 tables,
    alternating in one process; the medians and their ratio."""
    latents = backbone.encode(as_tensor(held_out()[0][1]))
    adapter = fitting_adapter(backbone)

    def using(on: bool, fn):
        def run():
            use_attention_savings(adapter.denoiser.transformer, on=on)
            fn()
        return run

    record = {}
    for name, fn in (("fit_step_768x512", fitting_step(adapter, latents)), ("clip_step_17x256x192", clip_step(adapter, backbone))):
        medians = alternating_medians({"diffusers": using(False, fn), "vov": using(True, fn)}, args.repeats)
        record[name] = {"diffusers_s": medians["diffusers"], "vov_s": medians["vov"],
                        "speedup": medians["diffusers"] / medians["vov"]}
        print(f"{name}: diffusers {medians['diffusers']:.3f} s, vov {medians['vov']:.3f} s, "
              f"{medians['diffusers'] / medians['vov']:.3f}x")
    save("attention", record)


# transformer shapes of width 192 compared by `shapes`; the last is the shipped one
SHAPES = {
    "4 heads x 48, 6 blocks": FlowConfig(heads=4, head_dim=48, layers=6),
    "2 heads x 96, 6 blocks": FlowConfig(heads=2, head_dim=96, layers=6),
    "4 heads x 48, 4 blocks": FlowConfig(heads=4, head_dim=48, layers=4),
    "2 heads x 96, 4 blocks": FlowConfig(heads=2, head_dim=96, layers=4),
}


def shapes(_backbone, args) -> None:
    """Fitting step and clip denoiser step of transformers of other shapes, randomly initialised
    (time does not depend on the weights), alternating in one process."""
    candidates = {name: build(name, config) for name, config in SHAPES.items()}
    adapters = {name: fitting_adapter(candidate) for name, candidate in candidates.items()}
    steps = {
        "fit_step_768x512": {name: fitting_step(adapters[name], torch.randn(1, *c.latent_shape(1, 512, 768)))
                             for name, c in candidates.items()},
        "clip_step_17x256x192": {name: clip_step(adapters[name], c) for name, c in candidates.items()},
    }
    record = {}
    for what, fns in steps.items():
        record[what] = alternating_medians(fns, args.repeats)
        for name, seconds in record[what].items():
            print(f"{what} {name}: {seconds:.3f} s")
    record["parameters"] = {name: sum(p.numel() for p in c.denoiser.parameters()) for name, c in candidates.items()}
    save("shapes", record)


def grids(backbone, _args) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    velocity = sampler.torch_velocity(backbone.denoiser)
    tiles = []
    for seed in range(8):
        shape = (1, *backbone.latent_shape(1, 256, 256))
        with torch.no_grad():
            tiles.append(as_image(backbone.decode(sampler.sample(velocity, shape, seed=seed, steps=50))))
    grid = np.concatenate([np.concatenate(tiles[:4], 1), np.concatenate(tiles[4:], 1)], 0)
    Image.fromarray((grid * 255 + 0.5).astype(np.uint8)).save(IMAGES / "samples.png")
    pairs = []
    for _, img in held_out()[:4]:
        crop = img[128:384, 256:512]
        with torch.no_grad():
            rec = as_image(backbone.decode(backbone.encode(as_tensor(crop))))
        pairs.append(np.concatenate([crop, rec], 0))
    Image.fromarray((np.concatenate(pairs, 1) * 255 + 0.5).astype(np.uint8)).save(IMAGES / "reconstructions.png")
    print(f"wrote {IMAGES / 'samples.png'} and {IMAGES / 'reconstructions.png'}")


def rates(backbone, args) -> None:
    """The codec at each target rate on the first held-out photos, once per adapter target preset."""
    targets = [float(x) for x in args.bpp.split(",")]
    presets = args.targets.split(",") if args.targets else [backbone.default_targets]
    rows = []
    for name, img in held_out()[: args.photos]:
        picture = Picture(img)
        for preset in presets:
            for target in targets:
                options = codec.EncodeOptions(backbone=backbone.name, adapter=AdapterSpec(rank=4, targets=preset),
                                              fit=FitConfig(steps=args.steps), target_bpp=target)
                report = codec.compress(picture, options, backbone=backbone)
                decoded = codec.decompress(report.data, backbone=backbone).pixels
                rows.append({"photo": name, "targets": preset, "target_bpp": target, "bpp": report.bpp, "d": report.d,
                             "psnr": psnr(img, decoded), "ms_ssim": ms_ssim(img, decoded), "encode_s": report.seconds})
                print(f"{name:36s} {preset:9s} target {target:.3f}: {report.bpp:.4f} bpp d={report.d} "
                      f"PSNR {rows[-1]['psnr']:.2f} MS-SSIM {rows[-1]['ms_ssim']:.4f} ({report.seconds:.0f} s)")
                save("rates", {"steps": args.steps, "rows": rows})
    for preset in presets:
        for target in targets:
            sel = [r for r in rows if r["target_bpp"] == target and r["targets"] == preset]
            print(f"{preset:9s} target {target}: mean bpp {np.mean([r['bpp'] for r in sel]):.4f}, PSNR "
                  f"{np.mean([r['psnr'] for r in sel]):.2f} dB, MS-SSIM {np.mean([r['ms_ssim'] for r in sel]):.4f}")


def curves(backbone, args) -> None:
    """PSNR of the decoded image vs fitting steps (no rate term, unquantised), per adapter config."""
    name, img = next((n, i) for n, i in held_out() if n == args.photo)
    latents = backbone.encode(as_tensor(img))
    # one vector of rank 4 over the default targets has 24576 LoRA entries to feed; d = 32768 takes rank 8
    configs = [("lora", r, 0) for r in (1, 2, 4)] + [("one-vector", 4, 8192), ("one-vector", 4, 16384), ("one-vector", 8, 32768)]
    checkpoints = set(int(x) for x in args.checkpoints.split(","))
    rows = []
    for kind, rank, d in configs:
        adapter = AdaptedDenoiser(backbone, AdapterSpec(kind, rank, d or 16384))
        snapshots = {}

        def keep(p, adapter=adapter, snapshots=snapshots):
            if p.step in checkpoints:
                snapshots[p.step] = adapter.raw_theta().detach().clone()

        fit(adapter, latents, 768 * 512, FitConfig(steps=max(checkpoints) + 1, rate_fraction=1e-9), on_progress=keep,
            channel_weights=backbone.distortion_weights(), decode_noise=sampler.initial_noise(tuple(latents.shape), 0))
        for step, theta in sorted(snapshots.items()):
            adapter.set_theta(theta)
            shape = (1, *backbone.latent_shape(1, 512, 768))
            with torch.no_grad():
                out = as_image(backbone.decode(sampler.sample(sampler.torch_velocity(adapter), shape, 0, 50)))
            rows.append({"kind": kind, "rank": rank, "d": adapter.d, "step": step, "psnr": psnr(img, out),
                         "ms_ssim": ms_ssim(img, out)})
            print(f"{kind:10s} r={rank} d={adapter.d:6d} step {step:5d}: PSNR {rows[-1]['psnr']:.2f} dB "
                  f"MS-SSIM {rows[-1]['ms_ssim']:.4f}")
        save("curves", {"photo": name, "rows": rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("autoencoder", "speed", "attention", "shapes", "grids", "rates", "curves"))
    parser.add_argument("--backbone", default="embedded")
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--photo", default="LadyBird")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--bpp", default="0.03,0.05,0.1")
    parser.add_argument("--targets", help="adapter target presets for `rates`, comma-separated (default: the backbone's)")
    parser.add_argument("--checkpoints", default="100,200,400,800")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    backbone = codec.get_backbone(args.backbone)
    globals()[args.what](backbone, args)


if __name__ == "__main__":
    main()
