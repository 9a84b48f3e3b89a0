"""A clip's latents decoded one latent frame at a time through a chunked latent decoder's two graphs.

A latent decoder with a causal cache (Wan's VAE) is exported as two graphs whose size does not depend
on the clip (vov.backbones.wan_chunks): `vae_decoder_first` decodes the clip's first latent frame to
one pixel frame, `vae_decoder_next` every later latent frame to `temporal_factor` pixel frames, each
taking the cache the previous frame's graph returned (`cache_i_next` of one step is `cache_i` of the
next). Whoever serves the graphs loops them: ONNX Runtime in process (vov.serving.engines.onnx) with
`decode_in_chunks`, and Triton's `vae_decoder` model with its own copy of this loop (its Python
backend runs without vov).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from vov.serving.contract import cache_inputs

Run = Callable[[dict, bool], list]  # (feed, with_cache) -> [pixels, *cache] (pixels alone without the cache)


def decode_in_chunks(run_first: Run, run_next: Run, latents: np.ndarray, caches: int) -> np.ndarray:
    """Pixels (B, 3, pixel frames, H, W) of latents (B, C, F, h, w), one latent frame per graph call."""
    frames = latents.shape[2]
    names = cache_inputs(caches)
    out = run_first({"latents": np.ascontiguousarray(latents[:, :, :1])}, frames > 1)
    pixels = [out[0]]
    for i in range(1, frames):
        feed = {"latents": np.ascontiguousarray(latents[:, :, i: i + 1]), **dict(zip(names, out[1:]))}
        out = run_next(feed, i + 1 < frames)
        pixels.append(out[0])
    return pixels[0] if frames == 1 else np.concatenate(pixels, axis=2)
