"""The LoRA layer and the hashed index assignment against peft's UniLoRA, which defines them.

A file carries theta only: the decoder rebuilds which number feeds which LoRA entry from (seed, d,
rank, target layers) with peft's `UniLoraModel.generate_index`. The goldens below pin that generator
and the way vov cuts its output into layers; a peft upgrade that changed either would change every
decoded file, and must fail here first."""

import copy
import hashlib

import numpy as np
import pytest
import torch
from torch import nn

from vov.method.adapters import ADAPTER_NAME, AdaptedDenoiser, AdapterSpec
from vov.method.lora import FactorReader, RowContext, RowLoraLinear, hash_indices, hashed_layers

# (seed, d, rank, layer sizes (in, out), sha256 of the indices as int64, sha256 of the scales as float32)
GOLDEN_ASSIGNMENTS = [
    (0, 16, 1, [(8, 8)], "fac757418ac73a42ee5b20f6439f53cf12190687e3459c47a5ee36501706ee3f",
     "9628e545ed3ac074e5a6cbf542a642b62482fbfca9b4cb3ea4743a1874256e37"),
    (3, 300, 2, [(32, 32), (32, 96)], "8aede3271834583459048241b8182bbc46db5047f3a3a2e56a0adf4de5297157",
     "0caf0cf61f289ce7f14360c9d0037dcaffda8015a9d6a2c25a23d80fae126f41"),
    (11, 512, 4, [(64, 64)] * 4, "56f932c8309d20853a4c8dd74b5d082ef6309c3a14f801a1135de25764fc767c",
     "b13e37dacd40eb4e461bdb28f51709eca55c98ca2cbdba137b95636a1fc0b9fe"),
    ((1 << 32) - 1, 4096, 8, [(256, 256), (256, 1024)],
     "93cffbe8b64b147ae7aeecf9f5c250262095a9950143463b28c0669aa5d967b1",
     "675c556d734bed2f2ed9fc69ff41e20ad64bcd91497b7b6ce996b0d09fb968ab"),
]
# peft's generator alone: 1000 entries onto 37 numbers, seed 5
GOLDEN_PEFT_INDEX = "bd078ce61a3e8d55274f88ba2ffd71b064ab271ad38934876dd06af8e45b67ed"


def digest(tensors, dtype) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().numpy().astype(dtype).tobytes())
    return h.hexdigest()


def test_golden_peft_generator():
    from peft.tuners.unilora import UniLoraModel

    idx = UniLoraModel.generate_index(1000, 37, 5)
    assert hashlib.sha256(idx.numpy().astype(np.int64).tobytes()).hexdigest() == GOLDEN_PEFT_INDEX


@pytest.mark.parametrize("seed, d, rank, sizes, indices, scales", GOLDEN_ASSIGNMENTS)
def test_golden_assignment(seed, d, rank, sizes, indices, scales):
    """The generator's output, and how it is cut: each layer's A (rank x in), then its B (out x rank)."""
    entries = sum(rank * (n_in + n_out) for n_in, n_out in sizes)
    flat_indices, flat_scales = hash_indices(entries, d, seed)
    assert digest([flat_indices], np.int64) == indices
    assert digest([flat_scales], np.float32) == scales
    bases = [nn.Linear(n_in, n_out) for n_in, n_out in sizes]
    theta = nn.ParameterDict({ADAPTER_NAME: nn.Parameter(torch.zeros(d))})
    layers = hashed_layers(bases, rank, d, seed, FactorReader(theta, ADAPTER_NAME))
    assert [tuple(m.indices_a.shape) + tuple(m.indices_b.shape) for m in layers] == \
        [(rank, n_in, n_out, rank) for n_in, n_out in sizes]
    assert digest([t for m in layers for t in (m.indices_a, m.indices_b)], np.int64) == indices
    assert digest([t for m in layers for t in (m.scales_a, m.scales_b)], np.float32) == scales


def peft_twin(backbone, adapter: AdaptedDenoiser) -> nn.Module:
    """peft's UniLoRA on a copy of the backbone's denoiser, with the adapter's spec and vector."""
    from peft.tuners.unilora import UniLoraConfig, UniLoraModel

    spec = adapter.spec
    config = UniLoraConfig(r=spec.rank, theta_d_length=adapter.d, proj_seed=spec.seed,
                           target_modules=list(adapter.target_names))
    denoiser = copy.deepcopy(backbone.denoiser)
    with torch.random.fork_rng():
        tuner = UniLoraModel(denoiser, config, ADAPTER_NAME)
    with torch.no_grad():
        tuner.unilora_theta_d[ADAPTER_NAME].copy_(adapter.theta)
    return denoiser.eval()


@pytest.mark.parametrize("spec", [AdapterSpec("one-vector", rank=2, d=300, seed=7, targets="attn"),
                                  AdapterSpec("lora", rank=1, seed=2)])
def test_layers_compute_what_peft_computes(tiny_backbone, spec):
    adapter = AdaptedDenoiser(tiny_backbone, spec)
    adapter.set_theta(torch.randn(adapter.d, generator=torch.Generator().manual_seed(1)) * 0.5)
    twin = peft_twin(tiny_backbone, adapter)
    g = torch.Generator().manual_seed(2)
    for name, layer in adapter.layers():
        theirs = twin.get_submodule(name)
        assert type(theirs).__module__.startswith("peft.tuners.unilora")
        for ours, key in ((layer.indices_a, "unilora_indices_A"), (layer.indices_b, "unilora_indices_B"),
                          (layer.scales_a, "unilora_scales_A"), (layer.scales_b, "unilora_scales_B")):
            assert torch.equal(ours, getattr(theirs, key)[ADAPTER_NAME])
        x = torch.randn(3, 5, layer.in_features, generator=g)
        with torch.no_grad():
            expected = theirs(x)
            assert torch.equal(layer(x), expected)  # factors gathered from theta in the call
            with adapter.frozen():
                assert torch.equal(layer(x), expected)  # factors expanded once
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    assert torch.equal(layer(x), theirs(x))  # and cast once for autocast
    latents, t = torch.randn(1, 16, 1, 4, 4, generator=g), torch.tensor([0.4])
    with torch.no_grad():
        assert torch.equal(adapter(latents, t), twin(latents, t, None))


def test_the_exported_graphs_layer_computes_what_peft_computes(tiny_backbone):
    """`RowLoraLinear` reads each batch row's factors from its own packed row, zero-padded to a larger
    rank: a row with an adaptation gives peft's output, a row of zeros the base layer's."""
    adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=2, d=256, seed=5, targets="attn"))
    adapter.set_theta(torch.randn(adapter.d, generator=torch.Generator().manual_seed(3)) * 0.5)
    twin = peft_twin(tiny_backbone, adapter)
    factors = adapter.lora_factors()
    g = torch.Generator().manual_seed(4)
    offset, max_rank = 7, 3  # the layer's part starts after 7 numbers of other layers
    for name, layer in adapter.layers():
        a, b = factors[name]
        n_in, n_out = layer.in_features, layer.out_features
        row = torch.zeros(2, offset + max_rank * (n_in + n_out))
        row[1, offset: offset + max_rank * n_in].view(max_rank, n_in)[:2] = a
        row[1, offset + max_rank * n_in:].view(n_out, max_rank)[:, :2] = b
        context = RowContext()
        context.lora = row
        ours = RowLoraLinear(layer.base_layer, offset, max_rank, context)
        x = torch.randn(2, 5, n_in, generator=g)
        with torch.no_grad():
            out = ours(x)
            torch.testing.assert_close(out[1], twin.get_submodule(name)(x[1]), atol=1e-6, rtol=1e-5)
            assert torch.equal(out[0], layer.base_layer(x)[0])
