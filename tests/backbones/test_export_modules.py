"""Each backbone's export modules: the plain torch signatures an exporter relies on, and (slow) that
torch's dynamo ONNX exporter at opset 18 takes them with dynamic sizes and ONNX Runtime agrees."""

import logging
import warnings

import numpy as np
import pytest
import torch

OPSET = 18


def test_embedded_export_module_is_the_denoiser(tiny_backbone):
    module = tiny_backbone.export_denoiser()
    signature = tiny_backbone.export_signature()
    latents, t = torch.randn(2, 16, 3, 4, 6), torch.rand(2)
    embeddings = tiny_backbone.condition("").embeddings.expand(2, -1, -1)
    assert embeddings.shape == (2, signature.text_tokens, signature.text_dim)
    with torch.no_grad():
        assert torch.equal(module(latents, t, embeddings), tiny_backbone.velocity(latents, t))
    decoder = tiny_backbone.export_latent_decoder(3)
    assert torch.equal(decoder(latents), tiny_backbone.decode(latents))


def test_embedded_traceable_grid_is_linspace_to_the_bit():
    from vov.backbones.embedded import coordinate_grid, traceable_coordinate_grid

    for shape in [(1, 1, 1), (1, 4, 6), (17, 5, 9), (3, 64, 96), (2, 2, 3)]:
        assert torch.equal(traceable_coordinate_grid(*shape), coordinate_grid(*shape)), shape
    from vov.backbones.embedded import _traceable_axis

    assert all(torch.equal(_traceable_axis(n), torch.linspace(-1.0, 1.0, n)) for n in range(2, 2001))


def test_export_modules_do_not_alter_the_backbone(wan, qwen):
    for backbone in (wan, qwen):
        module = backbone.export_denoiser()
        assert module.transformer is not backbone.transformer
        first = next(module.transformer.parameters())
        assert first is next(backbone.transformer.parameters())  # shared, not copied
        name = backbone.target_layers(backbone.default_targets)[0].split(".", 1)[1]
        parent, _, child = name.rpartition(".")
        setattr(module.transformer.get_submodule(parent), child, torch.nn.Identity())
        assert isinstance(backbone.transformer.get_submodule(name), torch.nn.Linear)


def test_wan_decoder_module_is_made_for_one_frame_count(wan):
    decoder = wan.export_latent_decoder(2)
    latents = torch.randn(1, 4, 2, 4, 6)
    with torch.no_grad():
        assert torch.allclose(decoder(latents), wan.decode(latents), atol=1e-6)
        with pytest.raises(ValueError, match="2 latent frames"):
            decoder(torch.randn(1, 4, 3, 4, 6))


def _export_and_compare(module, args, names, dynamic, path, other_args):
    import onnxruntime

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=names, output_names=["out"], dynamic_shapes=dynamic,
                          opset_version=OPSET, dynamo=True, external_data=False, verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for inputs in (args, other_args):
        out = session.run(None, {n: a.numpy() for n, a in zip(names, inputs)})[0]
        with torch.no_grad():
            ref = module(*inputs).numpy()
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() < 1e-4


@pytest.mark.slow
def test_wan_denoiser_exports_with_dynamic_batch_frames_and_size(wan, tmp_path):
    pytest.importorskip("onnxscript")
    from torch.export import Dim

    embeddings = wan.condition("a red cat").embeddings
    args = (torch.randn(2, 4, 3, 8, 12), torch.rand(2), embeddings.expand(2, -1, -1).contiguous())
    other = (torch.randn(1, 4, 2, 6, 10), torch.rand(1), embeddings)
    batch, frames = Dim("batch", min=1, max=64), Dim("frames", min=1, max=64)
    height, width = Dim("h", min=2, max=512), Dim("w", min=2, max=512)
    dynamic = {"latents": {0: batch, 2: frames, 3: 2 * height, 4: 2 * width}, "t": {0: batch},
               "embeddings": {0: batch}}
    _export_and_compare(wan.export_denoiser(), args, ["latents", "t", "embeddings"], dynamic,
                        tmp_path / "wan.onnx", other)


@pytest.mark.slow
def test_image_denoiser_with_real_rotary_exports(qwen, tmp_path):
    pytest.importorskip("onnxscript")
    from torch.export import Dim

    embeddings = qwen.condition("a red cat").embeddings
    tokens = embeddings.shape[1]
    mask = torch.ones(2, tokens, dtype=torch.bool)
    args = (torch.randn(2, 4, 1, 8, 12), torch.rand(2), embeddings.expand(2, -1, -1).contiguous(), mask)
    other = (torch.randn(1, 4, 1, 6, 10), torch.rand(1), embeddings, mask[:1])
    batch, length = Dim("batch", min=1, max=64), Dim("tokens", min=2, max=1024)
    height, width = Dim("h", min=2, max=512), Dim("w", min=2, max=512)
    dynamic = {"latents": {0: batch, 3: 2 * height, 4: 2 * width}, "t": {0: batch},
               "embeddings": {0: batch, 1: length}, "mask": {0: batch, 1: length}}
    _export_and_compare(qwen.export_denoiser(), args, ["latents", "t", "embeddings", "mask"], dynamic,
                        tmp_path / "image.onnx", other)


@pytest.mark.slow
def test_wan_latent_decoder_exports_per_frame_count(wan, tmp_path):
    pytest.importorskip("onnxscript")
    from torch.export import Dim

    args = (torch.randn(2, 4, 1, 4, 6),)  # the tracer pins sizes of 1: trace with 2
    other = (torch.randn(1, 4, 1, 6, 4),)
    dynamic = {"latents": {0: Dim("batch", min=1, max=16), 3: Dim("h", min=2, max=256), 4: Dim("w", min=2, max=256)}}
    _export_and_compare(wan.export_latent_decoder(1), args, ["latents"], dynamic, tmp_path / "vae.onnx", other)
