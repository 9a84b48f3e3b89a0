"""Wan's latent decoder exported as one latent frame with its causal cache (two graphs whatever the
clip's length) and looped by whoever serves it: the torch module against diffusers' own decode, the
graphs' inputs and outputs, ONNX Runtime's loop and Triton's `vae_decoder` model (in this process,
with Triton's module in miniature) against the torch decoder for clips of one to three latent
frames."""

import numpy as np
import pytest
import torch
from python_backend import Backend, Request, error, output

from vov.serving import contract
from vov.serving.engines.onnx import OrtEngine, ort_session
from vov.serving.parity import agreement, agrees


def test_the_chunk_module_loops_to_diffusers_decode_exactly(wan_backbone):
    first, later = (wan_backbone.export_latent_decoder_chunk(f) for f in (True, False))
    latents = torch.randn(2, 4, 4, 4, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = first(latents[:, :, :1])
        assert out[0].shape[2] == 1  # the first latent frame decodes to one pixel frame
        pixels = [out[0]]
        for i in range(1, 4):
            out = later(latents[:, :, i: i + 1], *out[1:])
            assert out[0].shape[2] == wan_backbone.temporal_factor
            pixels.append(out[0])
        expected = wan_backbone.decode(latents)
    assert torch.equal(torch.cat(pixels, 2), expected)
    assert all(cache.shape[2] == 2 for cache in out[1:])
    with pytest.raises(ValueError, match="one latent frame and 0 caches"):
        first(latents[:, :, :2])


def test_the_graphs_take_one_frame_and_pass_the_cache_on(wan_repository):
    info = contract.read_engine(wan_repository)
    chunks = info["latent_decoder_chunks"]
    caches = len(chunks["caches"])
    assert caches > 0
    first = ort_session(wan_repository / chunks["first"] / "1" / "model.onnx")
    later = ort_session(wan_repository / chunks["next"] / "1" / "model.onnx")
    assert [i.name for i in first.get_inputs()] == ["latents"]
    assert [i.name for i in later.get_inputs()] == ["latents", *contract.cache_inputs(caches)]
    for session in (first, later):
        assert [o.name for o in session.get_outputs()] == ["pixels", *contract.cache_outputs(caches)]
        assert session.get_inputs()[0].shape[2] == 1  # one latent frame, whatever the clip's length
    assert not (wan_repository / "vae_decoder" / "1" / "model.onnx").exists()


@pytest.mark.parametrize("frames", [1, 2, 3])
def test_onnx_runtime_loops_the_chunks_to_the_torch_pixels(wan_backbone, wan_repository, frames):
    engine = OrtEngine(wan_repository, backbone=wan_backbone)
    latents = torch.randn(2, 4, frames, 6, 4, generator=torch.Generator().manual_seed(frames))
    got = engine.decode(latents).numpy()
    expected = wan_backbone.decode(latents).numpy()
    assert got.shape == expected.shape == (2, 3, wan_backbone.pixel_frames(frames), 48, 32)
    assert agrees(got, expected), agreement(got, expected)
    assert np.abs(got - expected).max() < 1e-4


@pytest.fixture(scope="module")
def triton_decoder(wan_repository):
    """`vae_decoder` and the two chunk models it calls, loaded as Triton would."""
    backend = Backend()
    with backend:
        for model in ("vae_decoder_first", "vae_decoder_next"):
            backend.load(wan_repository, model)
        yield backend, backend.load(wan_repository, contract.DECODER_MODEL)


@pytest.mark.parametrize("frames", [1, 2, 3])
def test_the_triton_model_loops_the_chunks_to_the_torch_pixels(triton_decoder, wan_backbone, frames):
    backend, model = triton_decoder
    latents = torch.randn(1, 4, frames, 4, 6, generator=torch.Generator().manual_seed(10 + frames))
    backend.calls.clear()
    with backend:
        (response,) = model.execute([Request({"latents": latents.numpy()})])
    got = output(response, "pixels")
    expected = wan_backbone.decode(latents).numpy()
    assert agrees(got, expected) and np.abs(got - expected).max() < 1e-4
    assert [name for name, _ in backend.calls] == ["vae_decoder_first"] + ["vae_decoder_next"] * (frames - 1)
    for _, inputs in backend.calls[1:]:
        assert sorted(inputs) == sorted(["latents", *contract.cache_inputs(model.caches)])


def test_the_triton_model_refuses_what_is_out_of_bounds(triton_decoder, wan_repository):
    backend, model = triton_decoder
    axes = contract.read_engine(wan_repository)["axes"]
    bad = [np.zeros((1, 3, 1, 4, 6), np.float32), np.zeros((1, 4, axes["max_frames"] + 1, 2, 2), np.float32),
           np.zeros((1, 4, 1, 1, axes["max_cells"] + 1), np.float32)]
    with backend:
        responses = model.execute([Request({"latents": latents}) for latents in bad])
    assert "3 channels" in error(responses[0])
    assert f"at most {axes['max_frames']}" in error(responses[1])
    assert "exceed" in error(responses[2])
