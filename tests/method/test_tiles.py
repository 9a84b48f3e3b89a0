"""Per-tile candidates: the grid, the noise streams and the per-tile sums of the scorer."""

import numpy as np
import pytest
import torch

from vov.method import noise
from vov.method.tiles import MAX_TILES, TileGrid, TileScorer, max_tiles_fit, patchwork, tile_noise


def test_grid_covers_the_latent_once():
    grid = TileGrid(10, 13, 4)
    assert (grid.rows, grid.cols, grid.count) == (3, 4, 12)
    seen = np.zeros((10, 13), dtype=int)
    for k in range(grid.count):
        ys, xs = grid.slices(k)
        seen[ys, xs] += 1
    assert (seen == 1).all()


def test_grid_bounds():
    with pytest.raises(ValueError, match="at most"):
        TileGrid(64, 96, 2)  # 32 x 48 tiles
    with pytest.raises(ValueError):
        TileGrid(8, 8, 0)
    tile = max_tiles_fit(136, 240)
    assert TileGrid(136, 240, tile).count <= MAX_TILES
    assert -(-136 // (tile - 1)) * -(-240 // (tile - 1)) > MAX_TILES


def test_tile_streams_are_their_own():
    a = tile_noise(7, 3, 5, 2, (2, 1, 4, 4))
    assert a.dtype == np.float32 and a.shape == (2, 1, 4, 4)
    assert np.array_equal(a.ravel(), noise.normals(32, 7, noise.TILE_CANDIDATE, 3, (2 << 16) | 5))
    assert not np.array_equal(a, tile_noise(7, 3, 5, 1, (2, 1, 4, 4)))
    assert not np.array_equal(a, tile_noise(7, 3, 4, 2, (2, 1, 4, 4)))


def test_patchwork_takes_each_tile_from_its_candidate():
    grid, shape = TileGrid(6, 7, 4), (1, 3, 2, 6, 7)
    indices = np.array([3, 0, 1, 2])
    z = patchwork(11, 4, indices, grid, shape)
    for k in range(grid.count):
        ys, xs = grid.slices(k)
        part = z[0, :, :, ys, xs]
        assert torch.equal(part, torch.from_numpy(tile_noise(11, 4, int(indices[k]), k, tuple(part.shape))))


@pytest.mark.parametrize("threads", [1, 3])
def test_scorer_sums_match_brute_force(threads):
    grid, shape = TileGrid(5, 6, 3), (1, 2, 1, 5, 6)
    rng = np.random.default_rng(0)
    w, scale = rng.normal(size=shape[1:]), rng.uniform(0.5, 2, size=shape[1:])
    with TileScorer(grid, shape, threads=threads, chunk=3) as scorer:
        dots, squares = scorer.scores(9, 2, 7, w, scale, squares=True)
    for j in range(7):
        z = patchwork(9, 2, np.full(grid.count, j), grid, shape)[0].double().numpy() * scale
        for k in range(grid.count):
            ys, xs = grid.slices(k)
            assert dots[j, k] == pytest.approx(float((z[:, :, ys, xs] * w[:, :, ys, xs]).sum()), rel=1e-12)
            assert squares[j, k] == pytest.approx(float((z[:, :, ys, xs] ** 2).sum()), rel=1e-12)
