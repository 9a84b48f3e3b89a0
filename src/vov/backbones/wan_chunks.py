"""Wan's latent decoder one latent frame at a time, its causal cache as tensors in and out.

diffusers' `AutoencoderKLWan._decode` runs `vae.decoder` once per latent frame and keeps, in the
Python list `_feat_map`, what each causal convolution of the decoder needs from the frames before:
the last CACHE_T (2) frames of its input. A traced graph of that loop unrolls it, so its size and
its export time grow with the frame count. `ChunkDecoder` is one step of the loop with the list made
explicit: the cache enters as inputs `cache_0..cache_{n-1}` and leaves as outputs, one per causal
convolution, in the order the decoder visits them.

Every cache it returns holds exactly two frames, so that one graph takes the cache of any step:
- a cache of one frame (a convolution that has seen a single frame) is the same cache with a zero
  frame before it: the convolution pads the missing frames with zeros either way, and the next step
  keeps the last frame of it;
- the temporal upsampler skips its time convolution on the first frame and marks its place "Rep";
  the next step then convolves with zero padding and keeps a zero frame before its input, which is
  what a cache of two zero frames gives.

The first latent frame is a step of its own (`first=True`): it starts from no cache and decodes to
one pixel frame (the upsamplers skip their time convolution, and Wan2.2's shortcut drops its leading
frames); every later frame decodes to `temporal_factor` pixel frames.
"""

from __future__ import annotations

import torch
from torch import nn

CACHE_FRAMES = 2  # diffusers' CACHE_T: the frames a causal convolution keeps from the steps before


def causal_convolutions(vae: nn.Module) -> int:
    """The number of causal convolutions in the VAE's decoder that keep a cache: those whose kernel
    spans frames (a residual block's 1x1x1 shortcut is a causal convolution that keeps none, although
    `_feat_map` has a place for it)."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    return sum(isinstance(m, WanCausalConv3d) and m.kernel_size[0] > 1 for m in vae.decoder.modules())


class ChunkDecoder(nn.Module):
    """Normalised latents of one latent frame (B, C, 1, h, w) and the cache of the frames before ->
    pixels in [0, 1] (B, 3, 1 or temporal_factor, H, W) and the cache after it.

    `first`: the clip's first latent frame, which takes no cache. Over a VAE shared with the backbone."""

    def __init__(self, vae: nn.Module, mean: torch.Tensor, std: torch.Tensor, pixel_range: tuple[float, float],
                 first: bool):
        super().__init__()
        from diffusers.models.autoencoders.autoencoder_kl_wan import CACHE_T, WanResample

        if CACHE_T != CACHE_FRAMES:
            raise RuntimeError(f"this diffusers keeps {CACHE_T} frames per causal convolution, not {CACHE_FRAMES}")
        self.vae = vae
        self.register_buffer("mean", mean.clone(), persistent=False)
        self.register_buffer("std", std.clone(), persistent=False)
        self.low, self.high = pixel_range
        self.first = first
        self.caches = causal_convolutions(vae)
        self.upsamplers = [m for m in vae.decoder.modules() if isinstance(m, WanResample) and m.mode == "upsample3d"]

    def forward(self, latents: torch.Tensor, *cache: torch.Tensor):
        if not torch.compiler.is_compiling():
            expected = 0 if self.first else self.caches
            if latents.shape[2] != 1 or len(cache) != expected:
                raise ValueError(f"one latent frame and {expected} caches, not {latents.shape[2]} and {len(cache)}")
        z = latents * self.std.to(latents) + self.mean.to(latents)
        x = self.vae.post_quant_conv(z)
        feat = [None] * self.caches if self.first else list(cache)
        index = [0]
        skipped = {}  # cache index -> input of an upsampler that skipped its time convolution ("Rep")

        def remember(module, args, kwargs):
            if feat[kwargs["feat_idx"][0]] is None:
                skipped[kwargs["feat_idx"][0]] = args[0]

        hooks = [m.register_forward_pre_hook(remember, with_kwargs=True) for m in self.upsamplers] if self.first else []
        try:
            out = self.vae.decoder(x, feat_cache=feat, feat_idx=index, first_chunk=self.first)
        finally:
            for hook in hooks:
                hook.remove()
        if index[0] != self.caches:
            raise RuntimeError(f"the decoder kept {index[0]} caches, {self.caches} expected")
        if self.vae.config.patch_size is not None:
            from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

            out = unpatchify(out, patch_size=self.vae.config.patch_size)
        pixels = (out.clamp(-1.0, 1.0) - self.low) / (self.high - self.low)
        return (pixels, *(self._two_frames(feat[i], skipped.get(i)) for i in range(self.caches)))

    @staticmethod
    def _two_frames(entry, skipped_input) -> torch.Tensor:
        if isinstance(entry, str):  # "Rep": the upsampler's next step convolves with zero padding
            b, c, _, h, w = skipped_input.shape
            return skipped_input.new_zeros(b, c, CACHE_FRAMES, h, w)
        missing = CACHE_FRAMES - entry.shape[2]
        if missing > 0:
            entry = torch.cat([entry.new_zeros(*entry.shape[:2], missing, *entry.shape[3:]), entry], 2)
        return entry
