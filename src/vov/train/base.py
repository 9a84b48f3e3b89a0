"""`vov train-base`: make the embedded backbone's weights from the allowed photos.

1. The latent space: PCA of 8x8 RGB patches of the training photos (closed form).
2. The denoiser: flow matching (rectified flow, logit-normal t) on random crops and on synthetic
   camera moves, AdamW, bf16 autocast, an exponential moving average of the weights kept for shipping.
Checkpoints go to the run folder every few hundred steps (`checkpoint.safetensors`: tensors and a
JSON header, never a pickle, vov.checkpoints); running the same command again resumes.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vov import checkpoints
from vov.backbones.embedded import FlowConfig, FlowDenoiser, LatentFlowBackbone
from vov.backbones.patch_autoencoder import PatchAutoencoder, sample_patches
from vov.errors import UsageError
from vov.train import data

CHECKPOINT_KIND = "training checkpoint"


def flow_matching_loss(denoiser, latents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    b = latents.shape[0]
    t = torch.sigmoid(torch.randn(b, generator=generator))
    eps = torch.randn(latents.shape, generator=generator)
    tt = t.view(b, 1, 1, 1, 1)
    noisy = (1 - tt) * latents + tt * eps
    with torch.autocast(latents.device.type, dtype=torch.bfloat16):
        pred = denoiser(noisy, t)
    return (pred.float() - (eps - latents)).pow(2).mean()


def fit_autoencoder(images: list[np.ndarray], channels: int, seed: int = 0) -> PatchAutoencoder:
    ae = PatchAutoencoder(channels)
    ae.fit(sample_patches(images, 400_000, np.random.default_rng(seed)))
    return ae


def _lr(step: int, peak: float, warmup: int, total: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(run_dir: str | Path, steps: int = 12000, config: FlowConfig = FlowConfig(), seed: int = 0,
          out: str | Path | None = None, batch: int = 8, crop: int = 256, clip_every: int = 4,
          peak_lr: float = 4e-4, checkpoint_every: int = 250, photos: list[data.Photo] | None = None) -> Path:
    """Train (or resume) the embedded backbone in `run_dir`; returns the weights file.

    `photos` defaults to every allowed training photo (the Debian packages are installed if missing).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if photos is None:
        data.ensure_debian_photos()
        photos = data.training_photos()
    originals = [data.load_rgb(p) for p in tqdm(photos, desc="loading photos", leave=False)]
    images = [scaled for img in originals for scaled in data.pyramid(img)]
    print(f"{len(photos)} training photos, {len(images)} scaled copies")

    torch.manual_seed(seed)
    ckpt_path = run_dir / "checkpoint.safetensors"
    autoencoder = PatchAutoencoder(config.latent_channels)
    denoiser = FlowDenoiser(config)
    ema = copy.deepcopy(denoiser).requires_grad_(False)
    optimiser = torch.optim.AdamW(denoiser.parameters(), lr=peak_lr, betas=(0.9, 0.99), weight_decay=0.01)
    sampler = data.CropSampler(images, seed)
    generator = torch.Generator().manual_seed(seed)
    start = 0

    def state_tensors() -> dict[str, torch.Tensor]:
        return {**{f"autoencoder.{k}": v for k, v in autoencoder.state_dict().items()},
                **{f"denoiser.{k}": v for k, v in denoiser.state_dict().items()},
                **{f"ema.{k}": v for k, v in ema.state_dict().items()},
                "generator": generator.get_state(), **checkpoints.optimiser_tensors(optimiser)}

    if ckpt_path.exists():
        saved, meta = checkpoints.load(ckpt_path, CHECKPOINT_KIND, {**state_tensors(), **checkpoints.adam_shapes(optimiser)},
                                       optional_prefixes=("optimiser.",))
        try:
            for prefix, module in (("autoencoder.", autoencoder), ("denoiser.", denoiser), ("ema.", ema)):
                module.load_state_dict({k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)})
            checkpoints.restore_optimiser(optimiser, saved)
            generator.set_state(saved["generator"])
            sampler.rng.bit_generator.state = meta["sampler_rng"]
            start = int(meta["step"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise UsageError(f"{ckpt_path} is not a usable {CHECKPOINT_KIND} ({e}); delete it to start afresh") from None
        print(f"resuming from step {start}")
    else:
        autoencoder = fit_autoencoder(images, config.latent_channels, seed)

    def save_checkpoint(step: int) -> None:
        checkpoints.save(ckpt_path, CHECKPOINT_KIND, state_tensors(),
                         {"step": step, "sampler_rng": sampler.rng.bit_generator.state})

    log = open(run_dir / "train.log", "a")
    denoiser.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="training denoiser")
    smooth = None
    t0 = time.time()
    for step in bar:
        for group in optimiser.param_groups:
            group["lr"] = _lr(step, peak_lr, 300, steps)
        if clip_every and step % clip_every == clip_every - 1:
            pixels = sampler.clips(2, 9, 128, 128)
        else:
            pixels = sampler.crops(batch, crop)
        with torch.no_grad():
            latents = autoencoder.encode(torch.from_numpy(pixels))
        loss = flow_matching_loss(denoiser, latents, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        optimiser.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), denoiser.parameters()):
                e.lerp_(p, 1 - decay)
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        bar.set_postfix(loss=f"{smooth:.4f}")
        if (step + 1) % 50 == 0:
            log.write(f"{step + 1} {smooth:.5f} {time.time() - t0:.1f}\n")
            log.flush()
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            save_checkpoint(step + 1)

    backbone = LatentFlowBackbone("embedded", config, autoencoder, ema)
    out = Path(out) if out else run_dir / "embedded.safetensors"
    backbone.save(out)
    print(f"wrote {out}")
    return out
