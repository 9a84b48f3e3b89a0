"""What the backbones loaded from a diffusers-layout model share: the folder, the identity of its
files, device and dtype, the VAE with its latent normalisation, and the lazily loaded text encoder.

Subclasses (`wan`, `image`) say which components they read and load their transformer; the VAE
always runs in float32 (the Wan authors' advice for decoding quality; it is a small share of
the compute), the transformer in the backbone's dtype.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch
from torch import nn

from vov.backbones import hub
from vov.backbones.base import Backbone
from vov.backbones.device import resolve_device, resolve_dtype
from vov.backbones.identity import weights_identity
from vov.errors import UsageError


class PretrainedBackbone(Backbone):
    components: tuple[str, ...] = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
    vae_class: str = ""  # the diffusers class name of the VAE
    transformer_class: str = ""  # and of the transformer
    pixel_range = (-1.0, 1.0)

    def __init__(self, model: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None):
        self.device = resolve_device(device, default="auto")
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = str(model)
        self.folder: Path = hub.model_folder(self.model, self.components, self.name)
        self._identity: bytes | None = None
        self._text_lock = threading.Lock()
        self._text: tuple | None = None  # (tokenizer, encoder) once loaded
        self._check_classes()
        self.vae = self._load_vae()
        z = self.vae.config.z_dim
        self.latent_channels = z
        self._latents_mean = torch.tensor(self.vae.config.latents_mean, dtype=torch.float32).view(1, z, 1, 1, 1)
        self._latents_std = torch.tensor(self.vae.config.latents_std, dtype=torch.float32).view(1, z, 1, 1, 1)
        if self._latents_mean.numel() != z or self._latents_std.numel() != z or bool((self._latents_std <= 0).any()):
            raise UsageError(f"model {self.model}: vae config's latents_mean / latents_std do not match z_dim {z}")
        self.scheduler_config = self._read_scheduler_config()

    # ---- loading

    def _check_classes(self) -> None:
        """A folder of another model family is one clear line, not an error from deep inside a loader."""
        import json

        for component, expected in (("transformer", self.transformer_class), ("vae", self.vae_class)):
            try:
                found = json.loads((self.folder / component / "config.json").read_text()).get("_class_name")
            except (OSError, ValueError, AttributeError):
                raise UsageError(f"model {self.model}: {component}/config.json is not readable JSON") from None
            if found is not None and found != expected:
                raise UsageError(f"model {self.model}: its {component} is a {str(found)[:60]}; backbone {self.name!r} "
                                 f"needs a {expected}")

    def _load_vae(self) -> nn.Module:
        import diffusers

        cls = getattr(diffusers, self.vae_class)
        vae = hub.load_component(lambda: cls.from_pretrained(
            str(self.folder / "vae"), torch_dtype=torch.float32, use_safetensors=True, local_files_only=True), "vae", self.model)
        return vae.to(self.device).eval().requires_grad_(False)

    def _read_scheduler_config(self) -> dict:
        import json

        try:
            data = json.loads((self.folder / "scheduler" / "scheduler_config.json").read_text())
        except (OSError, ValueError):
            raise UsageError(f"model {self.model}: scheduler/scheduler_config.json is not readable JSON") from None
        if not isinstance(data, dict):
            raise UsageError(f"model {self.model}: scheduler/scheduler_config.json is not an object")
        return data

    def _load_transformer(self, cls) -> nn.Module:
        model = hub.load_component(lambda: cls.from_pretrained(
            str(self.folder / "transformer"), torch_dtype=self.dtype, use_safetensors=True, local_files_only=True),
            "transformer", self.model)
        return model.to(self.device).eval().requires_grad_(False)

    def text_encoder(self):
        """(tokenizer, text encoder), loaded on first use (bf16 on CPU and CUDA: it runs once per caption)."""
        with self._text_lock:
            if self._text is None:
                self._text = self._load_text_encoder()
            return self._text

    def _load_text_encoder(self) -> tuple:
        raise NotImplementedError

    def release_text_encoder(self) -> None:
        """Free the text encoder's memory; captions already encoded stay cached."""
        with self._text_lock:
            self._text = None

    # ---- identity

    @property
    def identity(self) -> bytes:
        """32 bytes from the model's files (weights as bytes, configs as canonical JSON)."""
        if self._identity is None:
            self._identity = weights_identity(hub.identity_entries(self.folder, self.components))
        return self._identity

    @property
    def content_hash(self) -> bytes:
        return self.identity[:8]

    # ---- pixels and latents

    def _vae_input(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dim() != 5 or pixels.shape[1] != 3:
            raise UsageError(f"pixels must be (batch, 3, frames, height, width), not {tuple(pixels.shape)}")
        f = self.latent_factor
        if pixels.shape[-1] % f or pixels.shape[-2] % f:
            raise UsageError(f"image sides must be multiples of {f}, not {pixels.shape[-1]}x{pixels.shape[-2]}")
        low, high = self.pixel_range
        x = self.pad_frames(pixels.float())
        return (x * (high - low) + low).to(self.device)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """The posterior mean of the VAE, normalised by its latents_mean / latents_std (deterministic:
        the decoder never needs the encoder, but a fit repeated on the same input must see the same
        latents)."""
        posterior = self.vae.encode(self._vae_input(pixels)).latent_dist
        z = posterior.mode().float().cpu()
        return (z - self._latents_mean) / self._latents_std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.float() * self._latents_std + self._latents_mean
        x = self.vae.decode(z.to(self.device), return_dict=False)[0].float().cpu()
        low, high = self.pixel_range
        return (x - low) / (high - low)

    def velocity(self, latents, t, condition=None):
        return self.denoiser(latents, t, condition)

    def describe(self) -> dict:
        return {**super().describe(), "folder": str(self.folder)}


class ExportedLatentDecoder(nn.Module):
    """Normalised latents of a fixed frame count -> pixels in [0, 1], over a VAE shared with the backbone.

    The VAE's decoder keeps a causal cache between latent frames in Python, so a traced graph holds
    the frame count it was traced with; this module is made for one count (`latent_frames`).
    """

    def __init__(self, vae: nn.Module, mean: torch.Tensor, std: torch.Tensor, latent_frames: int,
                 pixel_range: tuple[float, float]):
        super().__init__()
        self.vae = vae
        self.register_buffer("mean", mean.clone(), persistent=False)
        self.register_buffer("std", std.clone(), persistent=False)
        self.latent_frames = latent_frames
        self.low, self.high = pixel_range

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling() and latents.shape[2] != self.latent_frames:
            raise ValueError(f"this decoder was made for {self.latent_frames} latent frames, not {latents.shape[2]}")
        z = latents * self.std.to(latents) + self.mean.to(latents)
        # `decode` slices the batch when it is over 1, a branch that pins the batch size in a traced
        # graph; `_decode` is the per-sample computation without that branch
        decode = getattr(self.vae, "_decode", None) or self.vae.decode
        x = decode(z, return_dict=False)[0]
        return (x - self.low) / (self.high - self.low)
