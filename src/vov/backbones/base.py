"""The interface every foundation model ("backbone") offers to the codec.

A backbone maps pixels to latents and back, and predicts the flow-matching velocity
`v = eps - x_0` of a noisy latent `x_t = (1 - t) x_0 + t eps`. Its `denoiser` is the module that
adapters are injected into; `target_presets` names groups of its linear layers to adapt.
Tensors are shaped (batch, channels, frames, height, width); an image is a one-frame clip.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

import torch
from torch import nn


class Backbone(ABC):
    name: str
    latent_channels: int
    pixel_multiple: int  # image sides are padded to a multiple of this
    latent_factor: int  # pixels per latent cell, each spatial axis
    denoiser: nn.Module
    target_presets: dict[str, str]  # preset name -> regular expression over denoiser module names
    default_targets: str

    @abstractmethod
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> latents."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> pixels (not clamped)."""

    @abstractmethod
    def velocity(self, latents: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted velocity for latents at times `t` (shape (batch,), in [0, 1])."""

    @property
    @abstractmethod
    def content_hash(self) -> bytes:
        """8 bytes that identify the weights; files record it so they never decode on other weights."""

    def distortion_weights(self) -> torch.Tensor:
        """Per latent channel weights that make latent MSE track pixel MSE (default: equal)."""
        return torch.ones(self.latent_channels)

    def resolve_targets(self, targets: str | None) -> str:
        """A preset name or a regular expression -> the regular expression."""
        targets = targets or self.default_targets
        return self.target_presets.get(targets, targets)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        f = self.latent_factor
        return (self.latent_channels, frames, height // f, width // f)


def hash_state(module: nn.Module) -> bytes:
    """Content hash of a module's tensors, independent of how they were stored on disk."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().float().contiguous().numpy().tobytes())
    return digest.digest()[:8]
