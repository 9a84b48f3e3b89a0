"""The interface every foundation model ("backbone") offers to the codec.

A backbone maps pixels to latents and back, and predicts the flow-matching velocity
`v = eps - x_0` of a noisy latent `x_t = (1 - t) x_0 + t eps`. Its `denoiser` is the module that
adapters are injected into; `target_presets` names groups of its linear layers to adapt.
Tensors are shaped (batch, channels, frames, height, width); an image is a one-frame clip.

What every backbone owns, so that callers need no special case (interface v2):

- pixels: `encode` takes RGB in [0, 1] and `decode` returns RGB in [0, 1] (not clamped); the
  range the model's own VAE works in (`pixel_range`) and the normalisation of its latents stay
  inside the backbone.
- frames: `padded_frames(n)` is the frame count a clip of n frames is encoded with (never fewer:
  clips are padded with copies of their last frame, never cut), `latent_frames(n)` the latent
  frames that gives, `pixel_frames(k)` the frames k latent frames decode to.
- conditioning: `condition(caption)` -> `Condition(embeddings, mask)` (`vov.backbones.condition`),
  computed once per caption (the text encoder is loaded on first use), the empty caption being the
  null condition.
- time: the network sees `t * time_scale`; `schedule_for(latent_shape)` is the sampler's schedule
  (a `Schedule` of `vov.backbones.schedule`: an id and a flow shift, both of which a file records).
- device and dtype: chosen when the backbone is loaded (`vov.backbones.device`);
  `autocast()` is the context its forward passes run in.
- defaults: `adapter_defaults` (rank, d, targets preset, hash seed) and `fit_defaults` (learning
  rates, steps) as plain data (`vov.backbones.defaults`).
- export: `export_denoiser()` and `export_latent_decoder(latent_frames)` return plain torch modules
  with fixed signatures (`vov.backbones.export_signature`), so an exporter needs no backbone's
  internals; `vov.backbones.module_copy` copies a module tree over shared tensors for it.
- identity: `content_hash`, 8 bytes from its weight files (`vov.backbones.identity`), recorded in files.

Adapter targets are a closed vocabulary: a file or a request names either one of the backbone's
preset ids or an explicit comma-separated list of its adaptable layers' exact names. The presets'
patterns are vov's own code; nothing that arrives from outside is ever compiled or matched as a
pattern (a hostile pattern could back-track for hours while holding the interpreter lock).
"""

from __future__ import annotations

import contextlib
import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import asdict

import torch
from torch import nn

from vov.backbones.condition import Condition
from vov.backbones.defaults import AdapterDefaults, FitDefaults
from vov.backbones.export_signature import ExportSignature
from vov.backbones.schedule import Schedule
from vov.errors import UsageError

MAX_TARGETS_BYTES = 512  # what a file's `targets` field holds (docs/format.md)
MAX_CAPTION_BYTES = 4096  # a caption longer than this is refused before any tokenizer sees it
CONDITION_CACHE = 16  # captions whose embeddings a backbone keeps


class Backbone(ABC):
    name: str
    latent_channels: int
    pixel_multiple: int  # image sides are padded to a multiple of this
    latent_factor: int  # pixels per latent cell, each spatial axis
    temporal_factor: int = 1  # pixel frames per latent frame after the first
    pixel_range: tuple[float, float] = (0.0, 1.0)  # the range the model's VAE works in (encode/decode map to [0, 1])
    time_scale: float = 1000.0  # the network's timestep for t = 1
    denoiser: nn.Module
    target_presets: dict[str, str]  # preset id -> regular expression over denoiser module names (vov's own)
    default_targets: str
    adapter_defaults: AdapterDefaults = AdapterDefaults()
    fit_defaults: FitDefaults = FitDefaults()
    schedule: Schedule = Schedule()
    max_caption_tokens: int = 0  # 0: the backbone takes no caption
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    model: str = ""  # the hub id or folder the weights came from ("" for the embedded ones)

    # ---- pixels and latents

    @abstractmethod
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, F, H, W) in [0, 1] -> normalised latents (B, C, latent_frames(F), H / f, W / f).

        F is padded to `padded_frames(F)` with copies of the last frame first (never cut).
        """

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> pixels in [0, 1] (not clamped), `pixel_frames(latent frames)` frames."""

    @abstractmethod
    def velocity(self, latents: torch.Tensor, t: torch.Tensor, condition=None) -> torch.Tensor:
        """Predicted velocity for latents at times `t` (shape (batch,), in [0, 1]).

        `condition` is a `Condition`, a raw embeddings tensor (B or 1, L, D), or None for the null caption.
        """

    @property
    @abstractmethod
    def content_hash(self) -> bytes:
        """8 bytes that identify the weights; files record it so they never decode on other weights."""

    def distortion_weights(self) -> torch.Tensor:
        """Per latent channel weights that make latent MSE track pixel MSE (default: equal)."""
        return torch.ones(self.latent_channels)

    # ---- frames

    def padded_frames(self, frames: int) -> int:
        """The frame count a clip of `frames` frames is encoded with: 1 + k * temporal_factor, >= frames."""
        if frames < 1:
            raise UsageError(f"a clip needs at least one frame, not {frames}")
        f = self.temporal_factor
        return 1 + -(-(frames - 1) // f) * f

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a clip of `frames` pixel frames (after padding)."""
        return 1 + (self.padded_frames(frames) - 1) // self.temporal_factor

    def pixel_frames(self, latent_frames: int) -> int:
        """Pixel frames that `latent_frames` latent frames decode to."""
        if latent_frames < 1:
            raise UsageError(f"latents need at least one frame, not {latent_frames}")
        return 1 + (latent_frames - 1) * self.temporal_factor

    def pad_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) -> (B, 3, padded_frames(F), H, W), repeating the last frame."""
        frames = pixels.shape[2]
        extra = self.padded_frames(frames) - frames
        if extra == 0:
            return pixels
        return torch.cat([pixels, pixels[:, :, -1:].expand(-1, -1, extra, -1, -1)], dim=2)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        f = self.latent_factor
        return (self.latent_channels, self.latent_frames(frames), height // f, width // f)

    @property
    def clip_frames(self) -> int:
        """The longest clip one adaptation holds on this backbone (longer videos are cut into clips)."""
        return 1

    # ---- conditioning

    def condition(self, caption: str | None = "") -> Condition:
        """The caption's condition, computed once and cached; "" (or None) is the null condition."""
        caption = caption or ""
        if len(caption.encode("utf-8")) > MAX_CAPTION_BYTES:
            raise UsageError(f"caption: longer than {MAX_CAPTION_BYTES} bytes")
        cache = self.__dict__.setdefault("_conditions", OrderedDict())
        lock = self.__dict__.setdefault("_conditions_lock", threading.Lock())
        with lock:
            if caption in cache:
                cache.move_to_end(caption)
                return cache[caption]
        made = self._encode_caption(caption)
        with lock:
            cache[caption] = made
            while len(cache) > CONDITION_CACHE:
                cache.popitem(last=False)
        return made

    def _encode_caption(self, caption: str) -> Condition:
        """Run the text encoder (loaded on first use) on one caption."""
        if caption:
            raise UsageError(f"backbone {self.name!r} takes no caption")
        raise NotImplementedError

    def schedule_for(self, latent_shape: tuple[int, ...]) -> Schedule:
        """The sampler's schedule for latents of this shape (with or without the batch axis)."""
        return self.schedule

    # ---- device, precision, memory

    def autocast(self, enabled: bool = True):
        """The context forward passes run in: bf16 autocast on CPU with fp32 weights, on CUDA always."""
        if not enabled:
            return contextlib.nullcontext()
        if self.device.type == "cuda" or self.dtype == torch.float32:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def set_gradient_checkpointing(self, on: bool = True) -> None:
        """Recompute each block's activations in the backward pass (less memory, ~1.3x the time).

        Adapters copy the setting when they are built (`AdaptedDenoiser.set_gradient_checkpointing`
        changes one adapter's).
        """
        set_gradient_checkpointing(self.denoiser, on, self.name)

    # ---- adapters

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

    # ---- export

    def export_signature(self) -> ExportSignature:
        raise NotImplementedError(f"backbone {self.name!r} does not export")

    def export_denoiser(self) -> nn.Module:
        """A module `(latents, t, embeddings[, mask]) -> velocity` in float32 (see `ExportSignature`).

        Its structure is its own (an exporter may replace its linear layers) but its parameters are
        the backbone's: deep-copy it before converting any of them.
        """
        raise NotImplementedError(f"backbone {self.name!r} does not export")

    def export_latent_decoder(self, latent_frames: int = 1) -> nn.Module:
        """A module `latents (B, C, latent_frames, h, w) -> pixels in [0, 1]` for that frame count."""
        raise NotImplementedError(f"backbone {self.name!r} does not export")

    def export_latent_decoder_chunk(self, first: bool) -> nn.Module | None:
        """For a latent decoder that decodes a clip one latent frame at a time with a causal cache: a
        module `(latents (B, C, 1, h, w), *cache) -> (pixels in [0, 1], *cache)` for one latent frame,
        the clip's first (`first`: no cache in) or a later one, looped by whoever serves it
        (vov.backbones.wan_chunks). None where the decoder keeps no cache between frames."""
        return None

    # ---- description

    def describe(self) -> dict:
        """Plain facts about this instance, for `vov backbones` and service model listings."""
        return {"name": self.name, "model": self.model, "content_hash": self.content_hash.hex(),
                "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "latent_channels": self.latent_channels, "latent_factor": self.latent_factor,
                "temporal_factor": self.temporal_factor, "pixel_multiple": self.pixel_multiple,
                "clip_frames": self.clip_frames, "max_caption_tokens": self.max_caption_tokens,
                "schedule": self.schedule.to_json(), "target_presets": sorted(self.target_presets),
                "default_targets": self.default_targets, "adapter_defaults": asdict(self.adapter_defaults),
                "fit_defaults": asdict(self.fit_defaults)}


def set_gradient_checkpointing(denoiser: nn.Module, on: bool, backbone_name: str) -> None:
    """Switch activation recomputation on the first diffusers model inside `denoiser`."""
    for module in denoiser.modules():
        if getattr(module, "_supports_gradient_checkpointing", False):
            if on:
                module.enable_gradient_checkpointing()
            else:
                module.disable_gradient_checkpointing()
            return
    if on:
        raise UsageError(f"backbone {backbone_name!r} does not support gradient checkpointing")
