"""The repository's Python-backend models (denoiser_session, and the ONNX Runtime runner behind it) in
this process, with Triton's module in miniature: the protocol, the bounds on every input and on the
number of held decodes, and that they compute what the in-process engine computes."""

import numpy as np
import pytest
import torch
from python_backend import Backend, error, output, sequence_request

from vov.method.adapters import AdaptedDenoiser, AdapterSpec
from vov.serving import contract
from vov.serving.engines.onnx import OrtEngine


@pytest.fixture(scope="module")
def models(wan_repository):
    """The session model and the denoiser runner it calls, loaded as Triton would."""
    backend = Backend()
    with backend:
        runner = backend.load(wan_repository, contract.DENOISER_MODEL)
        session = backend.load(wan_repository, contract.SESSION_MODEL)
        yield backend, session, runner


def constants(backbone, seed: int = 0, rank: int = 2, caption: str = "a red cat"):
    adapter = AdaptedDenoiser(backbone, AdapterSpec(rank=rank, d=300, seed=seed))
    adapter.set_theta(torch.randn(adapter.d, generator=torch.Generator().manual_seed(seed)) * 0.3)
    layout = contract.LoraLayout.for_backbone(backbone, 4)
    compact = layout.compact(adapter)
    condition = backbone.condition(caption)
    inputs = {"rank": np.array([[compact.rank]], np.int32), "slots": compact.slots[None], "factors": compact.factors[None],
              "embeddings": condition.embeddings.numpy(), "mask": condition.mask.numpy()}
    return adapter, condition, inputs


def test_the_session_model_packs_the_row_the_library_packs(models, wan_backbone):
    """The session model's own copy of the packing arithmetic (it cannot import vov) against the
    library's, for adaptations of different ranks and layers."""
    _, session, _ = models
    layout = contract.LoraLayout.for_backbone(wan_backbone, 4)
    assert session.layout.total == layout.total
    for seed, rank, targets in ((0, 1, ""), (1, 3, "cross-attn"), (2, 4, "self-attn")):
        adapter = AdaptedDenoiser(wan_backbone, AdapterSpec(rank=rank, d=300, seed=seed, targets=targets))
        adapter.set_theta(torch.randn(adapter.d, generator=torch.Generator().manual_seed(seed)))
        compact = layout.compact(adapter)
        row = session.layout.unpack(np, compact.rank, compact.slots.tolist(), compact.factors)
        np.testing.assert_array_equal(row, layout.unpack(compact))
        assert np.count_nonzero(row) > 0


def step_inputs(seed: int = 0, frames: int = 1):
    g = np.random.default_rng(seed)
    return {"latents": g.standard_normal((1, 4, frames, 4, 6)).astype(np.float32),
            "t": np.array([[0.25 + 0.1 * seed]], np.float32)}


def run(backend, model, *requests):
    with backend:
        return model.execute(list(requests))


def test_a_decode_computes_what_the_in_process_engine_computes(models, wan_backbone, wan_repository):
    backend, session, _ = models
    adapter, condition, first = constants(wan_backbone)
    local = OrtEngine(wan_repository, backbone=wan_backbone).open(adapter, condition)
    got = []
    for i in range(3):
        extra = first if i == 0 else {}
        got.append(output(run(backend, session, sequence_request(7, start=i == 0, **step_inputs(i), **extra))[0]))
        x = step_inputs(i)
        expected = local.denoise(torch.from_numpy(x["latents"]), torch.from_numpy(x["t"].reshape(1))).numpy()
        np.testing.assert_array_equal(got[-1], expected)
    # later steps sent latents and t only; the denoiser got the whole padded row every time
    assert all(shapes["lora"] == (1, session.layout.total) for _, shapes in backend.calls[-3:])
    released = run(backend, session, sequence_request(7, end=True, t=np.zeros((1, 1), np.float32)))[0]
    assert output(released).size == 0 and 7 not in session.sequences


def test_rows_of_different_decodes_run_as_one_batch(models, wan_backbone):
    backend, session, _ = models
    requests, alone = [], []
    for k in range(3):
        _, _, first = constants(wan_backbone, seed=k, rank=1 + k % 2, caption=["", "a dog", "the sea"][k])
        alone.append(output(run(backend, session, sequence_request(100 + k, start=True, **step_inputs(k), **first))[0]))
        requests.append(sequence_request(100 + k, **step_inputs(k)))
    before = len(backend.calls)
    together = run(backend, session, *requests)
    assert len(backend.calls) == before + 1 and backend.calls[-1][1]["latents"][0] == 3  # one call of 3 rows
    for k in range(3):
        np.testing.assert_allclose(output(together[k]), alone[k], atol=1e-5)
    # different shapes go as separate calls, in the same execute
    mixed = run(backend, session, sequence_request(100, **step_inputs(0, frames=2)), sequence_request(101, **step_inputs(1)))
    assert output(mixed[0]).shape == (1, 4, 2, 4, 6) and output(mixed[1]).shape == (1, 4, 1, 4, 6)
    for k in range(3):
        run(backend, session, sequence_request(100 + k, end=True, t=np.zeros((1, 1), np.float32)))


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(rank=np.array([[5]], np.int32)), "rank must be one number from 1 to 4"),
    (lambda c: c.update(rank=np.array([[0]], np.int32)), "rank must be"),
    (lambda c: c.update(slots=c["slots"][:, ::-1].copy()), "increasing"),
    (lambda c: c.update(slots=np.array([[0, 999]], np.int32)), "increasing indices below"),
    (lambda c: c.update(slots=np.zeros((1, 0), np.int32)), "slots must be"),
    (lambda c: c.update(factors=c["factors"][:, :-1].copy()), "factors hold"),
    (lambda c: c.update(factors=np.full_like(c["factors"], np.nan)), "finite"),
    (lambda c: c.update(embeddings=c["embeddings"][:, :100].copy(), mask=c["mask"][:, :100].copy()), "exactly 512"),
    (lambda c: c.update(embeddings=np.full_like(c["embeddings"], np.inf)), "finite"),
    (lambda c: c.update(mask=c["mask"][:, :3].copy()), "one per embedding"),
    (lambda c: c.pop("factors"), "carries rank, slots, factors and embeddings"),
])
def test_hostile_first_requests_are_refused_alone(models, wan_backbone, change, message):
    backend, session, _ = models
    _, _, first = constants(wan_backbone)
    change(first)
    good = sequence_request(2, start=True, **step_inputs(), **constants(wan_backbone, seed=1)[2])
    bad = sequence_request(1, start=True, **step_inputs(), **first)
    responses = run(backend, session, bad, good)
    assert message in error(responses[0]) and error(responses[0]).startswith("vov: ")
    assert 1 not in session.sequences
    output(responses[1])  # the other decode in the same batch is served
    run(backend, session, sequence_request(2, end=True, t=np.zeros((1, 1), np.float32)))


@pytest.mark.parametrize("latents, t, message", [
    (np.zeros((1, 4, 22, 4, 4), np.float32), 0.5, "22 frames, at most 21"),
    (np.zeros((1, 4, 1, 600, 600), np.float32), 0.5, "exceed"),
    (np.zeros((1, 4, 1, 4, 4), np.float32), 1.5, "between 0 and 1"),
    (np.zeros((1, 4, 1, 4, 4), np.float32), np.nan, "between 0 and 1"),
])
def test_steps_outside_the_bounds_are_refused(models, wan_backbone, latents, t, message):
    backend, session, _ = models
    _, _, first = constants(wan_backbone)
    output(run(backend, session, sequence_request(3, start=True, **step_inputs(), **first))[0])
    refused = run(backend, session, sequence_request(3, latents=latents, t=np.array([[t]], np.float32)))[0]
    assert message in error(refused)


def test_a_decode_that_is_not_held_is_told_to_start_again(models):
    backend, session, _ = models
    refused = run(backend, session, sequence_request(424242, **step_inputs()))[0]
    assert "no adaptation held" in error(refused) and "START" in error(refused)
    no_latents = run(backend, session, sequence_request(424242, t=np.zeros((1, 1), np.float32)))[0]
    assert "only the request that ends" in error(no_latents)


def test_held_decodes_are_bounded_by_count_and_idle_time(models, wan_backbone):
    backend, session, _ = models
    capacity, idle = session.capacity, session.idle
    session.sequences.clear()
    session.capacity = 2
    try:
        for k in range(3):
            output(run(backend, session, sequence_request(200 + k, start=True, **step_inputs(k),
                                                          **constants(wan_backbone, seed=k)[2]))[0])
        assert list(session.sequences) == [201, 202]  # the least recently used went first
        assert "no adaptation held" in error(run(backend, session, sequence_request(200, **step_inputs()))[0])
        output(run(backend, session, sequence_request(201, **step_inputs()))[0])  # 201 is now the most recent
        assert list(session.sequences) == [202, 201]
        session.sequences[202].used -= idle + 1  # 202 has been idle for longer than the idle time
        output(run(backend, session, sequence_request(201, **step_inputs()))[0])
        assert list(session.sequences) == [201]
    finally:
        session.capacity, session.idle = capacity, idle
        session.sequences.clear()


def test_the_session_model_unpacks_as_the_library_does(models, wan_backbone):
    _, session, _ = models
    layout = contract.LoraLayout.for_backbone(wan_backbone, 4)
    g = np.random.default_rng(0)
    for rank, slots in ((1, [0, 3, 7]), (4, list(range(len(layout.slots)))), (2, [5])):
        size = sum(rank * (layout.slots[i].in_features + layout.slots[i].out_features) for i in slots)
        compact = contract.CompactAdapter(rank, np.array(slots, np.int32), g.standard_normal(size).astype(np.float32))
        np.testing.assert_array_equal(session.layout.unpack(np, rank, slots, compact.factors), layout.unpack(compact))


def test_the_runner_checks_its_inputs(models):
    backend, _, runner = models
    from python_backend import Request

    total = runner.lora_total
    good = {"latents": np.zeros((1, 4, 1, 4, 4), np.float32), "t": np.zeros((1, 1), np.float32),
            "embeddings": np.zeros((1, 512, 32), np.float32), "lora": np.zeros((1, total), np.float32)}
    assert output(run(backend, runner, Request(good))[0]).shape == (1, 4, 1, 4, 4)
    for change, message in ((dict(lora=np.zeros((1, total - 1), np.float32)), f"hold {total} floats"),
                            (dict(embeddings=np.zeros((1, 511, 32), np.float32)), "exactly 512 tokens"),
                            (dict(latents=np.zeros((1, 4, 1, 600, 600), np.float32)), "exceed"),
                            (dict(latents=np.zeros((1, 4, 22, 4, 4), np.float32)), "at most 21"),
                            (dict(t=np.zeros((2, 1), np.float32)), "same batch axis")):
        assert message in error(run(backend, runner, Request({**good, **change}))[0])


def test_the_stubs_dlpack_refuses_the_strides_numpy_gives_empty_and_length_one_axes():
    """The fake stub holds the real one's rule, so the tests below can fail: these arrays are
    contiguous to numpy and not to the stub."""
    from python_backend import TritonModelException, take_capsule

    for array in (np.zeros((1, 16, 0, 0, 0), np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)[:, None, :]):
        assert array.flags.c_contiguous
        capsule = array.__dlpack__()
        with pytest.raises(TritonModelException, match="not contiguous"):
            take_capsule(capsule)


@pytest.mark.parametrize("array", [
    np.zeros((1, 16, 0, 0, 0), np.float32),  # the reply to a release
    np.zeros((0, 4), np.float32),
    np.arange(6, dtype=np.float32).reshape(2, 3)[:, None, :],  # a length-1 axis of stride 0
    np.arange(24, dtype=np.float32).reshape(4, 6)[1:2],  # a row of a batch
    np.arange(24, dtype=np.float32).reshape(2, 3, 4).transpose(2, 0, 1),  # not C order: copied
    np.arange(5, dtype=np.int32)[None, :, None],
    np.float32(3.5) * np.ones((1, 1, 1, 1, 1), np.float32),
    np.array([[True, False]]),  # a caption mask
])
def test_every_array_crosses_to_triton_with_its_values(models, array):
    from python_backend import noisy_capsules
    from vov_triton_tensors import to_triton

    backend, _, _ = models
    tensor = to_triton(backend.module, "x", array)
    assert tensor.as_numpy().shape == array.shape and tensor.as_numpy().dtype == array.dtype
    np.testing.assert_array_equal(tensor.as_numpy(), array)
    assert noisy_capsules() == 0  # each capsule the stub took carries DLPack's name: no traceback in the log


def test_releases_and_steps_of_every_shape_cross_the_stub(models, wan_backbone):
    """The session model's replies, the empty one to a release among them, and its calls to the
    denoiser, under the stub's DLPack rules: latents with axes of length 1 and a release of a decode
    that was never held, of one dropped and of one alive."""
    backend, session, _ = models
    noisy = backend.noisy
    _, _, first = constants(wan_backbone)
    for corrid, shape in ((31, (1, 4, 1, 2, 2)), (32, (1, 4, 2, 2, 6)), (33, (1, 4, 1, 8, 2))):  # Wan's patch: 2 x 2
        latents = np.random.default_rng(corrid).standard_normal(shape).astype(np.float32)
        step = run(backend, session, sequence_request(corrid, start=True, latents=latents,
                                                      t=np.array([[0.5]], np.float32), **first))[0]
        assert output(step).shape == shape
    session.sequences.pop(32)  # dropped (idle, or a full table)
    for corrid in (31, 32, 33, 999):
        released = run(backend, session, sequence_request(corrid, end=True, t=np.zeros((1, 1), np.float32)))[0]
        assert output(released).shape == (1, 4, 0, 0, 0)
    assert not {31, 33} & set(session.sequences)
    assert backend.noisy == noisy
