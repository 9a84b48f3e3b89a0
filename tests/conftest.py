import os

import numpy as np
import pytest
import torch

from vov.backbones.embedded import tiny
from vov.media import Picture

torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def private_digest_cache(tmp_path_factory):
    """File digests are cached under the test session's own folder, not the user's ~/.cache."""
    before = os.environ.get("VOV_CACHE_DIR")
    os.environ["VOV_CACHE_DIR"] = str(tmp_path_factory.mktemp("vov-cache"))
    yield
    if before is None:
        os.environ.pop("VOV_CACHE_DIR", None)
    else:
        os.environ["VOV_CACHE_DIR"] = before


@pytest.fixture(scope="session")
def tiny_backbone():
    return tiny()


@pytest.fixture
def smooth_picture():
    """A 40x56 picture with structure (gradients and a disc), deterministic."""
    y, x = np.mgrid[0:40, 0:56].astype(np.float32)
    disc = ((y - 20) ** 2 + (x - 30) ** 2 < 100).astype(np.float32)
    img = np.stack([x / 56, y / 40, 0.3 + 0.5 * disc], axis=-1)
    return Picture(img.astype(np.float32))

