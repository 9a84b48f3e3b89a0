"""`vov train-base` with a small model on two photos: weights that load as a backbone, and a run
stopped and resumed that ends exactly where an uninterrupted one does."""

import pytest
import torch
from safetensors.torch import load_file

from vov.backbones.embedded import TAEF2, FlowConfig, load_file as load_backbone
from vov.train.base import TrainConfig, train
from vov.train.pack import build_pack

SMALL_MODEL = FlowConfig(latent_channels=32, heads=2, head_dim=16, layers=2, ffn_dim=64, text_dim=8, freq_dim=32,
                         autoencoder=TAEF2)
SMALL = TrainConfig(steps=6, batch=2, warmup=2, cooldown=2, clip_every=3, scales=(256,), checkpoint_every=2)


@pytest.fixture(scope="module")
def pack(photo_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("pack") / "photos.pack"
    build_pack(photo_set, out, long_side=256, progress=False)
    return out


def test_resumed_training_matches_an_uninterrupted_run(pack, tmp_path):
    straight = train(tmp_path / "straight", pack, SMALL, SMALL_MODEL, progress=False)
    assert train(tmp_path / "resumed", pack, SMALL, SMALL_MODEL, stop_at=3, progress=False) is None
    resumed = train(tmp_path / "resumed", pack, SMALL, SMALL_MODEL, progress=False)
    a, b = load_file(straight), load_file(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    backbone = load_backbone(straight)
    assert backbone.name == "embedded" and backbone.config == SMALL_MODEL
    pixels = torch.rand(1, 3, 1, 64, 64)
    assert backbone.decode(backbone.encode(pixels)).shape == pixels.shape
    # step, smoothed loss, device, seconds: a line every 50 steps and at every stop
    assert [line.split()[0] for line in (tmp_path / "resumed" / "train.log").read_text().splitlines()] == ["3", "6"]


def test_a_checkpoint_of_another_model_is_refused(pack, tmp_path):
    from vov.errors import UsageError

    train(tmp_path / "run", pack, SMALL, SMALL_MODEL, stop_at=2, progress=False)
    other = FlowConfig(latent_channels=32, heads=2, head_dim=16, layers=3, ffn_dim=64, text_dim=8, freq_dim=32,
                       autoencoder=TAEF2)
    with pytest.raises(UsageError, match="not a usable"):
        train(tmp_path / "run", pack, SMALL, other, progress=False)
