"""Portable Gaussian noise: the same numbers on every machine, device and library version.

Every draw the decoder must repeat comes from here, never from `torch.randn`. The format fixes it
(docs/format.md, "Noise"):

- the stream is Philox-4x64-10 with key (seed, purpose << 56 | step << 24 | candidate), counter
  starting at zero, read as raw 64-bit words (numpy's `Philox.random_raw`, whose output is part of
  numpy's stability guarantee);
- each pair of words (a, b) gives two normals by Box-Muller:
  u = ((a >> 11) + 0.5) / 2**53, v = (b >> 11) / 2**53,
  r = sqrt(-2 ln u), n0 = r cos(2 pi v), n1 = r sin(2 pi v), computed in float64, rounded to float32.
"""

from __future__ import annotations

import numpy as np
import torch

INITIAL = 0  # the starting noise x_1 of the sampler
CANDIDATE = 1  # best-of-N candidate noises
FIT = 2  # noise used while fitting (repeatable encodes, not needed for decoding)
INIT = 3  # weights of seeded test models
TILE_CANDIDATE = 4  # best-of-N candidate noises of one tile (candidate field: tile << 16 | candidate)

_MAX_STEP = 1 << 32
_MAX_CANDIDATE = 1 << 24


def key(seed: int, purpose: int, step: int = 0, candidate: int = 0) -> tuple[int, int]:
    if not (0 <= step < _MAX_STEP and 0 <= candidate < _MAX_CANDIDATE and 0 <= purpose < 256):
        raise ValueError("noise key out of range")
    return seed & 0xFFFFFFFFFFFFFFFF, (purpose << 56) | (step << 24) | candidate


def normals(count: int, seed: int, purpose: int, step: int = 0, candidate: int = 0) -> np.ndarray:
    """`count` standard normals as float32, fixed by the arguments alone."""
    k0, k1 = key(seed, purpose, step, candidate)
    bits = np.random.Philox(key=np.array([k0, k1], dtype=np.uint64)).random_raw(2 * ((count + 1) // 2))
    a, b = bits[0::2] >> np.uint64(11), bits[1::2] >> np.uint64(11)
    u = (a.astype(np.float64) + 0.5) * 2.0**-53
    v = b.astype(np.float64) * 2.0**-53
    r = np.sqrt(-2.0 * np.log(u))
    out = np.empty(2 * len(a), dtype=np.float64)
    out[0::2] = r * np.cos(2.0 * np.pi * v)
    out[1::2] = r * np.sin(2.0 * np.pi * v)
    return out[:count].astype(np.float32)


def normal_tensor(shape: tuple[int, ...], seed: int, purpose: int, step: int = 0, candidate: int = 0) -> torch.Tensor:
    count = int(np.prod(shape))
    return torch.from_numpy(normals(count, seed, purpose, step, candidate).reshape(shape))
