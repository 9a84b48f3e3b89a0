import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from fast_options import fast_options

from vov import cancel, codec
from vov.errors import BackboneMismatch, BitstreamError, UsageError
from vov.format import bitstream
from vov.limits import LimitExceeded, Limits
from vov.media import Picture
from vov.method.adapters import AdaptedDenoiser, AdapterSpec
from vov.method.fit import FitConfig, fit


def test_round_trip_shape_and_crop(tiny_backbone, smooth_picture):
    report = codec.compress(smooth_picture, fast_options(), backbone=tiny_backbone)
    assert report.bpp == 8 * len(report.data) / (40 * 56)
    assert sum(report.parts.values()) == len(report.data)
    decoded = codec.decompress(report.data, backbone=tiny_backbone)
    assert decoded.pixels.shape == (40, 56, 3)
    assert decoded.pixels.min() >= 0 and decoded.pixels.max() <= 1
    f = bitstream.load(report.data)
    assert (f.width, f.height, f.backbone) == (56, 40, "tiny")


def test_payload_matches_estimate(tiny_backbone, smooth_picture):
    report = codec.compress(smooth_picture, fast_options(steps=30), backbone=tiny_backbone)
    # quantising the prior's parameters and ANS's final word cost a little over the estimate
    assert abs(report.coding_overhead) < 0.1


def fixed_draw_loss(adapter, latents, draws=16):
    g = torch.Generator().manual_seed(123)
    total = 0.0
    with torch.no_grad():
        for _ in range(draws):
            t = torch.rand(1, generator=g)
            eps = torch.randn(latents.shape, generator=g)
            pred = adapter((1 - t) * latents + t * eps, t)
            total += (pred - (eps - latents)).pow(2).mean().item()
    return total / draws


def test_fit_reduces_distortion(tiny_backbone, smooth_picture):
    latents = codec.latents_of(tiny_backbone, smooth_picture)
    adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=2, d=512))
    before = fixed_draw_loss(adapter, latents)
    fit(adapter, latents, 40 * 56, FitConfig(steps=150, rate_fraction=0.01, lr_stage1=3e-2))
    assert fixed_draw_loss(adapter, latents) < 0.8 * before


def test_fitting_along_the_decoders_path_decodes_closer(tiny_backbone, smooth_picture):
    """With the decoder's own starting noise the ODE from that noise lands nearer the image."""
    from vov.method import sampler

    latents = codec.latents_of(tiny_backbone, smooth_picture)
    noise = sampler.initial_noise(tuple(latents.shape), 0)
    errors = {}
    for share in (0.0, 1.0):
        adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=2, d=512))
        fit(adapter, latents, 40 * 56, FitConfig(steps=100, rate_fraction=0.01, lr_stage1=3e-2, path_share=share),
            decode_noise=noise)
        decoded = sampler.sample(sampler.torch_velocity(adapter, autocast=False), tuple(latents.shape), 0, 10)
        errors[share] = (decoded - latents).pow(2).mean().item()
    assert errors[1.0] < 0.9 * errors[0.0], errors  # the tiny random model shows it weakly; the embedded one strongly


@pytest.mark.parametrize("target", [0.5, 2.0, 4.0])
def test_rate_target_is_met_from_below(tiny_backbone, smooth_picture, target):
    """--bpp is the rate of the whole file: it lands within 15% of the target and never above it."""
    report = codec.compress(smooth_picture, fast_options(steps=30, target_bpp=target), backbone=tiny_backbone)
    assert 0.85 * target <= report.bpp <= target, report.bpp


def test_step_for_budget_searches_the_step():
    from vov.method.fit import coded_bits, step_for_budget

    theta = np.random.default_rng(0).normal(0, 0.3, 8192)
    for budget in (4000.0, 16000.0, 30000.0):
        step = step_for_budget(theta, budget)
        bits, _ = coded_bits(np.round(theta / step).astype(np.int64), 3)
        assert 0.95 * budget <= bits <= budget
        finer, _ = coded_bits(np.round(theta / (step / 1.05)).astype(np.int64), 3)
        assert finer > budget  # a smaller step would not fit


def test_choose_d_follows_the_budget_up_to_its_cap():
    assert codec.choose_d(0.05 * 768 * 512, 10**6) == 8192
    assert codec.choose_d(0.02 * 768 * 512, 10**6) == 4096
    assert codec.choose_d(0.05 * 1920 * 1080, 10**6) == codec.MAX_AUTO_D
    assert codec.choose_d(0.05 * 768 * 512, 1000) == 1000  # never more than the adapter has entries


def test_theta_lr_decays_from_each_stage_rate_to_the_floor():
    from vov.method.fit import FitConfig, theta_lr

    config = FitConfig(steps=301, rate_fraction=1 / 3, lr_stage1=0.02, lr_stage2=0.01, lr_floor=0.05)
    assert theta_lr(config, 0) == pytest.approx(0.02)
    assert theta_lr(config, 300) == pytest.approx(0.01 * 0.05)
    rates = [theta_lr(config, s) for s in range(301)]
    stage1, stage2 = rates[:config.stage1_steps], rates[config.stage1_steps:]
    assert all(a >= b for a, b in zip(stage1, stage1[1:])) and all(a >= b for a, b in zip(stage2, stage2[1:]))
    assert stage1[-1] > 0.01 * 0.05 and stage2[0] < stage1[-1]
    constant = FitConfig(steps=301, lr_floor=1.0)
    assert {theta_lr(constant, s) for s in range(constant.stage1_steps)} == {constant.lr_stage1}


def test_less_shared_vectors_start_and_step_smaller():
    from vov.method.fit import FitConfig, size_factor, theta_lr

    config = FitConfig(steps=100, reference_uses=4.0)
    assert size_factor(config, 16384, 73728) == size_factor(config, 4096, 73728) == 1.0  # 4.5 and 18 uses
    assert size_factor(config, 73728, 73728) == pytest.approx(0.5)  # plain LoRA: each entry its own number
    assert size_factor(config, 32768, 65536) == pytest.approx(0.5 ** 0.5)
    assert theta_lr(config, 0, 0.5) == pytest.approx(0.5 * theta_lr(config, 0))


def test_the_initial_vector_shrinks_with_its_sharing():
    from vov.method.fit import FitConfig, initial_theta

    def start(entries):
        return initial_theta(FitConfig(init_bound=0.02), 4096, entries, torch.Generator().manual_seed(0))

    shared = start(4 * 4096)
    assert 0.019 < shared.abs().max() <= 0.02
    assert torch.equal(start(4096), shared * 0.5)  # one entry per number: half the spread


def test_adapter_knows_how_many_lora_entries_it_feeds(tiny_backbone):
    from vov.method.adapters import AdaptedDenoiser, AdapterSpec, lora_entry_count

    spec = AdapterSpec(rank=2, d=512)
    adapter = AdaptedDenoiser(tiny_backbone, spec)
    assert adapter.lora_entries == lora_entry_count(tiny_backbone, spec) == sum(
        2 * (m.in_features + m.out_features) for _, m in adapter.layers())


def test_resume_gives_identical_file(tiny_backbone, smooth_picture, tmp_path):
    options = fast_options(steps=20)
    reference = codec.compress(smooth_picture, options, backbone=tiny_backbone).data
    checkpoint = str(tmp_path / "x.partial")

    class Stop(Exception):
        pass

    def interrupt(p):
        if p.step == 13:
            raise Stop

    with pytest.raises(Stop):
        codec.compress(smooth_picture, options, backbone=tiny_backbone, on_progress=interrupt, checkpoint=checkpoint,
                       checkpoint_every=5)
    assert os.path.exists(checkpoint)
    steps_seen = []
    resumed = codec.compress(smooth_picture, options, backbone=tiny_backbone,
                             on_progress=lambda p: steps_seen.append(p.step), checkpoint=checkpoint, checkpoint_every=5)
    assert steps_seen[0] == 11  # the last checkpoint was taken after step 10
    assert resumed.data == reference
    assert not os.path.exists(checkpoint)


def test_wrong_backbone_refused(tiny_backbone, smooth_picture):
    data = codec.compress(smooth_picture, fast_options(), backbone=tiny_backbone).data
    f = bitstream.load(data)
    f.backbone_hash = bytes(8)
    with pytest.raises(BackboneMismatch):
        codec.decompress(bitstream.dump(f), backbone=tiny_backbone)
    f = bitstream.load(data)
    f.backbone = "giant"
    with pytest.raises(BackboneMismatch, match="giant"):
        codec.decompress(bitstream.dump(f))


def test_lora_file_with_wrong_d_refused(tiny_backbone, smooth_picture):
    options = fast_options()
    options = codec.EncodeOptions(backbone="tiny", adapter=AdapterSpec("lora", rank=1), fit=options.fit, target_bpp=None,
                                  sampler_steps=2)
    data = codec.compress(smooth_picture, options, backbone=tiny_backbone).data
    assert codec.decompress(data, backbone=tiny_backbone).pixels.shape == (40, 56, 3)
    f = bitstream.load(data)
    f.d += 1
    with pytest.raises(BitstreamError, match="declares d = "):
        codec.decompress(bitstream.dump(f), backbone=tiny_backbone)


DECODE = """
import sys, hashlib, torch
torch.set_num_threads(int(sys.argv[2]))
from vov import codec
print(hashlib.sha256(codec.decompress(open(sys.argv[1], 'rb').read()).pixels.tobytes()).hexdigest())
"""


@pytest.mark.slow
def test_same_pixels_in_fresh_process_and_other_thread_count(tiny_backbone, smooth_picture, tmp_path):
    data = codec.compress(smooth_picture, fast_options(), backbone=tiny_backbone).data
    path = tmp_path / "x.vov"
    path.write_bytes(data)
    here = codec.decompress(data, backbone=tiny_backbone).pixels
    import hashlib

    expected = hashlib.sha256(here.tobytes()).hexdigest()
    for threads in (1, 2):
        out = subprocess.run([sys.executable, "-c", DECODE, str(path), str(threads)], capture_output=True, text=True,
                             check=True).stdout.strip()
        assert out == expected


# ---- hostile files and options: typed errors before any work


@pytest.fixture(scope="module")
def tiny_file(tiny_backbone):
    y, x = np.mgrid[0:40, 0:56].astype(np.float32)
    picture = Picture(np.stack([x / 56, y / 40, 0.5 + 0 * x], -1).astype(np.float32))
    data = codec.compress(picture, fast_options(target_bpp=2.0), backbone=tiny_backbone).data
    assert bitstream.load(data).segments[0].qmax > 0
    return data


SEGMENT_FIELDS = {"step_size", "prior_weights", "prior_scale_codes", "qmax", "payload", "search"}


def crafted(data: bytes, **changes) -> bytes:
    f = bitstream.load(data)
    for name, value in changes.items():
        setattr(f.segments[0] if name in SEGMENT_FIELDS else f, name, value)
    return bitstream.dump(f, check=False)  # a hostile writer: the fields as given, the checksum right


@pytest.mark.parametrize("changes,error,match", [
    (dict(width=3840, height=2160), LimitExceeded, "VOV_MAX_PIXELS"),
    (dict(sampler_steps=10000), LimitExceeded, "VOV_MAX_SAMPLER_STEPS"),
    (dict(targets="(.*.*)*X"), BitstreamError, "targets"),
    (dict(targets=".*"), BitstreamError, "targets"),
    (dict(targets=""), BitstreamError, "targets is empty"),
    (dict(guidance=7.5), BitstreamError, "guidance"),
    (dict(search_bits=4), BitstreamError, "best-of-N"),
    (dict(sampler=1, search_bits=4, sde_steps=2), BitstreamError, "indices"),
    (dict(caption_z=bitstream.VovFile.pack_caption("a cat")), BitstreamError, "caption"),
    (dict(fps_num=25), BitstreamError, "frame rate"),
    (dict(frames=17), BitstreamError, "segment"),
    (dict(qmax=0), BitstreamError, "qmax = 0"),
    (dict(d=1 << 22), BitstreamError, "LoRA entries"),
    (dict(d=500), BitstreamError, "exactly"),
])
def test_crafted_files_are_refused_at_once(tiny_backbone, tiny_file, changes, error, match):
    import time

    start = time.perf_counter()
    with pytest.raises(error, match=match):
        codec.decompress(crafted(tiny_file, **changes), backbone=tiny_backbone)
    assert time.perf_counter() - start < 2.0


GOLDEN_CLIP = os.path.join(os.path.dirname(__file__), "golden", "tiny-v2-clip.vov")


@pytest.mark.parametrize("change", [
    dict(payload=lambda s: s.payload[:-4]),
    dict(payload=lambda s: s.payload + b"\0\0\0\0"),
    dict(prior_weights=lambda s: (0,) * len(s.prior_weights)),
    dict(qmax=lambda s: s.qmax + 1),
])
def test_a_bad_last_clip_is_refused_before_the_first_is_sampled(tiny_backbone, change):
    """Every clip's payload and prior are entropy-decoded before any sampling: no step, no session."""
    f = bitstream.load(open(GOLDEN_CLIP, "rb").read())
    (name, make), = change.items()
    setattr(f.segments[1], name, make(f.segments[1]))
    opened, steps = [], []

    class Spy(codec.TorchEngine):
        def open(self, *args, **kwargs):
            opened.append(1)
            return super().open(*args, **kwargs)

    with pytest.raises(BitstreamError, match="segment 1"):
        for _ in codec.decode_clips(bitstream.dump(f, check=False), backbone=tiny_backbone,
                                    engine=Spy(tiny_backbone), on_step=lambda i, n: steps.append(i)):
            pass
    assert not opened and not steps


def test_decoders_apply_their_limits(tiny_backbone, tiny_file):
    with pytest.raises(LimitExceeded, match="VOV_MAX_D"):
        codec.decompress(tiny_file, backbone=tiny_backbone, limits=Limits(max_d=64))
    codec.decompress(tiny_file, backbone=tiny_backbone, limits=Limits(max_pixels=40 * 56, max_sampler_steps=4))


def test_a_decode_reads_its_header_once(tiny_backbone, tiny_file, monkeypatch):
    """codec.decompress, decode_clips given a file already read, and an edit each read a file once."""
    from vov import edit

    reads = []
    load = bitstream.load
    monkeypatch.setattr(bitstream, "load", lambda data: reads.append(len(data)) or load(data))
    codec.decompress(tiny_file, backbone=tiny_backbone)
    assert reads == [len(tiny_file)]
    f = codec.parse(tiny_file)
    list(codec.decode_clips(f, backbone=tiny_backbone))
    assert len(reads) == 2
    edit.edit([tiny_file], edit.EditOptions(strength=0.5), backbone=tiny_backbone)
    assert len(reads) == 3


def test_all_zero_vector_file_decodes(tiny_backbone, smooth_picture):
    """A budget that leaves nothing for theta gives qmax = 0: an empty payload, the base model's sample."""
    import dataclasses

    options = dataclasses.replace(fast_options(steps=4), target_bpp=None,
                                  fit=FitConfig(steps=4, lam=1e6, rate_fraction=0.5))
    report = codec.compress(smooth_picture, options, backbone=tiny_backbone)
    s = bitstream.load(report.data).segments[0]
    if s.qmax == 0:
        assert s.payload == b""
    assert codec.decompress(report.data, backbone=tiny_backbone).pixels.shape == (40, 56, 3)


@pytest.mark.parametrize("change,match", [
    (dict(target_bpp=float("inf")), "rate target"), (dict(target_bpp=-0.1), "rate target"),
    (dict(target_bpp=None, fit=FitConfig(lam=float("inf"))), "lambda"),
    (dict(noise_seed=2**64 - 1), "seed"), (dict(fit=FitConfig(steps=0)), "fitting steps"),
    (dict(sampler_steps=0), "sampler steps"), (dict(adapter=AdapterSpec(rank=0)), "rank"),
    (dict(adapter=AdapterSpec(d=1 << 30)), "d must be"),
])
def test_bad_options_are_refused_before_the_fit(tiny_backbone, smooth_picture, change, match):
    import dataclasses

    options = dataclasses.replace(codec.EncodeOptions(backbone="tiny", fit=FitConfig(steps=10**5)), **change)
    with pytest.raises(UsageError, match=match):
        codec.compress(smooth_picture, options, backbone=tiny_backbone, on_progress=lambda p: pytest.fail("fitted"))


def test_options_over_the_decoders_limits_are_refused(tiny_backbone, smooth_picture):
    options = codec.EncodeOptions(backbone="tiny", target_bpp=None, sampler_steps=2000)
    with pytest.raises(LimitExceeded, match="sampler steps"):
        codec.compress(smooth_picture, options, backbone=tiny_backbone, on_progress=lambda p: pytest.fail("fitted"))


def test_target_is_the_whole_files_rate(tiny_backbone):
    rng = np.random.default_rng(0)
    picture = Picture(rng.random((256, 256, 3), dtype=np.float32))
    options = codec.EncodeOptions(backbone="tiny", adapter=AdapterSpec(rank=2), fit=FitConfig(steps=6), target_bpp=0.1,
                                  sampler_steps=2)
    report = codec.compress(picture, options, backbone=tiny_backbone)
    assert 0.085 <= report.bpp <= 0.1, report.bpp


def test_an_impossible_target_names_the_smallest_rate_that_works(tiny_backbone, smooth_picture):
    options = codec.EncodeOptions(backbone="tiny", target_bpp=0.05)
    with pytest.raises(UsageError, match=r"smallest rate that works is ([0-9.]+) bpp") as info:
        codec.plan(smooth_picture, options, tiny_backbone)
    import re

    smallest = float(re.search(r"works is ([0-9.]+) bpp", str(info.value)).group(1))
    import dataclasses

    codec.plan(smooth_picture, dataclasses.replace(options, target_bpp=smallest), tiny_backbone)
    rate, note = codec.default_rate(smooth_picture, options, tiny_backbone)
    assert rate == smallest and "smallest rate that works" in note


def test_cancel_stops_a_fit_and_the_step_search(tiny_backbone, smooth_picture):
    import time

    from vov.method.fit import step_for_budget

    calls = {"n": 0}

    def stop_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with cancel.scope(stop_after_three), pytest.raises(cancel.Cancelled):
        codec.compress(smooth_picture, fast_options(steps=10**5), backbone=tiny_backbone)
    theta = np.random.default_rng(0).normal(0, 0.1, 1 << 20)
    start = time.perf_counter()
    with cancel.scope(lambda: time.perf_counter() - start > 0.5), pytest.raises(cancel.Cancelled):
        step_for_budget(theta, 1000.0)  # uncancelled, this search over a million numbers takes minutes
    assert time.perf_counter() - start < 15.0  # a generous wall-clock bound: the machine may be busy


def test_a_best_of_n_file_replays_the_encoders_search(tiny_backbone, smooth_picture):
    """The file holds the indices the search chose, counted in its size; the decoder's replay gives
    exactly the latents the search selected (the search run again on the file's own adapter)."""
    import dataclasses

    from vov.method import sampler, scaling
    from vov.options import ScalingOptions

    options = dataclasses.replace(fast_options(target_bpp=4.0), scaling=ScalingOptions(candidates=8, steps=6, tile=0))
    report = codec.compress(smooth_picture, options, backbone=tiny_backbone)
    f = bitstream.load(report.data)
    assert (f.sampler, f.sampler_steps, f.search_bits, f.sde_start, f.sde_steps) == (1, 6, 3, 0, 5)
    assert report.index_bits == 8 * len(f.segments[0].search) == 8 * scaling.index_bytes(5, 8) == 16
    assert report.bpp <= 4.0

    adapter = codec.adapter_for(f, tiny_backbone)
    latents = codec.latents_of(tiny_backbone, smooth_picture)
    velocity = sampler.torch_velocity(adapter, codec.condition_for(f, tiny_backbone))
    with adapter.frozen():
        indices, searched = scaling.search(velocity, latents.float(), tuple(latents.shape),
                                           codec.clip_seed(f.noise_seed, 0), codec.scaling_config(f),
                                           weights=tiny_backbone.distortion_weights())
    assert scaling.encode_indices(indices, 8) == f.segments[0].search
    with torch.no_grad():
        expected = tiny_backbone.decode(searched)[0].float().clamp(0, 1).numpy().transpose(1, 2, 3, 0)[0, :40, :56]
    np.testing.assert_array_equal(codec.decompress(report.data, backbone=tiny_backbone).pixels, expected)


def test_a_file_searched_per_tile_replays_the_encoders_search(tiny_backbone, smooth_picture):
    """Best-of-N per tile: the file (format 2.1) records the grid; its indices, one per step and tile,
    are counted in its size; the decoder's replay gives exactly the searched latents."""
    import dataclasses

    from vov.method import sampler, scaling
    from vov.options import ScalingOptions

    options = dataclasses.replace(fast_options(target_bpp=4.0), scaling=ScalingOptions(candidates=4, steps=5, tile=2))
    report = codec.compress(smooth_picture, options, backbone=tiny_backbone)
    f = bitstream.load(report.data)
    assert f.version == (2, 1) and (f.search_tile, f.tile_rows, f.tile_cols) == (2, 3, 4)  # a 6 x 7 latent
    assert f.index_count == 4 * 12 and report.index_bits == 8 * len(f.segments[0].search) == 96
    assert report.bpp <= 4.0
    adapter = codec.adapter_for(f, tiny_backbone)
    latents = codec.latents_of(tiny_backbone, smooth_picture)
    velocity = sampler.torch_velocity(adapter, codec.condition_for(f, tiny_backbone))
    config = codec.scaling_config(f)
    with adapter.frozen():
        indices, searched = scaling.search(velocity, latents.float(), tuple(latents.shape),
                                           codec.clip_seed(f.noise_seed, 0), config,
                                           weights=tiny_backbone.distortion_weights())
    assert scaling.encode_indices(indices, 4) == f.segments[0].search
    with torch.no_grad():
        expected = tiny_backbone.decode(searched)[0].float().clamp(0, 1).numpy().transpose(1, 2, 3, 0)[0, :40, :56]
    np.testing.assert_array_equal(codec.decompress(report.data, backbone=tiny_backbone).pixels, expected)

    # a grid that the tile side does not make on the file's latents is refused before sampling
    f.tile_cols = 3
    f.segments[0].search = bytes(scaling.index_bytes(4 * 9, 4))
    with pytest.raises(BitstreamError, match="tiles"):
        codec.decompress(bitstream.dump(f), backbone=tiny_backbone)


def test_a_clip_file_with_the_search_left_open_gets_one_grid_and_decodes(tiny_backbone):
    """Best-of-N with N and T left open on a two-clip video (K given, to keep the test short): the
    plan chooses one search for the clips, every clip carries its indices within the file's rate,
    and the decoder replays them."""
    import dataclasses

    from vov.media.clip import Clip
    from vov.method.scaling import SEARCH_CANDIDATES, SEARCH_TILES
    from vov.options import ScalingOptions

    t = np.linspace(0, 1, 18, dtype=np.float32)[:, None, None, None]
    ramp = np.linspace(0, 1, 48, dtype=np.float32)[None, None, :, None]
    frames = np.clip(np.broadcast_to(0.3 + 0.4 * ramp * (1 - t) + 0.2 * t, (18, 32, 48, 3)), 0, 1).astype(np.float32)
    options = dataclasses.replace(fast_options(target_bpp=2.0, steps=4), scaling=ScalingOptions(steps=5))
    report = codec.compress(Clip(frames), options, backbone=tiny_backbone)
    f = bitstream.load(report.data)
    assert len(f.segments) == 2 and 1 << f.search_bits == SEARCH_CANDIDATES and f.sampler == 1
    assert f.sampler_steps == 5 and f.search_tile in SEARCH_TILES
    assert all(len(s.search) == scaling_bytes(f) for s in f.segments) and report.bpp <= 2.0
    decoded = codec.decompress(report.data, backbone=tiny_backbone).frames
    assert decoded.shape == frames.shape and np.isfinite(decoded).all()


def scaling_bytes(f) -> int:
    from vov.method.scaling import index_bytes

    return index_bytes(f.sde_steps * max(1, f.tile_rows * f.tile_cols), 1 << f.search_bits)
