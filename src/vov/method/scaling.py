"""Inference-time scaling: best-of-N search in the encoder, replay in the decoder.

With the adapter fixed, the encoder spends compute for quality at a few bits. It decodes with a
stochastic sampler (the reverse SDE of vov.method.scheduler) and, at each stochastic step, draws N
candidate noises z_0 .. z_{N-1} from the portable generator (vov.method.noise, purpose CANDIDATE,
keyed by (noise_seed, step, candidate)), keeps the one whose step x' = mu_p + sigma z_j moves best
toward the known latents x0, and records its index. The decoder regenerates only the chosen noise
of each step, so a decode stays one model evaluation a step.

All N candidates of a step share one model evaluation: they differ only in z, and every selection
rule is a quadratic in z. With delta = mu_p - mu_q (the model's mean minus the ideal mean, which uses
the exact velocity toward x0):

    log q(x_j) - log p(x_j) = -z_j . delta / sigma - |delta|^2 / (2 sigma^2)

so a step costs one model call plus, per candidate, one noise draw and one or two dot products.
Selections:

  "greedy"    argmax_j log q - log p, i.e. argmax_j -z_j . delta;
  "gumbel"    argmax_j log q - log p + G_j, G_j standard Gumbel from a seeded generator (the paper's
              rule: the chosen x' is then approximately distributed as q);
  "nearest"   argmin_j |x_j - mu_q|_W^2 = |delta|_W^2 + 2 sigma z_j . W delta + sigma^2 |z_j|_W^2: unlike
              greedy it also prefers candidates that add little noise where W weighs most;
  "distance"  argmin_j |x_j - x0|_W^2;
  "outcome"   argmin_j |x_j - t' v - x0|_W^2: the candidate whose one-step prediction of the final
              latents (with this step's model velocity v, t' the step's end) lands nearest x0. It
              keeps the model's own direction and corrects the position, where mu_q would put x
              on the ideal straight path that the adapted model then leaves.

W is a diagonal weight (`search`'s `weights`, e.g. the backbone's per-channel weights that make latent
error track pixel error); without it the plain squared distance. Greedy and Gumbel keep the plain
log q - log p of the paper.

The indices are uniform and independent whatever the rule (the candidates of a step are i.i.d. given
the past, and each rule treats them symmetrically), so no model codes them below log2 N bits each:
they are packed at fixed width (`encode_indices`).

What the decoder needs (`ScalingConfig.decoder_fields`, by the file's names): the decode's steps
(`sampler_steps`), its time grid (`schedule`, `shift`), the noise scale (`g_kind`, `g_cap`), which
steps are stochastic (`sde_steps` steps from step `sde_start`; the final step is always
deterministic), `search_bits` = log2 N, the noise seed, and the packed indices. Selection rule,
chunk size, threads and the Gumbel seed are the encoder's alone.

Memory. Candidates are scored in chunks of `chunk`, split among `threads` workers; each worker draws
one candidate at a time into its own buffers (about 40 bytes per latent number: Philox words, float64
Box-Muller temporaries, the float32 row and its float64 copy), scores it and drops it. Beyond the
model's own use, a search holds at most `(threads * 40 + 32) * D + 16 * N` bytes (D latent numbers;
the 32 D hold the step's float64 vectors), however large N is (tests/method/test_scaling.py
measures it at N = 4096).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch

from vov.errors import BitstreamError
from vov.method import noise
from vov.method.sampler import Velocity, initial_noise
from vov.method.scheduler import NOISE_SCALES, SCHEDULES, NoiseScale, Scheduler
from vov.method.tiles import TileGrid, TileScorer, patchwork
from vov.method.workers import ChunkedWorkers

SELECTIONS = ("greedy", "gumbel", "nearest", "distance", "outcome")
WEIGHTED_SELECTIONS = ("nearest", "distance", "outcome")
MAX_SEARCH_BITS = 16  # N <= 65536 (the format's search_bits field)
WORKSPACE_BYTES_PER_NUMBER = 40  # a worker's buffers per latent number (module docstring)

_TWO_PI = 2.0 * np.pi


@dataclass(frozen=True)
class ScalingConfig:
    """A best-of-N decode: K = `steps` steps on the grid, of which `stochastic` steps from step
    `start` (None: every step but the last) are SDE steps searched over N = `candidates` noises.

    The defaults come from bench/scaling_eval.py on 256x256 crops of two held-out photos (plain files
    at 0.1 bpp from 400-step fits with half of the fit's noise fresh, FitConfig.path_share = 0.5;
    bench/results/scaling_explore_r*.json). At K = 250, N = 256 the "outcome" rule weighted by the
    embedded backbone's pixel weights gained 3.1 and 2.9 dB over plain files of the same total size,
    where Gumbel gained 1.2 and 1.5, greedy 1.0 and the unweighted outcome rule 1.1. Caps of 1, 2
    and 3 were within 0.3 dB of each other and 0.5 lost 1 dB; cap 1 is kept because the noise that
    selection does not steer costs less there (unselected, N = 1, cap 2 lost 0.7-1.3 dB more than
    cap 1). Searching every step but the last beat a window over either half. N = 16 gained about
    as much against its own equal-size plain file for half the index bits and a fifth of the
    search time, but 1 dB less in absolute quality than N = 256.
    """

    steps: int = 250
    candidates: int = 256
    g_cap: float = 1.0
    g_kind: int = 0
    stochastic: int | None = None
    start: int = 0
    schedule: int = 0
    shift: float = 1.0
    selection: str = "outcome"  # with the backbone's distortion_weights() as `search`'s weights
    tile: int = 0  # latent cells a tile side, each tile choosing its own candidate (vov.method.tiles); 0: one index a step
    chunk: int = 256
    threads: int | None = None  # noise workers of the search; None: torch's intra-op thread count
    gumbel_seed: int = 0

    def __post_init__(self):
        # the file holds g_cap and shift as float32: the encoder must search with the values the decoder reads
        for name in ("g_cap", "shift"):
            object.__setattr__(self, name, float(np.float32(getattr(self, name))))
        n = self.candidates
        if not (isinstance(n, int) and 1 <= n <= 1 << MAX_SEARCH_BITS and n & (n - 1) == 0):
            raise ValueError(f"candidates must be a power of two in 1..{1 << MAX_SEARCH_BITS}, got {n}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule}")
        if self.g_kind not in NOISE_SCALES:
            raise ValueError(f"unknown noise scale {self.g_kind}")
        if not (math.isfinite(self.g_cap) and self.g_cap > 0):
            raise ValueError(f"g_cap must be finite and > 0, got {self.g_cap}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}")
        if self.chunk < 1 or (self.threads is not None and self.threads < 1):
            raise ValueError("chunk and threads must be at least 1")
        if not (isinstance(self.tile, int) and 0 <= self.tile <= 255):
            raise ValueError(f"tile must be 0 (one index a step) or a side of 1..255 latent cells, got {self.tile}")
        self.scheduler()  # checks steps, shift and stochastic

    @property
    def search_bits(self) -> int:
        """log2 N: the bits of one index."""
        return self.candidates.bit_length() - 1

    @property
    def scaled_steps(self) -> int:
        """How many steps are stochastic, each with one index."""
        return self.steps - 1 - self.start if self.stochastic is None else self.stochastic

    def tiles(self, shape: tuple[int, ...]) -> int:
        """Indices a searched step takes on latents of `shape` (its last two axes are rows and columns)."""
        return TileGrid.for_shape(shape, self.tile).count if self.tile else 1

    def index_count(self, shape: tuple[int, ...]) -> int:
        return self.scaled_steps * self.tiles(shape)

    def index_bits(self, shape: tuple[int, ...]) -> int:
        return self.index_count(shape) * self.search_bits

    def index_bytes(self, shape: tuple[int, ...]) -> int:
        return index_bytes(self.index_count(shape), self.candidates)

    def index_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of a search's indices: one per stochastic step, or one per step and tile."""
        return (self.scaled_steps, self.tiles(shape)) if self.tile else (self.scaled_steps,)

    def scheduler(self) -> Scheduler:
        return Scheduler(self.steps, self.schedule, self.shift, NoiseScale(self.g_cap, self.g_kind), self.scaled_steps,
                         self.start)

    def decoder_fields(self) -> dict[str, int | float]:
        """What a file must carry for `replay` (besides the noise seed and the indices), by the names of
        its fields (vov.format.bitstream.VovFile): the one mapping between the two."""
        return {"sampler": 1, "sampler_steps": self.steps, "schedule": self.schedule, "shift": self.shift,
                "g_kind": self.g_kind, "g_cap": self.g_cap, "sde_steps": self.scaled_steps, "sde_start": self.start,
                "search_bits": self.search_bits, "search_tile": self.tile}

    @classmethod
    def from_decoder_fields(cls, fields: Mapping[str, int | float]) -> ScalingConfig:
        """The decoder's config from a file's fields (`decoder_fields`; a VovFile's `vars()`); ValueError
        for values out of range, or a file that asks for no search (sampler 0)."""
        if fields["sampler"] != 1:
            raise ValueError(f"sampler {fields['sampler']} is not the searched SDE (1)")
        bits = fields["search_bits"]
        if not (isinstance(bits, int) and 0 <= bits <= MAX_SEARCH_BITS):
            raise ValueError(f"search_bits must be in 0..{MAX_SEARCH_BITS}, got {bits}")
        return cls(steps=fields["sampler_steps"], candidates=1 << bits, g_cap=fields["g_cap"], g_kind=fields["g_kind"],
                   stochastic=fields["sde_steps"], start=fields["sde_start"], schedule=fields["schedule"],
                   shift=fields["shift"], tile=fields.get("search_tile", 0))


# ---- the search a file gets when its caller leaves N, K or T open --------------------------------
#
# Measured through the codec against plain files of the same total size (bench/scaling_table.py;
# docs/best-of-n.md, "Chosen for the image and the rate"): on the first embedded generation,
# indices bought far more than vector bits did until they took about half of a file (256x256 crops
# at 0.25 bpp, one index a step: +3.6 dB at 12% of the file, +5.9 dB at 49%, no more at 61%); at
# 768x512, tiles of 8 latent cells beat tiles of 16, and 4 candidates a tile did as well as 16 at
# equal index bits, for the cheapest search. So: N = 4, tiles of 8, and as many searched steps as
# half the file pays for, between 25 (the coarsest grid measured) and 250 (a decode is one model
# call a step); where 25 steps of tiles of 8 cost more than half the file, the smallest larger tile
# that leaves 25 steps.
SEARCH_SHARE = 0.5  # of the file's bits, for the indices
SEARCH_CANDIDATES = 4
SEARCH_TILES = (8, 16, 32, 64, 128, 0)  # tile sides tried in turn; 0: one index a step for the whole latent
MIN_SEARCH_STEPS = 25
MAX_SEARCH_STEPS = 250


def choose_search(shape: tuple[int, ...], file_bits: float, candidates: int | None = None, steps: int | None = None,
                  tile: int | None = None) -> tuple[int, int, int]:
    """(N, K, T) for a best-of-N search on latents of `shape` in a file (or clip) of `file_bits`: the
    values given, and the ones left None chosen as the notes above say. The result is checked by
    ScalingConfig like any other; a tile given that the latent cannot hold is returned as given."""
    n = candidates or SEARCH_CANDIDATES
    allowance = SEARCH_SHARE * max(file_bits, 0.0)
    choice = None
    for side in SEARCH_TILES if tile is None else (tile,):
        try:
            count = TileGrid.for_shape(shape, side).count if side else 1
        except ValueError:  # more tiles than a file may hold
            continue
        per_step = count * _bits(n)
        k = steps or (MAX_SEARCH_STEPS if per_step == 0 else
                      int(min(MAX_SEARCH_STEPS, max(2, 1 + allowance // per_step))))
        choice = (n, k, side)
        enough = (k - 1) * per_step <= allowance if steps else k >= MIN_SEARCH_STEPS
        if enough:
            break
    return choice or (n, steps or MAX_SEARCH_STEPS, tile)

# ---- candidate noises ---------------------------------------------------------------------------

def candidate_noise(seed: int, step: int, candidate: int, shape: tuple[int, ...],
                    device: torch.device | str | None = None) -> torch.Tensor:
    """The noise of one candidate, exactly as the format defines it (vov.method.noise)."""
    z = noise.normal_tensor(tuple(shape), seed, noise.CANDIDATE, step, candidate)
    return z if device is None else z.to(device)


class _Workspace:
    """One worker's buffers: draws candidate rows bit for bit as `noise.normals`, reusing memory."""

    def __init__(self, count: int):
        self.count = count
        self.half = (count + 1) // 2
        self.u = np.empty(self.half)
        self.v = np.empty(self.half)
        self.c = np.empty(self.half)
        self.row = np.empty(2 * self.half, dtype=np.float32)
        self.row64 = np.empty(count)

    def normals(self, seed: int, step: int, candidate: int) -> np.ndarray:
        """`noise.normals(count, seed, CANDIDATE, step, candidate)`, the same operations in place."""
        k0, k1 = noise.key(seed, noise.CANDIDATE, step, candidate)
        words = np.random.Philox(key=np.array([k0, k1], dtype=np.uint64)).random_raw(2 * self.half)
        words = words.reshape(self.half, 2)
        np.right_shift(words, np.uint64(11), out=words)
        u, v, c = self.u, self.v, self.c
        u[...] = words[:, 0]
        u += 0.5
        u *= 2.0**-53
        v[...] = words[:, 1]
        v *= 2.0**-53
        np.log(u, out=u)
        u *= -2.0
        np.sqrt(u, out=u)  # r
        v *= _TWO_PI
        np.cos(v, out=c)
        np.sin(v, out=v)
        c *= u
        v *= u
        pairs = self.row.reshape(self.half, 2)
        pairs[:, 0] = c
        pairs[:, 1] = v
        return self.row[: self.count]

    def score(self, seed: int, step: int, candidates: range, w: np.ndarray, squares: np.ndarray | None,
              out: np.ndarray, scale: np.ndarray | None = None) -> None:
        """out[j] = y_j . w and squares[j] = |y_j|^2 (when asked), float64, with y_j = scale * z_j
        (z_j itself without a scale)."""
        for j, candidate in enumerate(candidates):
            np.copyto(self.row64, self.normals(seed, step, candidate))
            if scale is not None:
                self.row64 *= scale
            out[j] = np.einsum("i,i->", self.row64, w)  # numpy's own loop: BLAS would serialise the workers
            if squares is not None:
                squares[j] = np.einsum("i,i->", self.row64, self.row64)


class CandidateScorer(ChunkedWorkers):
    """Dot products of every candidate noise of a step with a vector, in chunks over worker threads."""

    def __init__(self, count: int, threads: int = 1, chunk: int = 256):
        super().__init__(threads, chunk)
        self.count = count
        self._local = threading.local()

    def _workspace(self) -> _Workspace:
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws = self._local.ws = _Workspace(self.count)
        return ws

    def normals(self, seed: int, step: int, candidate: int) -> np.ndarray:
        return self._workspace().normals(seed, step, candidate).copy()

    def scores(self, seed: int, step: int, n: int, w: np.ndarray, squares: bool = False,
               scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(y_j . w for j < n, |y_j|^2 or None), float64, where y_j = scale * z_j (elementwise; z_j
        without a scale)."""
        w = np.ascontiguousarray(w, dtype=np.float64).ravel()
        if scale is not None:
            scale = np.ascontiguousarray(scale, dtype=np.float64).ravel()
        for vector in (w, scale):
            if vector is not None and vector.size != self.count:
                raise ValueError(f"vector has {vector.size} numbers, the latents {self.count}")
        dots = np.empty(n)
        sq = np.empty(n) if squares else None

        def work(a: int, b: int) -> None:
            self._workspace().score(seed, step, range(a, b), w, None if sq is None else sq[a:b], dots[a:b], scale)

        self.run(n, work)
        return dots, sq


# ---- search and replay --------------------------------------------------------------------------

@dataclass
class StepRecord:
    """Diagnostics of one searched step."""

    step: int
    t: float
    g: float
    kl_nats: float  # KL(p || q) = |mu_p - mu_q|^2 / (2 sigma^2): what a perfect choice would remove
    log_ratio: float  # log q - log p of the chosen candidate (nats)
    index: int | list[int]  # per tile when the search is tiled


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"bad latent shape {shape}")
    return shape


def _gumbel_rng(config: ScalingConfig, seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64([config.gumbel_seed & 0xFFFFFFFF, seed & 0xFFFFFFFFFFFFFFFF]))


def _metric_root(weights, shape: tuple[int, ...], selection: str) -> np.ndarray | None:
    """sqrt of the selection metric's weight of every latent number, or None for the plain metric."""
    if weights is None:
        return None
    if selection not in WEIGHTED_SELECTIONS:
        raise ValueError(f"weights apply to the {', '.join(WEIGHTED_SELECTIONS)} selections, not {selection!r}")
    w = torch.as_tensor(weights).detach().to("cpu", torch.float64)
    if w.ndim == 1 and len(shape) >= 2 and w.numel() == shape[1]:  # one weight per channel
        w = w.view(1, -1, *([1] * (len(shape) - 2)))
    try:
        w = w.expand(shape)
    except RuntimeError:
        raise ValueError(f"weights of shape {tuple(w.shape)} do not fit latents of shape {shape}") from None
    w = w.reshape(-1).numpy()
    if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise ValueError("weights must be finite and >= 0")
    return np.sqrt(w)


def search(velocity: Velocity, x0: torch.Tensor, shape: tuple[int, ...], seed: int, config: ScalingConfig,
           on_step: Callable[[int, int], None] | None = None, records: list[StepRecord] | None = None,
           weights: torch.Tensor | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """Best-of-N decode toward the known latents `x0`: (indices, final latents).

    `shape` is the latent shape with its batch axis (x0's shape); the latents live on x0's device.
    The indices (uint32, one per stochastic step, in step order) make `replay` reproduce the final
    latents exactly. `records`, when given, receives one StepRecord per stochastic step. `weights`
    (one per latent channel, or broadcastable to the latents) weight the squared distances of the
    distance-based selections (WEIGHTED_SELECTIONS), e.g. the backbone's `distortion_weights()` so
    that they measure pixel error.
    """
    shape = _check_shape(shape)
    if tuple(x0.shape) != shape:
        raise ValueError(f"x0 has shape {tuple(x0.shape)}, expected {shape}")
    root = _metric_root(weights, shape, config.selection)
    scheduler = config.scheduler()
    x0 = x0.detach().float()
    device = x0.device
    n = config.candidates
    rng = _gumbel_rng(config, seed)
    indices = np.zeros(config.index_shape(shape), dtype=np.uint32)
    threads = config.threads or torch.get_num_threads()
    grid = TileGrid.for_shape(shape, config.tile) if config.tile else None
    scorer = TileScorer(grid, shape, threads, config.chunk) if grid else CandidateScorer(int(np.prod(shape)), threads,
                                                                                        config.chunk)
    x = initial_noise(shape, seed, device)
    with scorer:
        for i in range(scheduler.steps):
            v = velocity(x, scheduler.time_tensor(i, shape[0], device)).float()
            z = None
            if scheduler.is_stochastic(i):
                sigma = scheduler.std(i)
                gap = (scheduler.mean_gap(x, v, x0, i).double() / sigma).cpu().numpy().ravel()  # delta / sigma
                half_sq = 0.5 * float(np.dot(gap, gap))
                # scores per candidate (and per tile: rows are candidates, columns tiles); the best along axis 0
                if config.selection in ("greedy", "gumbel"):
                    dots, _ = scorer.scores(seed, i, n, -gap)
                    best = (dots + rng.gumbel(size=dots.shape) if config.selection == "gumbel" else dots).argmax(axis=0)
                else:  # argmin_j |x_j - target|_W^2 / sigma^2 = |o|_W^2 + 2 y_j.sqrt(W) o + |y_j|^2, y = sqrt(W) z
                    if config.selection == "nearest":
                        offset = gap
                    else:
                        target = x0 if config.selection == "distance" else x0 + scheduler.t(i + 1) * v
                        offset = ((scheduler.model_mean(x, v, i) - target).double() / sigma).cpu().numpy().ravel()
                    if root is not None:
                        offset = root * offset
                    dots, squares = scorer.scores(seed, i, n, offset, squares=True, scale=root)
                    best = (2.0 * dots + squares).argmin(axis=0)
                k = i - scheduler.first_stochastic
                indices[k] = best
                z = (patchwork(seed, i, best, grid, shape, device) if grid
                     else candidate_noise(seed, i, int(best), shape, device))
                if records is not None:
                    chosen = -float(np.dot(z.double().cpu().numpy().ravel(), gap)) - half_sq
                    records.append(StepRecord(i, scheduler.t(i), scheduler.g(i), half_sq, chosen,
                                              best.tolist() if grid else int(best)))
            x = scheduler.step(x, v, i, z)
            if on_step:
                on_step(i + 1, scheduler.steps)
    return indices, x


def replay(velocity: Velocity, shape: tuple[int, ...], seed: int, config: ScalingConfig, indices,
           on_step: Callable[[int, int], None] | None = None,
           device: torch.device | str | None = None) -> torch.Tensor:
    """The decoder's path: the stochastic decode whose noises are the chosen candidates.

    One model evaluation and (on stochastic steps) one candidate noise a step. With the indices
    from `search` it returns search's final latents exactly (same platform, any thread count).
    """
    shape = _check_shape(shape)
    scheduler = config.scheduler()
    indices = np.asarray(indices)
    if indices.shape != config.index_shape(shape):
        raise ValueError(f"expected indices of shape {config.index_shape(shape)}, got {indices.shape}")
    grid = TileGrid.for_shape(shape, config.tile) if config.tile else None
    if indices.size and (indices.min() < 0 or indices.max() >= config.candidates):
        raise ValueError(f"indices must lie in 0..{config.candidates - 1}")
    x = initial_noise(shape, seed, device)
    for i in range(scheduler.steps):
        v = velocity(x, scheduler.time_tensor(i, shape[0], x.device)).float()
        z = None
        if scheduler.is_stochastic(i):
            chosen = indices[i - scheduler.first_stochastic]
            z = (patchwork(seed, i, chosen, grid, shape, x.device) if grid
                 else candidate_noise(seed, i, int(chosen), shape, x.device))
        x = scheduler.step(x, v, i, z)
        if on_step:
            on_step(i + 1, scheduler.steps)
    return x


def sample_sde(velocity: Velocity, shape: tuple[int, ...], seed: int, config: ScalingConfig,
               on_step: Callable[[int, int], None] | None = None,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Plain SDE sampling on the config's steps: every stochastic step takes candidate 0 (N = 1)."""
    return replay(velocity, shape, seed, config, np.zeros(config.index_shape(shape), dtype=np.uint32), on_step, device)


# ---- index coding -------------------------------------------------------------------------------

def _bits(candidates: int) -> int:
    if not (1 <= candidates <= 1 << MAX_SEARCH_BITS and candidates & (candidates - 1) == 0):
        raise ValueError(f"candidates must be a power of two in 1..{1 << MAX_SEARCH_BITS}, got {candidates}")
    return candidates.bit_length() - 1


def index_bytes(count: int, candidates: int) -> int:
    """Bytes of `count` packed indices: ceil(count * log2 N / 8)."""
    if count < 0:
        raise ValueError("count must be >= 0")
    return (count * _bits(candidates) + 7) // 8


def encode_indices(indices, candidates: int) -> bytes:
    """Pack indices at log2 N bits each, most significant bit first, zero-padded to a whole byte."""
    b = _bits(candidates)
    idx = np.asarray(indices, dtype=np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= candidates):
        raise ValueError(f"indices must lie in 0..{candidates - 1}")
    if b == 0 or idx.size == 0:
        return b""
    shifts = np.arange(b - 1, -1, -1, dtype=np.int64)
    bits = ((idx[:, None] >> shifts) & 1).astype(np.uint8).ravel()
    return np.packbits(bits).tobytes()


def decode_indices(data: bytes, count: int, candidates: int) -> np.ndarray:
    """The `count` indices packed in `data`; BitstreamError unless it holds exactly those bits."""
    try:
        b = _bits(candidates)
        size = index_bytes(count, candidates)
    except ValueError as e:
        raise BitstreamError(f"search section: {e}") from None
    if len(data) != size:
        raise BitstreamError(f"search section: {count} indices of {b} bits take {size} bytes, found {len(data)}")
    if b == 0:
        return np.zeros(count, dtype=np.uint32)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if bits[count * b:].any():
        raise BitstreamError("search section: padding bits are not zero")
    weights = (1 << np.arange(b - 1, -1, -1, dtype=np.int64))
    return (bits[: count * b].reshape(count, b).astype(np.int64) @ weights).astype(np.uint32)

