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
        dots, squares = scorer.scores(9, 2, 7, w, squares=True, scale=scale)
    for j in range(7):
        z = patchwork(9, 2, np.full(grid.count, j), grid, shape)[0].double().numpy() * scale
        for k in range(grid.count):
            ys, xs = grid.slices(k)
            assert dots[j, k] == pytest.approx(float((z[:, :, ys, xs] * w[:, :, ys, xs]).sum()), rel=1e-12)
            assert squares[j, k] == pytest.approx(float((z[:, :, ys, xs] ** 2).sum()), rel=1e-12)


# ---- the search and its replay, per tile

from vov.method import sampler, scaling  # noqa: E402
from vov.method.adapters import AdaptedDenoiser, AdapterSpec  # noqa: E402
from vov.method.scaling import ScalingConfig, decode_indices, encode_indices, replay, search  # noqa: E402


@pytest.fixture(scope="module")
def problem(tiny_backbone):
    adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=2, d=512))
    adapter.set_theta(torch.randn(512, generator=torch.Generator().manual_seed(0)) * 0.05)
    adapter.eval()
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    pixels = torch.from_numpy(np.stack([x / 64, y / 48, 0.3 + 0.4 * np.sin(x / 5)]))[None, :, None]
    with torch.no_grad():
        x0 = tiny_backbone.encode(pixels).float()
    return sampler.torch_velocity(adapter), x0


@pytest.mark.parametrize("selection", scaling.SELECTIONS)
def test_a_tiled_search_replays_exactly(problem, selection):
    velocity, x0 = problem
    shape = tuple(x0.shape)  # a 6 x 8 latent: tiles of 3 make a 2 x 3 grid
    config = ScalingConfig(steps=5, candidates=8, selection=selection, tile=3, chunk=3)
    records = []
    indices, latents = search(velocity, x0, shape, 5, config, records=records)
    assert indices.shape == (4, 6) == config.index_shape(shape) and indices.dtype == np.uint32
    assert all(len(r.index) == 6 for r in records)
    assert torch.equal(replay(velocity, shape, 5, config, indices), latents)
    coded = encode_indices(indices, 8)
    assert len(coded) == config.index_bytes(shape) == 9  # 24 indices of 3 bits
    again = decode_indices(coded, config.index_count(shape), 8).reshape(config.index_shape(shape))
    assert torch.equal(replay(velocity, shape, 5, config, again), latents)


def test_tiles_choose_on_their_own_and_move_toward_x0(problem):
    velocity, x0 = problem
    shape = tuple(x0.shape)
    tiled = ScalingConfig(steps=8, candidates=16, selection="distance", tile=2)
    indices, searched = search(velocity, x0, shape, 5, tiled)
    assert len({tuple(row) for row in indices.T}) > 1  # the tiles did not all take the same candidates
    plain = scaling.sample_sde(velocity, shape, 5, tiled)
    single = search(velocity, x0, shape, 5, ScalingConfig(steps=8, candidates=16, selection="distance"))[1]
    error = {name: float((x - x0).pow(2).mean()) for name, x in (("plain", plain), ("one", single), ("tiled", searched))}
    assert error["tiled"] < error["one"] < error["plain"]


def test_replay_refuses_indices_of_another_grid(problem):
    velocity, x0 = problem
    shape = tuple(x0.shape)
    config = ScalingConfig(steps=3, candidates=4, tile=4)  # a 2 x 2 grid
    with pytest.raises(ValueError, match="shape"):
        replay(velocity, shape, 5, config, np.zeros((2, 6), dtype=np.uint32))
    with pytest.raises(ValueError, match="at most"):  # 64 x 96 tiles of one cell
        ScalingConfig(steps=3, candidates=4, tile=1).index_shape((1, 16, 1, 64, 96))
