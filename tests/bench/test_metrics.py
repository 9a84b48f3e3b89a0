import math

import numpy as np
import pytest
import torch

from vov.bench import metrics
from vov.errors import UsageError


def photo_like(h=64, w=80, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([128 + 80 * np.sin(x / 7), 128 + 80 * np.cos(y / 5), 100 + 0.8 * x], -1)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def noisy(img, sigma, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(img.astype(np.float64) + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def test_psnr_by_hand():
    a = np.zeros((8, 8, 3), np.uint8)
    b = np.full((8, 8, 3), 5, np.uint8)
    # MSE = 25, PSNR = 10 log10(255^2 / 25) = 10 log10(2601)
    assert metrics.psnr(a, b) == pytest.approx(34.1514, abs=1e-4)
    c = a.copy()
    c[0, 0, 0] = 10  # MSE = 100 / 192
    assert metrics.psnr(a, c) == pytest.approx(10 * math.log10(65025 * 192 / 100), abs=1e-9)
    assert metrics.psnr(a, a) == metrics.PSNR_CAP


def test_float_inputs_are_rounded_to_8_bits():
    a = photo_like()
    assert metrics.psnr(a, a.astype(np.float32) / 255) == metrics.PSNR_CAP


def test_size_mismatch_is_a_usage_error():
    with pytest.raises(UsageError, match="differ in size"):
        metrics.psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8))


@pytest.mark.parametrize("shape", [(200, 240), (64, 80), (40, 56), (16, 16)])
def test_ms_ssim_identical_is_one(shape):
    a = photo_like(*shape)
    assert metrics.ms_ssim(a, a) == pytest.approx(1.0, abs=1e-6)


def test_ms_ssim_scales_follow_size():
    assert metrics.ms_ssim_scales(512, 768) == 5
    assert metrics.ms_ssim_scales(161, 400) == 5
    assert metrics.ms_ssim_scales(160, 400) == 4
    assert metrics.ms_ssim_scales(40, 56) == 2
    assert metrics.ms_ssim_scales(16, 16) == 1


def test_reduced_ms_ssim_matches_the_package_at_five_scales():
    from pytorch_msssim import ms_ssim

    a, b = photo_like(200, 240), noisy(photo_like(200, 240), 20)
    x, y = metrics._tensor(a), metrics._tensor(b)
    ours = metrics._ms_ssim_reduced(x, y, 5)
    # the five standard weights sum to 1.0001; the reduced path renormalises them to 1
    assert ours == pytest.approx(float(ms_ssim(x, y, data_range=1.0)), abs=1e-4)


@pytest.mark.parametrize("shape", [(200, 240), (48, 64)])
def test_quality_metrics_are_monotone_in_noise(shape):
    a = photo_like(*shape)
    sigmas = [2, 8, 20, 50]
    ms = [metrics.ms_ssim(a, noisy(a, s)) for s in sigmas]
    gm = [metrics.gmsd(a, noisy(a, s)) for s in sigmas]
    ps = [metrics.psnr(a, noisy(a, s)) for s in sigmas]
    assert all(x > y for x, y in zip(ms, ms[1:])), ms
    assert all(x < y for x, y in zip(gm, gm[1:])), gm
    assert all(x > y for x, y in zip(ps, ps[1:])), ps


def test_gmsd_identical_is_zero():
    a = photo_like()
    assert metrics.gmsd(a, a) == 0.0
    assert metrics.gmsd(a, noisy(a, 10)) > 0.0


def test_gmsd_of_flat_images_is_zero():
    flat = np.full((32, 32, 3), 90, np.uint8)
    assert metrics.gmsd(flat, np.full((32, 32, 3), 120, np.uint8)) == pytest.approx(0.0, abs=1e-12)


# ---- networks with random weights, saved in the layouts users have


def _positive_lins(model):
    for lin in model.lins:
        lin.weight.data.uniform_(0.01, 1.0)


def _lpips_package_layout(model: metrics.LPIPS) -> dict:
    """Keys as the lpips package's LPIPS module has them: net.sliceK.N.*, linK.model.1.weight."""
    cuts = {"alex": [(0, 2), (2, 5), (5, 8), (8, 10), (10, 12)],
            "vgg": [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]}[model.net_name]
    state = {}
    for key, value in model.net.state_dict().items():
        index = int(key.split(".")[1])
        k = next(i for i, (lo, hi) in enumerate(cuts) if lo <= index < hi)
        state[f"net.slice{k + 1}.{index}.{key.split('.')[2]}"] = value.clone()
    for i, lin in enumerate(model.lins):
        state[f"lin{i}.model.1.weight"] = lin.weight.detach().clone()
    state["scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)  # present in real files, ignored
    return state


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_with_random_weights(tmp_path, net):
    torch.manual_seed(0)
    source = metrics.LPIPS(net)
    _positive_lins(source)
    path = tmp_path / "lpips.pth"
    torch.save(_lpips_package_layout(source), path)
    model = metrics.LPIPS.from_file(str(path), net)
    a = photo_like(64, 64)
    assert model.score(a, a) == pytest.approx(0.0, abs=1e-7)
    near, far = model.score(a, noisy(a, 5)), model.score(a, noisy(a, 60))
    assert 0 < near < far
    x, y = metrics._tensor(a), metrics._tensor(noisy(a, 60))
    with torch.no_grad():
        assert float(source(x, y)[0]) == pytest.approx(far, rel=1e-5)


def test_lpips_from_torchvision_and_linear_files(tmp_path):
    torch.manual_seed(1)
    source = metrics.LPIPS("alex")
    _positive_lins(source)
    trunk = tmp_path / "alexnet.pth"
    lins = tmp_path / "alex_lin.pth"
    torch.save({**source.net.state_dict(), "classifier.1.weight": torch.zeros(2, 2)}, trunk)
    torch.save({f"lin{i}.model.1.weight": lin.weight.detach() for i, lin in enumerate(source.lins)}, lins)
    model = metrics.LPIPS.from_file(f"{trunk},{lins}")
    a = photo_like(64, 64)
    assert model.score(a, noisy(a, 30)) == pytest.approx(source.score(a, noisy(a, 30)), rel=1e-6)


def test_dists_with_random_weights(tmp_path):
    torch.manual_seed(0)
    source = metrics.DISTS()
    source.alpha.data.uniform_(0.01, 1.0)
    source.beta.data.uniform_(0.01, 1.0)
    trunk, ab = tmp_path / "vgg16.pth", tmp_path / "weights.pt"
    torch.save(source.net.state_dict(), trunk)
    torch.save({"alpha": source.alpha.detach(), "beta": source.beta.detach()}, ab)
    model = metrics.DISTS.from_file(f"{trunk},{ab}")
    a = photo_like(64, 64)
    assert model.score(a, a) == pytest.approx(0.0, abs=1e-5)
    near, far = model.score(a, noisy(a, 5)), model.score(a, noisy(a, 60))
    assert 0 < near < far < 1


def test_dists_from_stage_layout_safetensors(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(2)
    source = metrics.DISTS()
    cuts = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]
    state = {}
    for key, value in source.net.state_dict().items():
        index = int(key.split(".")[1])
        k = next(i for i, (lo, hi) in enumerate(cuts) if lo <= index < hi)
        state[f"stage{k + 1}.{index}.{key.split('.')[2]}"] = value.contiguous()
    state["alpha"], state["beta"] = source.alpha.detach().contiguous(), source.beta.detach().contiguous()
    path = tmp_path / "dists.safetensors"
    save_file(state, str(path))
    model = metrics.DISTS.from_file(str(path))
    a = photo_like(48, 48)
    assert model.score(a, noisy(a, 20)) == pytest.approx(source.score(a, noisy(a, 20)), rel=1e-6)


def test_missing_weights_name_the_file_to_provide(tmp_path):
    with pytest.raises(UsageError, match=r"nowhere\.pth not found; provide .*alexnet"):
        metrics.LPIPS.from_file(str(tmp_path / "nowhere.pth"))
    with pytest.raises(UsageError, match=r"DISTS: weights file .* not found; provide .*vgg16.*weights\.pt"):
        metrics.MetricSuite(dists_weights=str(tmp_path / "dists.pt"))


def test_incomplete_or_foreign_weights_are_usage_errors(tmp_path):
    partial = tmp_path / "partial.pth"
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, partial)
    with pytest.raises(UsageError, match="lack"):
        metrics.LPIPS.from_file(str(partial))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="cannot read weights"):
        metrics.DISTS.from_file(str(junk))
    wrong = tmp_path / "wrong.pth"
    state = metrics.DISTS().state_dict()
    state = {("net." + k if not k.startswith("net.") else k)[4:]: v for k, v in state.items()}
    state["alpha"] = torch.zeros(1, 10, 1, 1)
    torch.save(state, wrong)
    with pytest.raises(UsageError, match="shape"):
        metrics.DISTS.from_file(str(wrong))


def test_suite_lists_and_computes_its_metrics():
    suite = metrics.MetricSuite()
    assert suite.names == ["psnr-rgb", "ms-ssim", "gmsd"]
    a = photo_like()
    values = suite.compute(a, noisy(a, 10))
    assert set(values) == set(suite.names)
    assert suite.compute(a, a, only=["gmsd"]) == {"gmsd": 0.0}
