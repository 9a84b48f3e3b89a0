"""The fixed signatures of the modules a backbone exports, so that an exporter needs no backbone's internals."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportSignature:
    """What `export_denoiser()` and `export_latent_decoder()` take and return.

    denoiser(latents (B, C, F, h, w) f32, t (B,) f32 in [0, 1], embeddings (B, L, D) f32
             [, mask (B, L) bool when `takes_mask`]) -> velocity (B, C, F, h, w) f32
    latent_decoder(latents (B, C, F_latent, h, w) f32) -> pixels (B, 3, F_pixels, H, W) f32 in [0, 1]
    """

    latent_channels: int
    text_tokens: int  # L of the embeddings the backbone produces (the null caption's length for embedded)
    text_dim: int  # D
    takes_mask: bool = False
    latent_factor: int = 8
    temporal_factor: int = 1
