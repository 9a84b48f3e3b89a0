"""FVD: the I3D code path with random weights, the Fréchet distance against closed forms, and errors."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vov.errors import UsageError
from vov.bench.fvd import FVD, I3D, frechet_distance


def test_frechet_distance_of_shifted_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    b = a + np.array([1.0, 2.0, 0.0])
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) == pytest.approx(5.0, rel=1e-6)  # same covariance: |mu_a - mu_b|^2
    c = a * 2.0  # covariances I and 4I: trace(I + 4I - 2 * 2I) = 3
    assert frechet_distance(a, c) == pytest.approx(3.0, rel=0.05)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("i3d") / "i3d_random.safetensors"
    net = I3D()
    for m in net.modules():  # give BatchNorm non-trivial statistics, as trained weights have
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def clips(seed: int, count: int, noise: float = 0.0):
    rng = np.random.default_rng(seed)
    t, y, x = np.mgrid[0:9, 0:64, 0:80].astype(np.float32)
    out = []
    for i in range(count):
        base = np.stack([np.sin((x + 3 * t) / (6 + i)), np.cos((y - 2 * t) / (5 + i)), np.sin((x + y) / 11)], -1)
        out.append(np.clip(0.5 + 0.4 * base + noise * rng.normal(size=base.shape), 0, 1).astype(np.float32))
    return out


def test_fvd_code_path_with_random_weights(random_weights):
    fvd = FVD(random_weights)
    reference = clips(0, 4)
    assert fvd(reference, reference) == pytest.approx(0.0, abs=1e-3)
    slightly, badly = fvd(reference, clips(1, 4, 0.05)), fvd(reference, clips(1, 4, 0.4))
    assert 0 < slightly < badly


def test_fvd_input_checks(random_weights):
    fvd = FVD(random_weights)
    with pytest.raises(UsageError, match="frames >= 9"):
        fvd.features([np.zeros((4, 32, 32, 3), np.uint8)])
    with pytest.raises(UsageError, match="two clips"):
        fvd(clips(0, 1), clips(0, 1))


def test_missing_weights_name_the_file_to_provide(tmp_path):
    with pytest.raises(UsageError, match="I3D weights"):
        FVD(tmp_path / "absent.safetensors")
    save_file({"logits.conv3d.bias": torch.zeros(400)}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(UsageError, match="lack"):
        FVD(tmp_path / "partial.safetensors")
