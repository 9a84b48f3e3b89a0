"""`vov compress` plans once, and carries best-of-N tiles into a file `vov info` shows."""

import numpy as np
import pytest
from PIL import Image

from vov import cli, codec

FAST = ["--backbone", "tiny", "--steps", "4", "--sampler-steps", "3", "--dim", "256", "--rank", "2", "-q"]


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(path)
    return path


def test_a_compress_plans_once(photo, tmp_path, monkeypatch, capsys):
    calls = []
    real = codec.plan

    def counted(*args, **named):
        calls.append(named.get("rate"))
        return real(*args, **named)

    monkeypatch.setattr(codec, "plan", counted)
    assert cli.main(["compress", str(photo), "-o", str(tmp_path / "x.vov"), *FAST]) == 0
    assert len(calls) == 1 and calls[0].kind == "default"


def test_best_of_tile_reaches_the_file(photo, tmp_path, capsys):
    out = tmp_path / "tiled.vov"
    assert cli.main(["compress", str(photo), "-o", str(out), "--bpp", "3", "--best-of", "4", "--scaling-steps", "4",
                     "--best-of-tile", "8", *FAST]) == 0
    capsys.readouterr()
    assert cli.main(["info", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "format      2.1" in shown
    assert "tiles       2 x 2 tiles of 8 x 8 latent cells" in shown
