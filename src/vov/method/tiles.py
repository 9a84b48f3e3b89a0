"""Best-of-N per tile: at each searched step every tile of the latent keeps its own best candidate.

One index a step steers the whole latent, however large the image; per tile, the selection's
information grows with the image as its cost in bits does. The latent's rows and columns are cut
into a grid of `tile` x `tile` cells (edge tiles are smaller; a tile spans every channel and every
latent frame of a clip), and at each stochastic step the noise is a patchwork: tile k takes the
noise of its own chosen candidate.

Noise. A tile's candidate noise is its own portable stream (vov.method.noise, purpose
TILE_CANDIDATE, key candidate field `tile << 16 | candidate`), its numbers in (channel, frame, row,
column) order. The decoder therefore draws one latent's worth of noise a step whatever the number
of tiles, and the encoder N latents' worth, as with one index a step.

Scores. Every selection rule of vov.method.scaling is a sum over latent numbers, so a candidate's
score splits into per-tile sums computed in the same pass over its noise: one model evaluation a
step for all candidates of all tiles, and each tile's argmin taken on its own sums. Memory beyond
the model: a worker holds one tile's noise at a time (about 40 bytes a number), the step holds its
float64 offset and weight vectors (16 bytes a latent number) and the scores (16 bytes per candidate
and tile).

Indices are i.i.d. uniform for the same reason as one index a step (the candidates of a tile are
i.i.d. given the past and every rule treats them alike); they are packed at log2 N bits each, step
by step, tiles in row-major order (`vov.method.scaling.encode_indices`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vov.method import noise
from vov.method.workers import ChunkedWorkers

MAX_TILES = 256  # the noise key holds the tile in 8 bits
MIN_TILE = 1


@dataclass(frozen=True)
class TileGrid:
    """The tiles of a latent of `height` x `width` cells, `tile` cells a side."""

    height: int
    width: int
    tile: int

    def __post_init__(self):
        if self.tile < MIN_TILE or self.height < 1 or self.width < 1:
            raise ValueError(f"a tile grid needs positive sizes, got {self.height}x{self.width} by {self.tile}")
        if self.count > MAX_TILES:
            raise ValueError(f"{self.count} tiles of {self.tile} cells on a {self.height}x{self.width} latent: "
                             f"at most {MAX_TILES}")

    @classmethod
    def for_shape(cls, shape: tuple[int, ...], tile: int) -> "TileGrid":
        return cls(int(shape[-2]), int(shape[-1]), int(tile))

    @property
    def rows(self) -> int:
        return -(-self.height // self.tile)

    @property
    def cols(self) -> int:
        return -(-self.width // self.tile)

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def slices(self, k: int) -> tuple[slice, slice]:
        r, c = divmod(k, self.cols)
        return (slice(r * self.tile, min(self.height, (r + 1) * self.tile)),
                slice(c * self.tile, min(self.width, (c + 1) * self.tile)))


def max_tiles_fit(height: int, width: int) -> int:
    """The smallest tile side (cells) whose grid on a latent of this size has at most MAX_TILES tiles."""
    tile = 1
    while -(-height // tile) * -(-width // tile) > MAX_TILES:
        tile += 1
    return tile


def tile_noise(seed: int, step: int, candidate: int, tile: int, shape: tuple[int, ...]) -> np.ndarray:
    """Candidate `candidate`'s noise for tile `tile` of step `step`, float32 of `shape` (C, F, rows, cols)."""
    count = int(np.prod(shape))
    return noise.normals(count, seed, noise.TILE_CANDIDATE, step, (tile << 16) | candidate).reshape(shape)


def patchwork(seed: int, step: int, indices: np.ndarray, grid: TileGrid, shape: tuple[int, ...],
              device: torch.device | str | None = None) -> torch.Tensor:
    """The step's noise: every tile's chosen candidate, on a latent of `shape` (1, C, F, h, w)."""
    z = torch.empty(shape)
    for k in range(grid.count):
        ys, xs = grid.slices(k)
        part = z[0, :, :, ys, xs]
        part.copy_(torch.from_numpy(tile_noise(seed, step, int(indices[k]), k, tuple(part.shape))))
    return z if device is None else z.to(device)


class TileScorer(ChunkedWorkers):
    """Per-tile sums of every candidate of a step: dots[j, k] = y_jk . w_k and squares[j, k] = |y_jk|^2,
    with y_jk = scale_k * z_jk, computed over worker threads in chunks of candidates."""

    def __init__(self, grid: TileGrid, shape: tuple[int, ...], threads: int = 1, chunk: int = 64):
        super().__init__(threads, chunk)
        self.grid, self.shape = grid, tuple(shape)

    def _tiles(self, vector: np.ndarray | None) -> list[np.ndarray | None]:
        if vector is None:
            return [None] * self.grid.count
        full = np.asarray(vector, dtype=np.float64).reshape(self.shape[1:])
        return [np.ascontiguousarray(full[:, :, ys, xs]).ravel() for ys, xs in map(self.grid.slices, range(self.grid.count))]

    def scores(self, seed: int, step: int, n: int, w: np.ndarray, squares: bool = False,
               scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        ws, scales = self._tiles(w), self._tiles(scale)
        shapes = [(self.shape[1], self.shape[2], ys.stop - ys.start, xs.stop - xs.start)
                  for ys, xs in map(self.grid.slices, range(self.grid.count))]
        dots = np.empty((n, self.grid.count))
        sq = np.empty((n, self.grid.count)) if squares else None

        def work(a: int, b: int) -> None:
            for j in range(a, b):
                for k in range(self.grid.count):
                    y = tile_noise(seed, step, j, k, shapes[k]).ravel().astype(np.float64)
                    if scales[k] is not None:
                        y *= scales[k]
                    dots[j, k] = np.einsum("i,i->", y, ws[k])  # numpy's own loop: BLAS would serialise workers
                    if sq is not None:
                        sq[j, k] = np.einsum("i,i->", y, y)

        self.run(n, work)
        return dots, sq

