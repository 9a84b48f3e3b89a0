"""`vov train-base`: train the embedded backbone's denoiser on a photo pack.

The latent space is the shipped tiny autoencoder (TAEF2, pretrained, frozen); only the denoiser
learns: flow matching (rectified flow, logit-normal t) on random latent crops of several sizes
(from 256x256 pixels to whole 768x512 scenes) and on synthetic camera moves, AdamW, bf16
autocast, gradient clipping, an exponential moving average of the weights kept for shipping.

A run lives in one folder: `checkpoint.safetensors` (tensors and a JSON header, never a pickle),
`train.log` (step, smoothed loss, device, seconds) and the latent cache. Running the same command
again resumes where the last run stopped, on the same device or another: runs can be short
(`--minutes`, e.g. 9 on a lent GPU) or last for hours at low priority on a CPU. The learning rate
is constant after a warm-up, and decays linearly over the last `--cooldown` steps of `--steps`, so
a run can be extended by asking for more steps.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vov import checkpoints
from vov.backbones.embedded import SECOND_GENERATION, FlowConfig, FlowDenoiser, LatentFlowBackbone, shipped_autoencoder
from vov.backbones.device import resolve_device
from vov.errors import UsageError
from vov.train import latents as latent_cache
from vov.train.pack import PhotoPack

CHECKPOINT_KIND = "embedded training checkpoint"
BASE_CROP = 32  # latent cells a side of the smallest crop (256 pixels)
# (height, width) in latent cells and how often each is drawn: crops of photos up to whole scenes
CROPS = ((32, 32, 0.45), (32, 48, 0.2), (48, 64, 0.2), (64, 96, 0.15))


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 60000
    batch: int = 8  # crops of BASE_CROP cells per step; larger crops take proportionally fewer
    peak_lr: float = 3e-4
    warmup: int = 500
    cooldown: int = 5000
    ema_decay: float = 0.9995
    clip_every: int = 4  # every n-th step is a batch of camera moves
    scales: tuple[int, ...] = (1152, 768, 512)  # long sides the cache holds each photo at
    checkpoint_every: int = 250
    seed: int = 0


def learning_rate(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.peak_lr * (step + 1) / cfg.warmup
    start = cfg.steps - cfg.cooldown
    if step < start:
        return cfg.peak_lr
    return cfg.peak_lr * (1.0 - 0.9 * min(1.0, (step - start) / max(1, cfg.cooldown)))


def flow_matching_loss(denoiser, latents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    b = latents.shape[0]
    t = torch.sigmoid(torch.randn(b, generator=generator)).to(latents.device)
    eps = torch.randn(latents.shape, generator=generator).to(latents.device)
    tt = t.view(b, 1, 1, 1, 1)
    with torch.autocast(latents.device.type, dtype=torch.bfloat16):
        pred = denoiser((1 - tt) * latents + tt * eps, t)
    return (pred.float() - (eps - latents)).pow(2).mean()


class Batches:
    """Whitened latent batches cropped from the cache: images of several sizes, and camera moves."""

    def __init__(self, cache: latent_cache.LatentCache, mean: torch.Tensor, std: torch.Tensor, cfg: TrainConfig,
                 device: torch.device = torch.device("cpu")):
        # on a GPU the 8-bit cache moves there once, so that a step's crops never cross the bus
        self.cache = latent_cache.LatentCache([q.to(device) for q in cache.images], [q.to(device) for q in cache.clips])
        self.cfg = cfg
        self.mean, self.std = mean.to(device).view(-1, 1, 1), std.to(device).view(-1, 1, 1)
        self.rng = np.random.default_rng(cfg.seed)

    def _whiten(self, q: torch.Tensor) -> torch.Tensor:
        z = latent_cache.dequantise(q)
        return (z - self.mean.view(-1, *([1] * (z.dim() - 1)))) / self.std.view(-1, *([1] * (z.dim() - 1)))

    def images(self) -> torch.Tensor:
        choice = self.rng.choice(len(CROPS), p=[c[2] for c in CROPS])
        h, w, _ = CROPS[choice]
        if self.rng.random() < 0.5:
            h, w = w, h  # portrait as often as landscape
        count = max(1, round(self.cfg.batch * BASE_CROP ** 2 / (h * w)))
        fitting = [q for q in self.cache.images if q.shape[1] >= h and q.shape[2] >= w]
        if not fitting:
            h = w = BASE_CROP
            fitting = [q for q in self.cache.images if q.shape[1] >= h and q.shape[2] >= w] or self.cache.images
            h, w = min(h, min(q.shape[1] for q in fitting)), min(w, min(q.shape[2] for q in fitting))
        out = []
        for _ in range(count):
            q = fitting[self.rng.integers(len(fitting))]
            y = self.rng.integers(q.shape[1] - h + 1)
            x = self.rng.integers(q.shape[2] - w + 1)
            out.append(self._whiten(q[:, y:y + h, x:x + w]))
        return torch.stack(out).unsqueeze(2)  # (B, C, 1, h, w)

    def clips(self) -> torch.Tensor:
        count = max(1, self.cfg.batch // 4)
        picks = self.rng.integers(len(self.cache.clips), size=count)
        return torch.stack([self._whiten(self.cache.clips[i]) for i in picks])  # (B, C, F, h, w)

    def next(self, step: int) -> torch.Tensor:
        if self.cache.clips and self.cfg.clip_every and step % self.cfg.clip_every == self.cfg.clip_every - 1:
            return self.clips()
        return self.images()


def _state(denoiser, ema, optimiser, generator, mean, std) -> dict[str, torch.Tensor]:
    return {**{f"denoiser.{k}": v for k, v in denoiser.state_dict().items()},
            **{f"ema.{k}": v for k, v in ema.state_dict().items()},
            "latent_mean": mean, "latent_std": std, "generator": generator.get_state(),
            **checkpoints.optimiser_tensors(optimiser)}


def export_weights(run_dir: str | Path, out: str | Path, model: FlowConfig = SECOND_GENERATION) -> int:
    """Write the averaged weights of a run's last checkpoint as a backbone file; returns its step.

    Reads only the checkpoint, so it can run beside a training run that is still going.
    """
    ckpt_path = Path(run_dir) / "checkpoint.safetensors"
    if not ckpt_path.is_file():
        raise UsageError(f"{run_dir}: no checkpoint to export (train first)")
    ema = FlowDenoiser(model)
    optimiser = torch.optim.AdamW(ema.parameters())
    whitening = torch.zeros(model.latent_channels)
    expected = {**_state(ema, ema, optimiser, torch.Generator(), whitening, whitening),
                **checkpoints.adam_shapes(optimiser)}
    try:
        saved, meta = checkpoints.load(ckpt_path, CHECKPOINT_KIND, expected, optional_prefixes=("optimiser.",))
        if meta["model"] != asdict(model):
            raise ValueError("it was made with another model shape")
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise UsageError(f"{ckpt_path} is not a usable {CHECKPOINT_KIND} ({e})") from None
    ema.load_state_dict({k[4:]: v for k, v in saved.items() if k.startswith("ema.")})
    autoencoder, _ = shipped_autoencoder()
    LatentFlowBackbone.second_generation(model, autoencoder, ema.requires_grad_(False), saved["latent_mean"],
                                         saved["latent_std"]).save(out)
    return int(meta["step"])


def train(run_dir: str | Path, pack_path: str | Path, cfg: TrainConfig = TrainConfig(),
          model: FlowConfig = SECOND_GENERATION, device: str | None = None, minutes: float | None = None,
          out: str | Path | None = None, stop_at: int | None = None, progress: bool = True) -> Path | None:
    """Train (or resume) in `run_dir`; returns the weights file once `cfg.steps` are done, else None.

    A run also stops, with a checkpoint, after `minutes` of training or at step `stop_at`.
    """
    device = resolve_device(device)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + minutes * 60 if minutes else None
    pack = PhotoPack(pack_path)
    pack.verify()
    licences = {}
    for e in pack.entries:
        licences[e.licence] = licences.get(e.licence, 0) + 1
    print(f"photo pack {pack.path}: {len(pack)} photos ({', '.join(f'{k} {v}' for k, v in sorted(licences.items()))})")

    autoencoder, ae_identity = shipped_autoencoder()
    autoencoder = autoencoder.to(device)
    cache = latent_cache.build(pack, autoencoder, ae_identity, run_dir / "latents", cfg.scales, device, cfg.seed,
                               progress)
    mean, std = cache.statistics()
    print(f"latent cache: {len(cache.images)} images, {len(cache.clips)} camera moves, {cache.nbytes / 2**20:.0f} MiB")

    torch.manual_seed(cfg.seed)
    denoiser = FlowDenoiser(model).to(device)
    ema = copy.deepcopy(denoiser).requires_grad_(False)
    optimiser = torch.optim.AdamW(denoiser.parameters(), lr=cfg.peak_lr, betas=(0.9, 0.99), weight_decay=0.01)
    generator = torch.Generator().manual_seed(cfg.seed)  # on the CPU: a checkpoint resumes on any device
    batches = Batches(cache, mean, std, cfg, device)
    ckpt_path = run_dir / "checkpoint.safetensors"
    start, spent = 0, {}
    if ckpt_path.exists():
        expected = {**_state(denoiser, ema, optimiser, generator, mean, std), **checkpoints.adam_shapes(optimiser)}
        saved, meta = checkpoints.load(ckpt_path, CHECKPOINT_KIND, {k: v.cpu() for k, v in expected.items()},
                                       optional_prefixes=("optimiser.",))
        try:
            if meta["model"] != asdict(model) or meta["pack"] != pack.digest:
                raise ValueError("it was made with another model shape or photo pack")
            denoiser.load_state_dict({k[9:]: v for k, v in saved.items() if k.startswith("denoiser.")})
            ema.load_state_dict({k[4:]: v for k, v in saved.items() if k.startswith("ema.")})
            checkpoints.restore_optimiser(optimiser, saved)
            batches.rng.bit_generator.state = meta["batch_rng"]
            start, spent = int(meta["step"]), dict(meta.get("seconds", {}))
            generator.set_state(saved["generator"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise UsageError(f"{ckpt_path} is not a usable {CHECKPOINT_KIND} ({e}); delete it to start afresh") from None
        print(f"resuming from step {start}")

    def save(step: int) -> None:
        checkpoints.save(ckpt_path, CHECKPOINT_KIND, _state(denoiser, ema, optimiser, generator, mean, std),
                         {"step": step, "batch_rng": batches.rng.bit_generator.state, "model": asdict(model),
                          "train": asdict(cfg), "pack": pack.digest, "seconds": spent})

    log = open(run_dir / "train.log", "a")
    denoiser.train()
    kind = "cuda" if device.type == "cuda" else "cpu"
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=f"training denoiser ({kind})",
               disable=not progress)
    smooth, step, tick = None, start, time.monotonic()
    for step in bar:
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, cfg)
        loss = flow_matching_loss(denoiser, batches.next(step), generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        optimiser.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(denoiser.parameters()), 1 - decay)
        value = loss.item()
        smooth = value if smooth is None else 0.98 * smooth + 0.02 * value
        bar.set_postfix(loss=f"{smooth:.4f}")
        now = time.monotonic()
        spent[kind] = spent.get(kind, 0.0) + now - tick
        tick = now
        stopping = (deadline is not None and now > deadline) or step + 1 == stop_at
        if (step + 1) % 50 == 0 or stopping or step + 1 == cfg.steps:
            log.write(f"{step + 1} {smooth:.5f} {kind} {spent[kind]:.1f}\n")
            log.flush()
        if (step + 1) % cfg.checkpoint_every == 0 or stopping:
            save(step + 1)
        if stopping:
            bar.close()
            print(f"stopped at step {step + 1} of {cfg.steps}; run again to continue")
            return None
    bar.close()
    save(cfg.steps)
    backbone = LatentFlowBackbone.second_generation(model, autoencoder.cpu(), ema.cpu(), mean, std)
    out = Path(out) if out else run_dir / "embedded.safetensors"
    backbone.save(out)
    print(f"wrote {out} after {cfg.steps} steps ({', '.join(f'{k} {v / 3600:.2f} h' for k, v in spent.items())})")
    return out

