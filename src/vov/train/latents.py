"""The latent cache: a photo pack's latents at a few scales, and camera moves, as 8-bit numbers.

Training steps crop from this cache and never run the autoencoder. It lives in the run folder as
shards (`latents/shard-NNNN.safetensors`, one per `SHARD` photos) written as they are made, so an
interrupted build resumes; a cache made from another pack, autoencoder or set of scales is refused
and rebuilt.

Raw latents are stored as `round((z / 6 + 0.5) * 255)`: a step of 0.024 over [-3, 3], the range the
tiny autoencoder's decoder squashes its input into, far below what flow matching resolves.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vov.errors import UsageError
from vov.media.camera import RANDOM_MOVE, camera_move
from vov.train.pack import PhotoPack, _resize_long_side

CACHE_KIND = "vov latent cache shard"
SHARD = 32
CLIP_FRAMES = 9
CLIP_SIDE = 128
RAW_RANGE = 3.0


def quantise(raw: torch.Tensor) -> torch.Tensor:
    return ((raw.float() / (2 * RAW_RANGE) + 0.5) * 255).round().clamp(0, 255).to(torch.uint8)


def dequantise(q: torch.Tensor) -> torch.Tensor:
    return (q.float() / 255 - 0.5) * (2 * RAW_RANGE)


@dataclass
class LatentCache:
    images: list[torch.Tensor] = field(default_factory=list)  # (C, h, w) uint8, one per photo and scale
    clips: list[torch.Tensor] = field(default_factory=list)  # (C, F, h, w) uint8

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and standard deviation of the raw image latents (every cell counted once)."""
        total = count = squares = 0
        for q in self.images:
            z = dequantise(q).flatten(1).double()
            total = total + z.sum(1)
            squares = squares + (z * z).sum(1)
            count += z.shape[1]
        mean = total / count
        return mean.float(), (squares / count - mean * mean).clamp(min=1e-8).sqrt().float()

    @property
    def nbytes(self) -> int:
        return sum(t.numel() for t in self.images + self.clips)


def _encode(autoencoder, pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> raw latents (..., C, H / 8, W / 8) on the CPU, bf16 autocast."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(device)
    x = x.movedim(-1, -3).float().div(255)
    lead = x.shape[:-3]
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        z = autoencoder.encode_raw(x.reshape(-1, *x.shape[-3:]))
    return z.float().reshape(*lead, *z.shape[-3:]).cpu()


def _crop_to_multiple(pixels: np.ndarray, multiple: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    hh, ww = h - h % multiple, w - w % multiple
    y, x = (h - hh) // 2, (w - ww) // 2
    return pixels[y:y + hh, x:x + ww]


def build(pack: PhotoPack, autoencoder, identity: str, folder: str | os.PathLike, scales: tuple[int, ...],
          device: torch.device, seed: int = 0, progress: bool = True) -> LatentCache:
    """Make (or resume, or reuse) the cache of `pack` in `folder`; `identity` names the autoencoder."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    from tqdm import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = {"pack": pack.digest, "autoencoder": identity, "scales": list(scales), "clip": [CLIP_FRAMES, CLIP_SIDE],
           "seed": seed}
    shards = (len(pack) + SHARD - 1) // SHARD
    cache = LatentCache()
    bar = tqdm(total=len(pack), desc="latent cache", unit="photo", disable=not progress)
    for s in range(shards):
        path = folder / f"shard-{s:04d}.safetensors"
        if path.exists():
            try:
                with safe_open(str(path), framework="pt") as f:
                    header = f.metadata() or {}
                    if header.get("kind") != CACHE_KIND or json.loads(header["key"]) != key:
                        raise ValueError("made from other data")
                    for name in sorted(f.keys(), key=lambda n: (n.split(".")[0], int(n.split(".")[1]))):
                        t = f.get_tensor(name)
                        if t.dtype != torch.uint8 or t.dim() != (3 if name.startswith("img.") else 4):
                            raise ValueError(f"tensor {name} is not a latent")
                        (cache.images if name.startswith("img.") else cache.clips).append(t)
                bar.update(min(SHARD, len(pack) - s * SHARD))
                continue
            except Exception as e:
                bar.write(f"latent cache: rebuilding {path.name} ({type(e).__name__}: {str(e)[:60]})")
        rng = np.random.default_rng([seed, s])
        tensors = {}
        for i in range(s * SHARD, min(len(pack), (s + 1) * SHARD)):
            photo = pack.pixels(i)
            for j, side in enumerate(scales):
                if side > max(photo.shape[:2]) and j > 0:
                    continue  # never upscale; the largest available scale is always kept
                scaled = _crop_to_multiple(_resize_long_side(photo, side), 16)
                if min(scaled.shape[:2]) < 64:
                    continue
                tensors[f"img.{i * len(scales) + j}"] = quantise(_encode(autoencoder, scaled, device))
            source = _resize_long_side(photo, 768)
            if min(source.shape[:2]) >= int(CLIP_SIDE * 1.6):
                move = camera_move(source, CLIP_FRAMES, RANDOM_MOVE, size=(CLIP_SIDE, CLIP_SIDE),
                                   rng=rng).to_uint8()  # (F, H, W, 3)
                tensors[f"clip.{i}"] = quantise(_encode(autoencoder, move, device).transpose(0, 1)).contiguous()
            bar.update(1)
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata={"kind": CACHE_KIND, "key": json.dumps(key)})
        os.replace(tmp, path)
        for name in sorted(tensors, key=lambda n: (n.split(".")[0], int(n.split(".")[1]))):
            (cache.images if name.startswith("img.") else cache.clips).append(tensors[name])
    bar.close()
    if not cache.images:
        raise UsageError(f"{pack.path}: no photo is large enough to train on (64 pixels a side at least)")
    return cache
