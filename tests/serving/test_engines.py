"""One engine interface for torch and ONNX Runtime in this process: sessions, and decoders that agree
with the reference (the torch path) within the stated tolerance."""

import numpy as np
import pytest
import torch

from vov import codec
from vov.errors import BackboneMismatch, UsageError
from vov.method.adapters import AdaptedDenoiser, AdapterSpec
from vov.serving.contract import condition_arrays, decoder_for
from vov.serving.engines.onnx import OrtEngine
from vov.serving.engines.torch import TorchEngine
from vov.serving.parity import MAX_ABS_DIFF, MIN_PSNR, agreement, agrees


def test_the_torch_engine_is_the_codecs_own_decode(wan_backbone, wan_files):
    """The reference: TorchEngine decodes exactly what `vov decompress` decodes in process."""
    for data in wan_files:
        reference = codec.decompress(data, backbone=wan_backbone).pixels
        np.testing.assert_array_equal(
            codec.decompress(data, engine=TorchEngine(wan_backbone), backbone=wan_backbone).pixels, reference)


@pytest.mark.parametrize("name", ["wan", "image"])
def test_onnx_runtime_decodes_agree_with_the_reference(name, request):
    backbone = request.getfixturevalue(f"{name}_backbone")
    engine = OrtEngine(request.getfixturevalue(f"{name}_repository"), backbone=backbone)
    for data in request.getfixturevalue(f"{name}_files"):
        reference = codec.decompress(data, engine=TorchEngine(backbone), backbone=backbone).pixels
        got = codec.decompress(data, engine=engine, backbone=backbone).pixels
        a = agreement(got, reference)
        assert agrees(got, reference) and a["max_abs"] <= MAX_ABS_DIFF and a["psnr"] >= MIN_PSNR, a
        # in fp32 (no autocast) torch and the exported graph are one computation
        fp32 = codec.decompress(data, engine=TorchEngine(backbone, autocast=False), backbone=backbone).pixels
        assert agreement(got, fp32)["max_abs"] < 1e-4


def test_sessions_take_the_adaptation_once_and_serve_any_batch(wan_backbone, wan_repository):
    engine = OrtEngine(wan_repository, backbone=wan_backbone)
    adapter = AdaptedDenoiser(wan_backbone, AdapterSpec(rank=1, d=200, seed=4))
    adapter.set_theta(torch.randn(adapter.d) * 0.3)
    latents, t = torch.randn(3, 4, 2, 4, 6), torch.tensor([0.9, 0.5, 0.1])
    with engine.open(adapter) as session:  # no condition: the null caption
        together = session(latents, t)
        rows = [session.denoise(latents[i: i + 1], t[i: i + 1]) for i in range(3)]
    torch.testing.assert_close(together, torch.cat(rows), atol=1e-5, rtol=0)
    assert session.closed
    with pytest.raises(UsageError, match="closed"):
        session(latents, t)
    with TorchEngine(wan_backbone, autocast=False).open(adapter, wan_backbone.condition("")) as reference:
        assert adapter._reader.expanded is not None  # expanded once, for the session
        expected = reference(latents, t)
    assert adapter._reader.expanded is None
    torch.testing.assert_close(together, expected, atol=1e-4, rtol=0)


def test_latent_decoders_by_frame_count(wan_backbone, wan_repository):
    engine = OrtEngine(wan_repository, backbone=wan_backbone)
    latents = torch.randn(1, 4, 2, 4, 6)
    torch.testing.assert_close(engine.decode(latents), wan_backbone.decode(latents), atol=1e-4, rtol=0)
    with pytest.raises(BackboneMismatch, match="no latent decoder for 3 latent frames"):
        decoder_for({"1": "vae_decoder"}, 3)  # an image engine's
    assert decoder_for({"any": "vae_decoder"}, 17) == "vae_decoder"


def test_captions_reach_the_graph_as_it_takes_them(wan_backbone, image_backbone):
    wan = wan_backbone.condition("a red cat")
    embeddings, mask = condition_arrays(wan, 512, takes_mask=False)
    assert embeddings.shape == (1, 512, 32) and mask.shape == (1, 512)
    image = image_backbone.condition("a red cat")
    length = image.embeddings.shape[1]
    embeddings, mask = condition_arrays(image, 1024, takes_mask=True)
    assert embeddings.shape == (1, 1024, 16) and mask[0, :length].all() and not mask[0, length:].any()
    assert not embeddings[0, length:].any()
    assert condition_arrays(image, 1024, takes_mask=True, pad=False)[0].shape[1] == length
    with pytest.raises(UsageError, match="do not fit"):
        condition_arrays(image, 1024, takes_mask=False)


def test_agreement_figures():
    a = np.zeros((4, 4, 3), np.float32)
    b = a.copy()
    b[0, 0, 0] = 0.1
    figures = agreement(b, a)
    assert figures["max_abs"] == pytest.approx(0.1) and figures["psnr"] == pytest.approx(10 * np.log10(48 / 0.01))
    assert agreement(a, a)["psnr"] == float("inf") and not agrees(b, a) and agrees(a, a)
