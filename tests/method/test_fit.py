"""Fit checkpoints are data, never code: safetensors plus a JSON header, checked against the fit."""

import os
import pickle

import numpy as np
import pytest
from fast_options import fast_options

from vov import codec
from vov.errors import UsageError


class Planted:
    """Unpickling this would run code (it creates a file): a checkpoint reader must never do it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_planted_pickle_is_refused_and_never_run(tiny_backbone, smooth_picture, tmp_path):
    checkpoint, marker = tmp_path / "x.vov.partial", tmp_path / "ran"
    checkpoint.write_bytes(pickle.dumps({"key": "x", "payload": Planted(str(marker))}))
    with pytest.raises(UsageError, match="not a usable fit checkpoint"):
        codec.compress(smooth_picture, fast_options(), backbone=tiny_backbone, checkpoint=str(checkpoint))
    assert not marker.exists()
    assert checkpoint.exists()  # left for the person to look at, not overwritten


def test_a_checkpoint_of_another_compress_is_refused(tiny_backbone, smooth_picture, tmp_path):
    checkpoint = tmp_path / "x.vov.partial"

    class Stop(Exception):
        pass

    def interrupt(p):
        if p.step == 6:
            raise Stop

    with pytest.raises(Stop):
        codec.compress(smooth_picture, fast_options(steps=20), backbone=tiny_backbone, on_progress=interrupt,
                       checkpoint=str(checkpoint), checkpoint_every=5)
    other = smooth_picture.__class__(np.ascontiguousarray(smooth_picture.pixels[::-1]))
    with pytest.raises(UsageError, match="another compress"):
        codec.compress(other, fast_options(steps=20), backbone=tiny_backbone, checkpoint=str(checkpoint))
    before = checkpoint.read_bytes()
    tampered = bytearray(before)
    tampered[-8:] = b"\xff" * 8  # inside the tensors' data: shapes still parse, values differ
    checkpoint.write_bytes(bytes(tampered))
    resumed = codec.compress(smooth_picture, fast_options(steps=20), backbone=tiny_backbone, checkpoint=str(checkpoint))
    assert resumed.data and not os.path.exists(checkpoint)  # data, not code: a tampered value is just a value
