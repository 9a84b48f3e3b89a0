import hashlib
import math
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import torch

from vov.errors import BitstreamError
from vov.format import bitstream
from vov.method import noise, sampler, scaling
from vov.method.adapters import AdaptedDenoiser, AdapterSpec
from vov.method.scaling import ScalingConfig, decode_indices, encode_indices, index_bytes, replay, search

SPEC = AdapterSpec(rank=2, d=512)
SEED = 7


@pytest.fixture(scope="module")
def problem(tiny_backbone):
    """A real tiny-backbone adapter (seeded theta), its velocity and the latents of a smooth picture."""
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(SPEC.d, generator=gen) * 0.05
    adapter = AdaptedDenoiser(tiny_backbone, SPEC)
    adapter.set_theta(theta)
    adapter.eval()
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    disc = ((y - 24) ** 2 + (x - 30) ** 2 < 120).astype(np.float32)
    pixels = torch.from_numpy(np.stack([x / 64, y / 48, 0.3 + 0.5 * disc]))[None, :, None]
    with torch.no_grad():
        x0 = tiny_backbone.encode(pixels).float()
    return sampler.torch_velocity(adapter), x0, theta


def test_replay_reproduces_the_search_exactly(problem):
    velocity, x0, _ = problem
    shape = tuple(x0.shape)
    for selection in scaling.SELECTIONS:
        config = ScalingConfig(steps=6, candidates=32, g_cap=1.0, selection=selection, chunk=8)
        records = []
        indices, latents = search(velocity, x0, shape, SEED, config, records=records)
        assert indices.shape == (5,) and indices.dtype == np.uint32 and indices.max() < 32
        assert [r.step for r in records] == [0, 1, 2, 3, 4]
        assert torch.equal(replay(velocity, shape, SEED, config, indices), latents)
        coded = encode_indices(indices, 32)
        assert torch.equal(replay(velocity, shape, SEED, config, decode_indices(coded, 5, 32)), latents)


def test_weighted_selections(problem, tiny_backbone):
    velocity, x0, _ = problem
    shape = tuple(x0.shape)
    weights = tiny_backbone.distortion_weights()
    for selection in scaling.WEIGHTED_SELECTIONS:
        config = ScalingConfig(steps=6, candidates=32, selection=selection)
        indices, latents = search(velocity, x0, shape, SEED, config, weights=weights)
        assert torch.equal(replay(velocity, shape, SEED, config, indices), latents)
    with pytest.raises(ValueError):
        search(velocity, x0, shape, SEED, ScalingConfig(steps=3, candidates=2, selection="greedy"), weights=weights)
    with pytest.raises(ValueError):
        search(velocity, x0, shape, SEED, ScalingConfig(steps=3, candidates=2, selection="nearest"),
               weights=torch.ones(3))


def test_search_with_a_window_and_a_shifted_grid(problem):
    velocity, x0, _ = problem
    shape = tuple(x0.shape)
    config = ScalingConfig(steps=8, candidates=16, stochastic=3, start=4, schedule=1, shift=3.0, g_kind=1, g_cap=0.5)
    records = []
    indices, latents = search(velocity, x0, shape, SEED, config, records=records)
    assert [r.step for r in records] == [4, 5, 6] and all(r.g == 0.5 for r in records)
    assert torch.equal(replay(velocity, shape, SEED, config, indices), latents)
    leading = ScalingConfig(steps=8, candidates=16, stochastic=2)
    records = []
    indices, latents = search(velocity, x0, shape, SEED, leading, records=records)
    assert [r.step for r in records] == [0, 1]
    assert torch.equal(replay(velocity, shape, SEED, leading, indices), latents)


def test_search_moves_toward_x0(problem):
    velocity, x0, _ = problem
    shape = tuple(x0.shape)
    config = ScalingConfig(steps=10, candidates=256, g_cap=1.0, selection="greedy")
    _, searched = search(velocity, x0, shape, SEED, config)
    plain = scaling.sample_sde(velocity, shape, SEED, config)
    assert float((searched - x0).pow(2).mean()) < 0.9 * float((plain - x0).pow(2).mean())


def test_one_candidate_is_plain_sde_sampling(problem):
    velocity, x0, _ = problem
    shape = tuple(x0.shape)
    config = ScalingConfig(steps=5, candidates=1, g_cap=5.0, selection="gumbel")
    indices, latents = search(velocity, x0, shape, SEED, config)
    assert not indices.any()
    assert encode_indices(indices, 1) == b"" and config.index_bits(shape) == 0
    assert torch.equal(latents, scaling.sample_sde(velocity, shape, SEED, config))
    # written out from the SDE itself: candidate 0's noise at every step but the last
    x = noise.normal_tensor(shape, SEED, noise.INITIAL)
    ts = sampler.timesteps(5)
    for i in range(5):
        t, t_next = float(ts[i]), float(ts[i + 1])
        v = velocity(x, torch.full((1,), t))
        if i < 4:
            g = 5.0 if t == 1 else min(math.sqrt(2 * t / (1 - t)), 5.0)
            score = -(x + (1 - t) * v) / t
            z = noise.normal_tensor(shape, SEED, noise.CANDIDATE, i, 0)
            x = x + (t_next - t) * (v - g * g / 2 * score) + g * math.sqrt(t - t_next) * z
        else:
            x = x + (t_next - t) * v
    torch.testing.assert_close(latents, x, rtol=1e-4, atol=1e-4)


REPLAY = """
import sys, hashlib, numpy as np, torch
torch.set_num_threads(1)
from vov.backbones.embedded import tiny
from vov.method import sampler
from vov.method.adapters import AdaptedDenoiser, AdapterSpec
from vov.method.scaling import ScalingConfig, replay, search
adapter = AdaptedDenoiser(tiny(), AdapterSpec(rank=2, d=512))
adapter.set_theta(torch.from_numpy(np.load(sys.argv[1])))
adapter.eval()
x0 = torch.from_numpy(np.load(sys.argv[2]))
config = ScalingConfig(steps=6, candidates=64, selection="gumbel", threads=1)
velocity = sampler.torch_velocity(adapter)
indices = np.frombuffer(bytes.fromhex(sys.argv[3]), dtype=np.uint32)
decoded = replay(velocity, tuple(x0.shape), 7, config, indices)
again, _ = search(velocity, x0, tuple(x0.shape), 7, config)
print(hashlib.sha256(decoded.numpy().tobytes()).hexdigest(), again.tobytes().hex())
"""


def test_replay_with_another_thread_count(problem, tmp_path):
    velocity, x0, theta = problem
    config = ScalingConfig(steps=6, candidates=64, selection="gumbel", threads=2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the model's own threads too; the replay below runs with one
    try:
        indices, latents = search(velocity, x0, tuple(x0.shape), SEED, config)
    finally:
        torch.set_num_threads(before)
    np.save(tmp_path / "theta.npy", theta.numpy())
    np.save(tmp_path / "x0.npy", x0.numpy())
    out = subprocess.run([sys.executable, "-c", REPLAY, str(tmp_path / "theta.npy"), str(tmp_path / "x0.npy"),
                          indices.tobytes().hex()], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == hashlib.sha256(latents.numpy().tobytes()).hexdigest()
    assert out[1] == indices.tobytes().hex()  # the search itself does not depend on the thread count


def test_fast_candidates_are_the_formats_noise():
    for count in (1, 5, 768, 4097):
        scorer = scaling.CandidateScorer(count, threads=2, chunk=3)
        w = np.random.default_rng(0).standard_normal(count)
        scale = np.random.default_rng(1).uniform(0, 2, count)
        dots, squares = scorer.scores(11, 9, 8, w, squares=True)
        scaled_dots, scaled_squares = scorer.scores(11, 9, 8, w, squares=True, scale=scale)
        for j in range(8):
            ref = noise.normals(count, 11, noise.CANDIDATE, 9, j)
            assert np.array_equal(scorer.normals(11, 9, j).view(np.uint32), ref.view(np.uint32))
            assert dots[j] == pytest.approx(float(ref.astype(np.float64) @ w), rel=1e-12, abs=1e-9)
            assert squares[j] == pytest.approx(float(ref.astype(np.float64) @ ref), rel=1e-12)
            y = scale * ref.astype(np.float64)
            assert scaled_dots[j] == pytest.approx(float(y @ w), rel=1e-12, abs=1e-9)
            assert scaled_squares[j] == pytest.approx(float(y @ y), rel=1e-12)
        scorer.close()


def test_index_coding_and_byte_accounting():
    rng = np.random.default_rng(1)
    for n in (1, 2, 16, 256, 1024, 1 << 16):
        bits = n.bit_length() - 1
        for count in (0, 1, 7, 249, 999):
            indices = rng.integers(0, n, count)
            data = encode_indices(indices, n)
            assert len(data) == index_bytes(count, n) == math.ceil(count * bits / 8)
            np.testing.assert_array_equal(decode_indices(data, count, n), indices)
            if data:
                with pytest.raises(BitstreamError):
                    decode_indices(data[:-1], count, n)
            with pytest.raises(BitstreamError):
                decode_indices(data + b"\0", count, n)
    config = ScalingConfig(steps=250, candidates=256)
    assert config.index_bits((1, 4, 1, 8, 8)) == 249 * 8 and config.index_bytes((1, 4, 1, 8, 8)) == 249
    assert ScalingConfig(steps=50, candidates=16, stochastic=7).index_bytes((1, 4, 1, 8, 8)) == 4  # 28 bits
    # the padding of the last byte must be zero
    data = bytearray(encode_indices([1, 2, 3], 8))  # 9 bits
    data[-1] |= 1
    with pytest.raises(BitstreamError):
        decode_indices(bytes(data), 3, 8)
    with pytest.raises(BitstreamError):
        decode_indices(b"", 1, 3)
    with pytest.raises(ValueError):
        encode_indices([16], 16)
    with pytest.raises(ValueError):
        encode_indices([0], 12)


def test_config_checks():
    for bad in (dict(candidates=3), dict(candidates=1 << 17), dict(g_cap=0.0), dict(selection="best"),
                dict(steps=10, stochastic=10), dict(steps=10, start=9, stochastic=1), dict(schedule=5),
                dict(chunk=0), dict(steps=0), dict(tile=-1), dict(tile=256)):
        with pytest.raises(ValueError):
            ScalingConfig(**bad)
    fields = ScalingConfig(steps=50, candidates=1024, g_cap=2.0).decoder_fields()
    assert fields == {"sampler": 1, "sampler_steps": 50, "schedule": 0, "shift": 1.0, "g_kind": 0, "g_cap": 2.0,
                      "sde_steps": 49, "sde_start": 0, "search_bits": 10, "search_tile": 0}
    assert set(fields) <= bitstream.HEADER_NAMES  # the file's own fields, by their names
    assert ScalingConfig.from_decoder_fields(fields).decoder_fields() == fields
    with pytest.raises(ValueError):
        ScalingConfig.from_decoder_fields({**fields, "search_bits": 17})
    with pytest.raises(ValueError):
        ScalingConfig.from_decoder_fields({**fields, "sde_steps": 50})
    with pytest.raises(ValueError):
        ScalingConfig.from_decoder_fields({**fields, **bitstream.ODE_FIELDS})
    assert ScalingConfig(steps=50, start=10).scaled_steps == 39
    # what the file's float32 fields hold is what the encoder searches with
    assert ScalingConfig(g_cap=0.3, schedule=1, shift=2.7).decoder_fields()["g_cap"] == float(np.float32(0.3))
    assert ScalingConfig(g_cap=0.3, schedule=1, shift=2.7).shift == float(np.float32(2.7))


def test_replay_refuses_wrong_indices(problem):
    velocity, x0, _ = problem
    config = ScalingConfig(steps=4, candidates=8)
    with pytest.raises(ValueError):
        replay(velocity, tuple(x0.shape), SEED, config, np.zeros(2, dtype=np.uint32))
    with pytest.raises(ValueError):
        replay(velocity, tuple(x0.shape), SEED, config, np.array([0, 8, 1]))


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_bounded_at_4096_candidates(problem):
    """Beyond the model, a search holds (threads x 40 + 32) bytes per latent number plus 16 per candidate."""
    count, n, threads = 16384, 4096, 2
    w = np.random.default_rng(2).standard_normal(count)
    scorer = scaling.CandidateScorer(count, threads, chunk=256)
    peak = peak_bytes(lambda: scorer.scores(3, 1, n, w, squares=True))
    scorer.close()
    bound = threads * scaling.WORKSPACE_BYTES_PER_NUMBER * count + 16 * n + (256 << 10)
    assert peak < bound  # 1.6 MB, where holding the candidates would take n * count * 4 = 268 MB

    velocity, x0, _ = problem
    config = ScalingConfig(steps=2, candidates=n, selection="gumbel", threads=threads)
    peak = peak_bytes(lambda: search(velocity, x0, tuple(x0.shape), SEED, config))
    assert peak < (threads * scaling.WORKSPACE_BYTES_PER_NUMBER + 32) * x0.numel() + 16 * n + (256 << 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_search_and_replay_on_cuda(tiny_backbone):
    adapter = AdaptedDenoiser(tiny_backbone, SPEC).cuda()
    adapter.eval()
    velocity = sampler.torch_velocity(adapter)
    x0 = torch.randn(1, *tiny_backbone.latent_shape(1, 32, 32), generator=torch.Generator().manual_seed(0)).cuda()
    config = ScalingConfig(steps=5, candidates=16)
    indices, latents = search(velocity, x0, tuple(x0.shape), SEED, config)
    assert latents.device.type == "cuda"
    assert torch.equal(replay(velocity, tuple(x0.shape), SEED, config, indices, device=x0.device), latents)
    assert sampler.sample(velocity, tuple(x0.shape), SEED, 5, device=x0.device).device.type == "cuda"


def test_the_search_left_open_spends_about_half_the_file_on_indices():
    from vov.method.scaling import MAX_SEARCH_STEPS, MIN_SEARCH_STEPS, choose_search

    photo = (1, 16, 1, 64, 96)  # a 768x512 image's latent on the embedded backbone
    n, k, t = choose_search(photo, 0.05 * 768 * 512)
    assert (n, t) == (4, 8) and 96 * 2 * (k - 1) <= 0.5 * 0.05 * 768 * 512 < 96 * 2 * k
    assert choose_search(photo, 0.25 * 768 * 512)[1] == MAX_SEARCH_STEPS
    # where 25 steps of tiles of 8 cost over half the file, larger tiles
    n, k, t = choose_search(photo, 0.02 * 768 * 512)
    assert t == 16 and k >= MIN_SEARCH_STEPS
    # more tiles than a file holds (17 x 30 of 8 cells): the next size
    assert choose_search((1, 16, 1, 136, 240), 0.05 * 1920 * 1080)[2] == 16
    # what is given stays; steps given choose the smallest tile they fit
    assert choose_search(photo, 20000, candidates=16, steps=30, tile=0) == (16, 30, 0)
    assert choose_search(photo, 20000, steps=200)[2] == 16 and choose_search(photo, 20000, steps=250)[2] == 32
    assert choose_search(photo, 20000, tile=24)[2] == 24
    # a file too small for 25 steps even with one index a step still gets a search it can hold
    n, k, t = choose_search(photo, 60)
    assert t == 0 and 2 <= k < MIN_SEARCH_STEPS
