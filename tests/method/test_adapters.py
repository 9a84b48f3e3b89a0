import hashlib

import numpy as np
import pytest
import torch

from vov.method.adapters import AdaptedDenoiser, AdapterSpec, lora_entry_count
from vov.errors import UsageError


def index_digest(adapter: AdaptedDenoiser) -> str:
    h = hashlib.sha256()
    for name, m in adapter.layers():
        h.update(name.encode())
        for buf in (m.indices_a, m.indices_b):
            h.update(buf.to(torch.int64).numpy().tobytes())
    return h.hexdigest()


# Golden: the hash indices the decoder rebuilds from (seed, d, rank, targets). If a dependency
# upgrade changes them, every existing file would decode to garbage: this test must then fail.
GOLDEN_ONE_VECTOR = "8f97c1e931acaec54741e8020475ae36622185273f59a5f289288978ec398a25"


def test_golden_indices(tiny_backbone):
    adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec("one-vector", rank=2, d=512, seed=11, targets="attn"))
    assert index_digest(adapter) == GOLDEN_ONE_VECTOR


def test_the_files_adapter_fields_map_to_the_spec_and_back(tiny_backbone):
    from vov.format import bitstream

    spec = AdapterSpec("one-vector", rank=3, d=500, seed=9, targets="attn")
    fields = spec.decoder_fields()
    assert fields == {"adapter_kind": 0, "rank": 3, "d": 500, "adapter_seed": 9, "targets": "attn"}
    assert set(fields) <= bitstream.HEADER_NAMES  # the file's own fields, by their names
    assert AdapterSpec.from_decoder_fields(fields) == spec
    lora = AdapterSpec("lora", rank=1, d=lora_entry_count(tiny_backbone, AdapterSpec("lora", rank=1)), seed=2)
    assert lora.decoder_fields()["adapter_kind"] == 1 and AdapterSpec.from_decoder_fields(lora.decoder_fields()) == lora


def test_balanced_hash_and_scales(tiny_backbone):
    adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec("one-vector", rank=2, d=300, seed=1))
    counts = np.zeros(300, dtype=np.int64)
    for _, m in adapter.layers():
        for buf in (m.indices_a, m.indices_b):
            np.add.at(counts, buf.numpy().ravel(), 1)
    assert counts.max() - counts.min() <= 1
    total = lora_entry_count(tiny_backbone, adapter.spec)
    assert counts.sum() == total


def test_plain_lora_is_a_permutation(tiny_backbone):
    spec = AdapterSpec("lora", rank=2, seed=3)
    adapter = AdaptedDenoiser(tiny_backbone, spec)
    assert adapter.d == lora_entry_count(tiny_backbone, spec)
    seen = []
    for _, m in adapter.layers():
        for kind in ("a", "b"):
            seen.append(getattr(m, f"indices_{kind}").numpy().ravel())
            assert torch.all(getattr(m, f"scales_{kind}") == 1)
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(adapter.d))


def test_theta_changes_output_and_zero_is_identity(tiny_backbone):
    adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=2, d=256))
    x, t = torch.randn(1, 16, 1, 4, 4), torch.tensor([0.3])
    base = tiny_backbone.velocity(x, t)
    torch.testing.assert_close(adapter(x, t), base)
    adapter.set_theta(torch.randn(256) * 0.5)
    assert (adapter(x, t) - base).abs().max() > 1e-3
    # the backbone itself is never modified
    torch.testing.assert_close(tiny_backbone.velocity(x, t), base)


def test_lora_factors_match_layer(tiny_backbone):
    adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=3, d=200))
    adapter.set_theta(torch.randn(200))
    name, layer = adapter.layers()[0]
    a, b = adapter.lora_factors()[name]
    x = torch.randn(5, layer.in_features)
    torch.testing.assert_close(layer(x), layer.base_layer(x) + x @ a.T @ b.T)


@pytest.mark.parametrize("spec", [AdapterSpec(kind="dense"), AdapterSpec(rank=0), AdapterSpec(d=3),
                                  AdapterSpec(targets=r"nothing\.matches"), AdapterSpec(targets="([")])
def test_bad_specs(tiny_backbone, spec):
    with pytest.raises(UsageError):
        AdaptedDenoiser(tiny_backbone, spec)


def test_exact_layer_names_give_the_presets_adapter(tiny_backbone):
    names = ",".join(reversed(tiny_backbone.target_layers("self-attn")))  # any order: the hash takes module order
    by_preset = AdaptedDenoiser(tiny_backbone, AdapterSpec("one-vector", rank=2, d=512, seed=11, targets="self-attn"))
    by_names = AdaptedDenoiser(tiny_backbone, AdapterSpec("one-vector", rank=2, d=512, seed=11, targets=names))
    assert by_names.target_names == by_preset.target_names
    assert index_digest(by_names) == index_digest(by_preset)


@pytest.mark.parametrize("targets", ["(.*.*)*X", "a{99999999999}", ".*", "attn|ffn", "transformer.blocks.0.attn1.to_q,"
                                     "transformer.blocks.0.attn1.to_q", "x" * 600])
def test_targets_are_a_closed_vocabulary(tiny_backbone, targets):
    """Patterns are never evaluated: anything but a preset id or exact layer names is refused at once."""
    import time

    start = time.perf_counter()
    with pytest.raises(UsageError, match="targets"):
        AdaptedDenoiser(tiny_backbone, AdapterSpec(targets=targets))
    assert time.perf_counter() - start < 1.0


# ---- one frozen base shared by every adapter


def test_adapters_copy_no_weight_and_leave_the_backbone_alone(tiny_backbone):
    before = {k: v.clone() for k, v in tiny_backbone.denoiser.state_dict().items()}
    ids = {id(p) for p in tiny_backbone.denoiser.parameters()}
    first = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=2, d=256, targets="attn"))
    second = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=2, d=256, targets="attn"))
    # every parameter the adapters reach is the backbone's own, apart from their theta
    for adapter in (first, second):
        own = {id(adapter.raw_theta())}
        assert {id(p) for p in adapter.parameters()} - own <= ids
    x, t = torch.randn(1, 16, 1, 4, 4), torch.tensor([0.3])
    with torch.no_grad():
        base = tiny_backbone.velocity(x, t)
        first.set_theta(torch.randn(256) * 0.5)
        one = first(x, t)
        assert torch.equal(second(x, t), base)  # the other adapter does not see the first one's theta
        second.set_theta(torch.randn(256) * 0.5)
        assert torch.equal(first(x, t), one)
    first.train()
    first.to(torch.float64)  # only the adapter's own tensors follow
    assert first.theta.dtype == torch.float64 and not tiny_backbone.denoiser.training
    after = tiny_backbone.denoiser.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
    assert not any(isinstance(m, type(first.layers()[0][1])) for m in tiny_backbone.denoiser.modules())


def test_expanded_factors_are_reused_until_theta_changes(tiny_backbone):
    adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=2, d=256))
    adapter.set_theta(torch.randn(256))
    x, t = torch.randn(1, 16, 1, 4, 4), torch.tensor([0.6])
    with torch.no_grad():
        factors = adapter.expand()
        assert adapter.expand() is factors  # gathered once
        per_call = adapter(x, t)
        adapter._reader.expanded = None
        with torch.enable_grad():
            gathered_each_time = adapter(x, t)
        assert torch.equal(per_call, gathered_each_time)
        adapter.set_theta(torch.randn(256))  # a new vector is seen at once
        assert adapter.expand() is not factors
        assert not torch.equal(adapter(x, t), per_call)
        with adapter.frozen():
            frozen = adapter(x, t)
        assert torch.equal(frozen, adapter(x, t))


def test_a_parametrised_theta_is_gathered_in_every_forward(tiny_backbone):
    """While a fit quantises theta through a parametrisation, nothing may be cached across forwards."""
    from torch.nn.utils import parametrize

    class Double(torch.nn.Module):
        def forward(self, theta):
            return 2 * theta

    adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=2, d=256))
    adapter.set_theta(torch.randn(256) * 0.1)
    x, t = torch.randn(1, 16, 1, 4, 4), torch.tensor([0.6])
    with torch.no_grad():
        plain = adapter(x, t)
        parametrize.register_parametrization(adapter.theta_slot, "default", Double(), unsafe=True)
        doubled = adapter(x, t)
        adapter.raw_theta().mul_(0.5)
        assert torch.equal(adapter(x, t), plain)
    assert not torch.equal(doubled, plain)
