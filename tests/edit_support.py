"""The tiny Wan2.1 folder and small real .vov files of it, made once per test process, for the editing
tests (the method's, the command's and the services')."""

from __future__ import annotations

import os

import numpy as np

from vov import codec
from vov.backbones import testing
from vov.limits import Limits
from vov.media import Picture
from vov.method.adapters import AdapterSpec
from vov.method.fit import FitConfig

_made: dict = {}


def wan_backbone(tmp_path_factory):
    """(folder, backbone): the tiny Wan folder and its backbone, loaded as `vov --model FOLDER` loads it
    (so the command finds it already loaded). Digests are cached under the test session's folder."""
    if "wan" not in _made:
        os.environ.setdefault("VOV_CACHE_DIR", str(tmp_path_factory.mktemp("vov-cache")))
        folder = testing.write_wan_folder(tmp_path_factory.mktemp("wan-edit") / "Wan2.1-T2V-tiny-Diffusers", seed=0)
        _made["wan"] = (str(folder), codec.get_backbone("wan", str(folder)))
    return _made["wan"]


def picture(seed: int = 0, height: int = 32, width: int = 48) -> Picture:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([0.5 + 0.4 * np.sin(x / (3 + seed)), y / height, 0.5 + 0.3 * np.cos((x + y) / 7 + seed)], -1)
    return Picture(img.astype(np.float32))


def clip(seed: int = 0, frames: int = 9, height: int = 32, width: int = 48):
    """A small moving pattern as a vov.media.Clip."""
    from vov.media import Clip

    t = np.arange(frames, dtype=np.float32)[:, None, None]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 0.5 + 0.4 * np.sin((x + 2 * t) / (3 + seed))
    g = np.broadcast_to(y / height, r.shape)
    b = 0.5 + 0.3 * np.cos((x + y - t) / 7 + seed)
    return Clip(np.stack([r, g, b], -1).astype(np.float32), fps=(25, 1))


def options(seed: int = 0, caption: str = "a red cat", rank: int = 1, steps: int = 4) -> codec.EncodeOptions:
    return codec.EncodeOptions(backbone="wan", adapter=AdapterSpec(rank=rank, d=256, seed=seed),
                               fit=FitConfig(steps=6, lam=0.01, seed=seed), target_bpp=None, sampler_steps=steps,
                               noise_seed=seed, caption=caption)


def wan_file(backbone, seed: int = 0, caption: str = "a red cat", rank: int = 1) -> bytes:
    key = ("file", seed, caption, rank)
    if key not in _made:
        _made[key] = codec.compress(picture(seed), options(seed, caption, rank), backbone=backbone).data
    return _made[key]


CLIP_LIMITS = Limits(max_clip_pixels=5 * 32 * 48)  # 9 frames in two clips: 5 and 4


def wan_video(backbone, seed: int = 0) -> bytes:
    key = ("video", seed)
    if key not in _made:
        _made[key] = codec.compress(clip(seed), options(seed, rank=1, steps=3), backbone=backbone,
                                    limits=CLIP_LIMITS).data
    return _made[key]
