"""Tiny Wan2.1 and Qwen-Image folders in the real layout, their backbones, and their exports (once per
session): the serving tests run the real models' classes with random weights."""


import numpy as np
import pytest

from vov.backbones import testing


@pytest.fixture(scope="session")
def wan_backbone(tmp_path_factory):
    from vov import backbones

    folder = testing.write_wan_folder(tmp_path_factory.mktemp("wan") / "Wan2.1-T2V-tiny-Diffusers", seed=0)
    return backbones.load("wan", str(folder), device="cpu")


@pytest.fixture(scope="session")
def image_backbone(tmp_path_factory):
    from vov import backbones

    folder = testing.write_qwen_image_folder(tmp_path_factory.mktemp("qwen") / "Qwen-Image-tiny", seed=0)
    return backbones.load("image", str(folder), device="cpu")


@pytest.fixture(scope="session")
def wan_repository(tmp_path_factory, wan_backbone):
    from vov.serving.repository import export_repository

    repo = tmp_path_factory.mktemp("wan-repository")
    export_repository(wan_backbone, repo, max_rank=4, log=lambda m: None)
    return repo


@pytest.fixture(scope="session")
def image_repository(tmp_path_factory, image_backbone):
    from vov.serving.repository import export_repository

    repo = tmp_path_factory.mktemp("image-repository")
    export_repository(image_backbone, repo, max_rank=4, log=lambda m: None)
    return repo


def small_picture(seed: int = 0, height: int = 32, width: int = 48):
    from vov.media import Picture

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([0.5 + 0.4 * np.sin(x / (3 + seed)), y / height, 0.5 + 0.3 * np.cos((x + y) / 7 + seed)], -1)
    return Picture(img.astype(np.float32))


def small_file(backbone, seed: int = 0, caption: str = "a red cat", steps: int = 5, rank: int = 1) -> bytes:
    """A real .vov file of the tiny backbone: a short fit, a few sampler steps, with a caption."""
    from vov import codec
    from vov.method.adapters import AdapterSpec
    from vov.method.fit import FitConfig

    options = codec.EncodeOptions(backbone=backbone.name, adapter=AdapterSpec(rank=rank, d=192 + 64 * seed, seed=seed),
                            fit=FitConfig(steps=6, lam=0.01, seed=seed), target_bpp=None, sampler_steps=steps,
                            noise_seed=seed, caption=caption)
    return codec.compress(small_picture(seed), options, backbone=backbone).data


@pytest.fixture(scope="session")
def wan_files(wan_backbone):
    return [small_file(wan_backbone, 0), small_file(wan_backbone, 1, caption="", rank=2)]


@pytest.fixture(scope="session")
def image_files(image_backbone):
    return [small_file(image_backbone, 0), small_file(image_backbone, 1, caption="a dog in the city", rank=2)]
