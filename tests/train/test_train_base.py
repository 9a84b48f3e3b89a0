"""`vov train-base` on two of scikit-image's bundled photos with the tiny config: weights that load,
and a resumed run that ends exactly where an uninterrupted one does."""

import pytest
import torch
from safetensors.torch import load_file

from vov.backbones.embedded import TINY, load_file as load_backbone
from vov.train import data
from vov.train.base import train

pytest.importorskip("skimage")
PHOTOS = [p for p in data.catalogue() if p.name in ("astronaut", "coffee")]
SMALL = dict(config=TINY, batch=2, crop=64, clip_every=3, checkpoint_every=2, photos=PHOTOS)


@pytest.mark.slow
def test_resumed_training_matches_an_uninterrupted_run(tmp_path):
    straight = train(tmp_path / "straight", steps=6, **SMALL)
    train(tmp_path / "resumed", steps=4, **SMALL)  # stops after its checkpoint at step 4
    resumed = train(tmp_path / "resumed", steps=6, **SMALL)
    a, b = load_file(straight), load_file(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    backbone = load_backbone(straight)
    assert backbone.name == "embedded" and backbone.config == TINY
    assert (tmp_path / "straight" / "train.log").exists()


def test_held_out_photos_are_never_trained_on():
    trained = {p.name for p in data.training_photos()}
    assert not trained & set(data.HELD_OUT)
    assert {p.source for p in data.catalogue()} <= {*data.DEBIAN_PACKAGES, "scikit-image"}
