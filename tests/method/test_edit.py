"""EditedAdapter: merges by rank concatenation and strengths, as one adapter of the frozen base."""

import math

import pytest
import torch
from edit_support import wan_backbone

from vov.errors import BackboneMismatch, UsageError
from vov.limits import LimitExceeded
from vov.method.adapters import AdaptedDenoiser, AdapterSpec
from vov.method.edit import MAX_PARTS, EditedAdapter


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    return wan_backbone(tmp_path_factory)[1]


def adapter(backbone, rank=1, d=256, seed=0, targets="", scale=0.05):
    a = AdaptedDenoiser(backbone, AdapterSpec(rank=rank, d=d, seed=seed, targets=targets))
    a.set_theta(torch.randn(a.d, generator=torch.Generator().manual_seed(seed + 100)) * scale)
    return a


def test_factors_are_the_rank_concatenation_with_weights_on_b(wan):
    one, two = adapter(wan, rank=1, seed=1), adapter(wan, rank=2, d=300, seed=2)
    edited = EditedAdapter(wan, [(one, 0.3), (two, -0.7)], strength=2.0)
    assert edited.rank == 3
    factors, f1, f2 = edited.lora_factors(), one.lora_factors(), two.lora_factors()
    assert list(factors) == [name for name, _ in one.layers()]
    for name, (a, b) in factors.items():
        (a1, b1), (a2, b2) = f1[name], f2[name]
        assert a.shape == (3, a1.shape[1]) and b.shape == (b1.shape[0], 3)
        assert torch.equal(a, torch.cat([a1, a2]))
        assert torch.equal(b, torch.cat([b1 * 0.6, b2 * -1.4], 1))
        torch.testing.assert_close(b @ a, 0.6 * b1 @ a1 - 1.4 * b2 @ a2, rtol=1e-5, atol=1e-7)


def test_strength_one_is_the_adapter_and_zero_the_base_to_the_bit(wan):
    part = adapter(wan, rank=2, seed=3, scale=0.5)
    latents, t = torch.randn(1, 4, 1, 4, 6, generator=torch.Generator().manual_seed(0)), torch.tensor([0.4])
    condition = wan.condition("a red cat")
    zero = AdaptedDenoiser(wan, part.spec)  # theta = 0: the base model
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # as the decoder runs
        assert torch.equal(EditedAdapter(wan, [(part, 1.0)], 1.0)(latents, t, condition), part(latents, t, condition))
        assert torch.equal(EditedAdapter(wan, [(part, 1.0)], 0.0)(latents, t, condition), zero(latents, t, condition))
        assert not torch.equal(part(latents, t, condition), zero(latents, t, condition))
    with torch.no_grad():  # fp32, inside and outside frozen()
        edited = EditedAdapter(wan, [(part, 0.5), (part, 0.5)])
        with edited.frozen():
            torch.testing.assert_close(edited(latents, t, condition), part(latents, t, condition), rtol=1e-5,
                                       atol=1e-6)


def test_the_edit_follows_its_parts_vectors(wan):
    """A video's next clip sets the parts' vectors: the edit's factors follow, and are kept otherwise."""
    part = adapter(wan, seed=4)
    edited = EditedAdapter(wan, [(part, 1.0)], 0.5)
    first = edited.expand()
    assert edited.expand() is first
    part.set_theta(part.theta.detach() * 2)
    second = edited.expand()
    assert second is not first and torch.equal(second[0][1], first[0][1] * 2)


def test_every_engine_packs_it_like_an_adapter_of_the_summed_rank(wan):
    from vov.serving.contract import LoraLayout

    one, two = adapter(wan, rank=1, seed=5), adapter(wan, rank=2, seed=6)
    edited = EditedAdapter(wan, [(one, 0.5), (two, 0.5)])
    compact = LoraLayout.for_backbone(wan, max_rank=4).compact(edited)
    assert compact.rank == 3
    with pytest.raises(BackboneMismatch, match="maximum rank 2"):
        LoraLayout.for_backbone(wan, max_rank=2).compact(edited)


def test_refusals(wan, tiny_backbone):
    part = adapter(wan, seed=7)
    for weight in (math.nan, math.inf, 4.5, "x"):
        with pytest.raises(UsageError, match="weight 1"):
            EditedAdapter(wan, [(part, weight)])
    for strength in (math.nan, -math.inf, 1e9):
        with pytest.raises(UsageError, match="strength"):
            EditedAdapter(wan, [(part, 1.0)], strength)
    with pytest.raises(UsageError, match=f"1 to {MAX_PARTS}"):
        EditedAdapter(wan, [(part, 0.1)] * (MAX_PARTS + 1))
    with pytest.raises(UsageError, match="1 to"):
        EditedAdapter(wan, [])
    with pytest.raises(UsageError, match="same target layers"):
        EditedAdapter(wan, [(part, 0.5), (adapter(wan, seed=8, targets="self-attn"), 0.5)])
    with pytest.raises(BackboneMismatch, match="another backbone"):
        EditedAdapter(wan, [(part, 0.5), (adapter(tiny_backbone, seed=9, targets=""), 0.5)])
    with pytest.raises(LimitExceeded, match="rank 80"):
        EditedAdapter(wan, [(adapter(wan, rank=40, d=512, seed=10), 0.5)] * 2)
    edited = EditedAdapter(wan, [(part, 1.0)])
    with pytest.raises(UsageError, match="no vector of its own"):
        edited.set_theta(torch.zeros(part.d))
    with pytest.raises(UsageError, match="other edits"):
        EditedAdapter(wan, [(edited, 1.0)])
