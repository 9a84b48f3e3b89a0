"""The interface every foundation model ("backbone") offers to the codec.

A backbone maps pixels to latents and back, and predicts the flow-matching velocity
`v = eps - x_0` of a noisy latent `x_t = (1 - t) x_0 + t eps`. Its `denoiser` is the module that
adapters are injected into; `target_presets` names groups of its linear layers to adapt.
Tensors are shaped (batch, channels, frames, height, width); an image is a one-frame clip.

Adapter targets are a closed vocabulary: a file or a request names either one of the backbone's
preset ids or an explicit comma-separated list of its adaptable layers' exact names. The presets'
patterns are vov's own code; nothing that arrives from outside is ever compiled or matched as a
pattern (a hostile pattern could back-track for hours while holding the interpreter lock).
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod

import torch
from torch import nn

from vov.errors import UsageError

MAX_TARGETS_BYTES = 512  # what a file's `targets` field holds (docs/format.md)


class Backbone(ABC):
    name: str
    latent_channels: int
    pixel_multiple: int  # image sides are padded to a multiple of this
    latent_factor: int  # pixels per latent cell, each spatial axis
    denoiser: nn.Module
    target_presets: dict[str, str]  # preset id -> regular expression over denoiser module names (vov's own)
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

    def adaptable_layers(self) -> dict[str, nn.Linear]:
        """Every linear layer of the denoiser by its full name, in module order (the hash's order)."""
        return {n: m for n, m in self.denoiser.named_modules() if isinstance(m, nn.Linear)}

    def target_layers(self, targets: str | None) -> list[str]:
        """The layers that `targets` names, in module order.

        `targets` is a preset id of this backbone, "" for the default preset, or a comma-separated
        list of exact layer names. Anything else is a UsageError, decided without evaluating it.
        """
        targets = targets or self.default_targets
        if len(targets.encode("utf-8")) > MAX_TARGETS_BYTES:
            raise UsageError(f"adapter targets: longer than {MAX_TARGETS_BYTES} bytes")
        layers = self.adaptable_layers()
        if targets in self.target_presets:
            preset = re.compile(self.target_presets[targets])
            return [n for n in layers if preset.fullmatch(n)]
        names = targets.split(",")
        unknown = [n for n in names if n not in layers]
        if unknown:
            shown = unknown[0] if len(unknown[0]) <= 80 else unknown[0][:80] + "..."
            raise UsageError(f"adapter targets: {shown!r} is neither a preset of backbone {self.name!r} "
                             f"({', '.join(sorted(self.target_presets))}) nor the exact name of one of its "
                             f"adaptable layers")
        if len(set(names)) != len(names):
            raise UsageError("adapter targets: a layer is named twice")
        chosen = set(names)
        return [n for n in layers if n in chosen]

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
