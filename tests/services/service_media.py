"""Small pictures and fast options for the tiny backbone, shared by the services' tests."""

import numpy as np

from vov import codec
from vov.method.adapters import AdapterSpec
from vov.method.fit import FitConfig
from vov.media import Picture


def picture(seed: int, height: int = 48, width: int = 64) -> Picture:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = seed * 0.7
    img = np.stack([0.5 + 0.4 * np.sin(x / (4 + seed) + phase), y / height, 0.5 + 0.3 * np.cos((x + y) / 9 - phase)], -1)
    return Picture(img.astype(np.float32))


def tiny_options(seed: int = 0, sampler_steps: int = 6) -> codec.EncodeOptions:
    return codec.EncodeOptions(backbone="tiny", adapter=AdapterSpec(rank=2, d=256 + 128 * seed, seed=seed),
                               fit=FitConfig(steps=8, lam=0.01, seed=seed), target_bpp=None, sampler_steps=sampler_steps,
                               noise_seed=seed)
