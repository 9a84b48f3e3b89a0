"""One home for what a compress is asked: the rate type, resolved once in the plan, and the one
translation each way between EncodeOptions and the wire's CompressOptions."""

import dataclasses

import pytest

from vov import plan as planning
from vov.errors import BackboneMismatch, UsageError
from vov.method.adapters import AdapterSpec
from vov.method.fit import FitConfig
from vov.options import DEFAULT_BPP, EncodeOptions, Rate, ScalingOptions, from_wire, to_wire
from vov.v1 import codec_pb2


def test_the_rate_of_the_two_flags():
    assert Rate.of() == Rate("default")
    assert Rate.of(bpp=0.1) == Rate("bpp", 0.1)
    assert Rate.of(lam=0.03) == Rate("lambda", 0.03)
    with pytest.raises(UsageError, match="not both"):
        Rate.of(0.1, 0.03)
    for bad in (Rate("bpp", -0.1), Rate("lambda", float("inf")), Rate("bpp"), Rate("fast", 1.0)):
        with pytest.raises(UsageError):
            bad.validate()


def test_options_at_a_rate():
    options = EncodeOptions(backbone="tiny")
    assert options.with_rate(Rate("lambda", 0.03)).rate == Rate("lambda", 0.03)
    assert options.with_rate(Rate("bpp", 0.2)).rate == Rate("bpp", 0.2)
    assert options.with_rate(Rate()).target_bpp == DEFAULT_BPP
    assert EncodeOptions(target_bpp=None, fit=FitConfig(lam=0.05)).rate == Rate("lambda", 0.05)  # the fit's weight


def wire(options, rate=None):
    return codec_pb2.CompressOptions(**to_wire(options, rate))


@pytest.mark.parametrize("rate", [Rate(), Rate("bpp", 0.2), Rate("lambda", 0.03)])
def test_the_wire_carries_every_option_and_the_rate_both_ways(rate):
    options = EncodeOptions(backbone="tiny", adapter=AdapterSpec("one-vector", 2, 512, 7, "attn"), steps=30,
                            sampler_steps=12, noise_seed=7, auto_d=False, caption="a cat",
                            scaling=ScalingOptions(candidates=8, steps=20, tile=8)).with_rate(rate)
    back, got = from_wire(wire(options, rate), "tiny")
    assert got == rate
    assert back == options


@pytest.mark.parametrize("scaling", [ScalingOptions(), ScalingOptions(candidates=16), ScalingOptions(tile=0),
                                     ScalingOptions(steps=40, tile=12)])
def test_the_wire_keeps_what_best_of_n_leaves_open_and_a_whole_latent_tile(scaling):
    options = EncodeOptions(backbone="tiny", scaling=scaling)
    back, _ = from_wire(wire(options), "tiny")
    assert back.scaling == scaling
    assert from_wire(codec_pb2.CompressOptions(), "tiny")[0].scaling is None  # nothing asked: no search


def test_the_wire_sends_the_weight_the_options_hold():
    options = EncodeOptions(backbone="tiny", target_bpp=None, fit=FitConfig(steps=5, lam=0.07))
    message = wire(options)
    assert message.WhichOneof("rate") == "lambda" and getattr(message, "lambda") == pytest.approx(0.07)
    assert message.steps == 5 and not message.HasField("best_of_tile") and not message.best_of_search


def test_the_wire_is_checked():
    with pytest.raises(BackboneMismatch):
        from_wire(codec_pb2.CompressOptions(backbone="wan"), "tiny")
    with pytest.raises(UsageError):
        from_wire(codec_pb2.CompressOptions(target_bpp=-1), "tiny")
    with pytest.raises(UsageError, match="best-of-tile"):
        from_wire(codec_pb2.CompressOptions(best_of=4, best_of_tile=300), "tiny")


def test_the_plan_resolves_the_rate_once(tiny_backbone, smooth_picture):
    options = EncodeOptions(backbone="tiny", adapter=AdapterSpec(rank=2), steps=4, sampler_steps=4)
    the_plan = planning.plan(smooth_picture, options, tiny_backbone, rate=Rate())
    smallest, note = planning.default_rate(smooth_picture, options, tiny_backbone)
    assert the_plan.options.target_bpp == max(smallest, DEFAULT_BPP) and the_plan.note == note
    assert planning.plan(smooth_picture, options, tiny_backbone, rate=Rate("bpp", 2.0)).options.target_bpp == 2.0
    weighted = planning.plan(smooth_picture, options, tiny_backbone, rate=Rate("lambda", 0.04))
    assert weighted.options.target_bpp is None and weighted.fits[0].lam == 0.04 and weighted.note is None
    as_given = planning.plan(smooth_picture, dataclasses.replace(options, target_bpp=2.0), tiny_backbone)
    assert as_given.options.target_bpp == 2.0


@pytest.mark.parametrize("given, flag, words", [
    (dict(candidates=3), "--best-of", "power of two"),
    (dict(tile=300), "--best-of-tile", "1..255"),
    (dict(steps=20000), "--scaling-steps", "10000"),
    (dict(steps=1), "--scaling-steps", "2 steps or more"),
    (dict(start=300), "best-of-N", "stochastic steps"),
    (dict(g_cap=-1.0), "best-of-N", "g_cap"),
])
def test_best_of_n_options_are_checked_by_the_search_and_named_by_their_flag(given, flag, words):
    with pytest.raises(UsageError) as refused:
        ScalingOptions(**given).validate()
    assert str(refused.value).startswith(f"{flag}: ") and words in str(refused.value)
    if given != dict(steps=1):  # the search itself refuses the same values
        with pytest.raises(ValueError):
            ScalingOptions(**given).config()


def test_the_plan_chooses_what_best_of_n_leaves_open(tiny_backbone, smooth_picture):
    """N, K and T left open are chosen for the image and the rate, so that the indices take about
    half of the file; what was given stays."""
    from vov.method.scaling import SEARCH_CANDIDATES, SEARCH_SHARE

    options = EncodeOptions(backbone="tiny", adapter=AdapterSpec(rank=2), steps=4, scaling=ScalingOptions())
    frames = planning.Frames.of(smooth_picture)
    shape = planning._padded_latent_shape(tiny_backbone, frames)
    for bpp in (1.0, 4.0):
        chosen = planning.plan(smooth_picture, options, tiny_backbone, rate=Rate("bpp", bpp)).options.scaling
        assert chosen.is_resolved and chosen.candidates == SEARCH_CANDIDATES
        file_bits = bpp * frames.size
        index_bits = chosen.config().index_bits(shape)
        assert 0 < index_bits <= SEARCH_SHARE * file_bits
    given = dataclasses.replace(options, scaling=ScalingOptions(candidates=16, steps=9, tile=0))
    assert planning.plan(smooth_picture, given, tiny_backbone, rate=Rate("bpp", 4.0)).options.scaling == given.scaling
