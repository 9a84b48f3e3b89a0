"""A closed-form latent space: an orthogonal transform of 8x8 RGB patches.

The transform is the principal-component basis of 8x8x3 patches of natural photos, truncated to the
latent channels and whitened per channel so that every latent channel has unit variance over the
training photos. It costs no training, decodes with one transposed convolution (fast and bit-exact
in ONNX), and its reconstruction error is the best any linear map of that size can reach. See
MODEL_CARD.md for why it was kept over a learned autoencoder.

Pixels are float RGB in [0, 1], shaped (batch, 3, frames, height, width) with height and width
multiples of 8; latents are (batch, channels, frames, height / 8, width / 8).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

PATCH = 8


class PatchAutoencoder(nn.Module):
    def __init__(self, latent_channels: int = 16, patch: int = PATCH):
        super().__init__()
        self.latent_channels = latent_channels
        self.patch = patch
        dim = 3 * patch * patch
        # basis: (channels, 3, p, p), orthonormal rows; mean: (3, p, p); scale: (channels,)
        self.register_buffer("basis", torch.zeros(latent_channels, 3, patch, patch))
        self.register_buffer("mean", torch.zeros(3, patch, patch))
        self.register_buffer("scale", torch.ones(latent_channels))
        self._dim = dim

    @torch.no_grad()
    def fit(self, patches: np.ndarray) -> None:
        """Fit the basis to `patches`, an (n, 3, p, p) float array of pixels in [0, 1]."""
        flat = patches.reshape(len(patches), -1).astype(np.float64)
        mean = flat.mean(axis=0)
        centred = flat - mean
        cov = centred.T @ centred / len(flat)
        eigval, eigvec = np.linalg.eigh(cov)
        order = np.argsort(eigval)[::-1][: self.latent_channels]
        basis = eigvec[:, order].T  # (channels, dim)
        # a fixed sign convention makes the fit reproducible across LAPACK builds
        signs = np.sign(basis[np.arange(len(basis)), np.abs(basis).argmax(axis=1)])
        basis *= signs[:, None]
        self.basis.copy_(torch.from_numpy(basis).float().view_as(self.basis))
        self.mean.copy_(torch.from_numpy(mean).float().view_as(self.mean))
        self.scale.copy_(torch.from_numpy(np.sqrt(eigval[order])).float())

    def _frames_to_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        b, c, f, h, w = x.shape
        return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w), f

    @staticmethod
    def _batch_to_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
        bf, c, h, w = x.shape
        return x.view(bf // frames, frames, c, h, w).permute(0, 2, 1, 3, 4)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        x, frames = self._frames_to_batch(pixels.float())
        offset = (self.basis * self.mean).sum(dim=(1, 2, 3))
        z = F.conv2d(x, self.basis, bias=-offset, stride=self.patch)
        z = z / self.scale.view(1, -1, 1, 1)
        return self._batch_to_frames(z, frames)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z, frames = self._frames_to_batch(latents.float())
        z = z * self.scale.view(1, -1, 1, 1)
        x = F.conv_transpose2d(z, self.basis, stride=self.patch)
        x = x + self.mean.tile(1, z.shape[2], z.shape[3])
        return self._batch_to_frames(x, frames)


def sample_patches(images: list[np.ndarray], count: int, rng: np.random.Generator, patch: int = PATCH) -> np.ndarray:
    """Draw `count` patches, spread evenly over `images` (uint8 HxWx3 arrays), as (n, 3, p, p) floats."""
    per_image = max(1, count // len(images))
    out = []
    for img in images:
        h, w, _ = img.shape
        ys = rng.integers(0, h - patch + 1, per_image)
        xs = rng.integers(0, w - patch + 1, per_image)
        idx = (ys[:, None, None] + np.arange(patch)[None, :, None], xs[:, None, None] + np.arange(patch)[None, None, :])
        out.append(img[idx[0], idx[1]].transpose(0, 3, 1, 2))
    return np.concatenate(out).astype(np.float32) / 255.0
