import numpy as np
import pytest
import torch

from vov.backbones.embedded import tiny
from vov.media import Picture

torch.set_num_threads(2)


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

