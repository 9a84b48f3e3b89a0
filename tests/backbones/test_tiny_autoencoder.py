"""TAEF2 in vov's own modules: its shipped weights, the latent's shape, a photo's round trip, and the
latent decoder exported to ONNX against torch."""

import numpy as np
import pytest
import torch

from vov.backbones.embedded import shipped_autoencoder
from vov.backbones.tiny_autoencoder import TinyAutoencoder


@pytest.fixture(scope="module")
def autoencoder():
    return shipped_autoencoder()[0]


@pytest.fixture(scope="module")
def photo():
    import skimage.data

    pixels = skimage.data.coffee()[:256, :384].astype(np.float32) / 255.0  # in the package, not held out
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None, :, None]  # (1, 3, 1, H, W)


def test_the_shipped_weights_fill_every_layer_and_name_themselves(autoencoder):
    _, identity = shipped_autoencoder()
    assert identity.startswith("taef2:") and len(identity) == len("taef2:") + 16
    assert sum(p.numel() for p in autoencoder.encoder.parameters()) == pytest.approx(1.34e6, rel=0.02)
    assert all(torch.isfinite(p).all() for p in autoencoder.parameters())


def test_a_photo_round_trips_at_one_eighth_resolution_without_blocks(autoencoder, photo):
    with torch.no_grad():
        latents = autoencoder.encode(photo)
        back = autoencoder.decode(latents).clamp(0, 1)
    assert latents.shape == (1, 32, 1, 32, 48)
    psnr = -10 * torch.log10((back - photo).pow(2).mean())
    assert psnr > 27.0, float(psnr)  # a pretrained autoencoder, not random weights (those give ~10 dB)


def test_frames_are_coded_one_by_one(autoencoder, photo):
    clip = torch.cat([photo, photo.flip(-1), photo.flip(-2)], dim=2)[..., :64, :64]
    with torch.no_grad():
        together = autoencoder.encode(clip)
        alone = torch.cat([autoencoder.encode(clip[:, :, i:i + 1]) for i in range(3)], dim=2)
    assert torch.allclose(together, alone, atol=1e-5)


def test_whitening_statistics_are_undone_by_decode(photo):
    plain, _ = shipped_autoencoder()
    whitened = TinyAutoencoder(32)
    whitened.load_state_dict(plain.state_dict())
    whitened.latent_mean.uniform_(-1, 1)
    whitened.latent_std.uniform_(0.5, 2)
    small = photo[..., :64, :64]
    with torch.no_grad():
        assert torch.allclose(whitened.decode(whitened.encode(small)), plain.decode(plain.encode(small)), atol=1e-4)


def test_the_latent_decoder_exports_to_onnx_and_matches_torch(tmp_path):
    from vov import backbones
    from vov.serving import graphs
    from vov.serving.contract import ANY_FRAMES
    from vov.serving.engines.onnx import ort_session

    backbone = backbones.load("embedded-2")
    assert backbone.config.autoencoder == "taef2"
    path = tmp_path / "vae_decoder.onnx"
    facts = graphs.write_latent_decoder(backbone, ANY_FRAMES, path, log=pytest.fail)
    assert facts["frames"] == ANY_FRAMES  # one graph for images and clips: frames decode one by one
    session = ort_session(path)
    module = backbone.export_latent_decoder(1)
    for frames in (1, 3):
        latents = torch.randn(1, 32, frames, 6, 10, generator=torch.Generator().manual_seed(frames))
        with torch.no_grad():
            expected = module(latents).numpy()
        got = session.run(None, {"latents": latents.numpy()})[0]
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-3, frames
