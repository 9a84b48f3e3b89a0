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


def test_best_of_alone_chooses_n_k_and_tiles_for_the_image_and_rate(photo, tmp_path, capsys):
    from vov.format import bitstream
    from vov.method.scaling import SEARCH_CANDIDATES

    out = tmp_path / "chosen.vov"
    fast = [a for a in FAST if a != "-q"]
    assert cli.main(["compress", str(photo), "-o", str(out), "--bpp", "3", "--best-of", *fast]) == 0
    said = capsys.readouterr().out
    f = bitstream.load(out.read_bytes())
    rows, cols, steps = f.tile_rows, f.tile_cols, f.sampler_steps
    assert 1 << f.search_bits == SEARCH_CANDIDATES and f.search_tile > 0 and steps >= 2
    index_bits = (steps - 1) * rows * cols * f.search_bits
    assert f"best-of-N indices {index_bits} bits" in said
    assert index_bits <= 0.5 * 3 * 96 * 128  # about half the file at most
