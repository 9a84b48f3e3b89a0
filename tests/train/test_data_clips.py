"""The training sampler's clips are the random camera move of vov.media, drawn in the same order as ever."""

import hashlib

import numpy as np

from vov.train import data

# sha256 (first 16 hex digits) of CropSampler([photo, its 100x80 corner], seed=5).clips(3, 4, 24, 32)
CLIPS_DIGEST = "a70d20adcafde5cb"


def test_sampled_clips_keep_their_values_for_a_seed():
    y, x = np.mgrid[0:96, 0:128].astype(np.float32)
    rng = np.random.default_rng(11)
    base = np.stack([np.sin(x / 9) * 0.4 + 0.5, np.cos(y / 7) * 0.4 + 0.5, (x + y) / 224], -1)
    photo = (np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1) * 255 + 0.5).astype(np.uint8)
    clips = data.CropSampler([photo, photo[:80, :100]], seed=5).clips(3, 4, 24, 32)
    assert clips.dtype == np.float32 and clips.shape == (3, 3, 4, 24, 32)
    assert hashlib.sha256(clips.tobytes()).hexdigest()[:16] == CLIPS_DIGEST
