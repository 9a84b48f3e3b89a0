"""The tiny Wan2.1 folder served as `vov serve --backbone wan --model FOLDER` serves it (Triton, the
decoder and the encoder): a round trip through the services, decodes that match ONNX Runtime in
process and agree with torch, the adaptation sent once per decode, a latent decoder per frame count,
and concurrent decodes batched together."""

import io
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_picture
from PIL import Image

from vov import codec
from vov.media import to_uint8
from vov.method.adapters import AdapterSpec
from vov.method.fit import FitConfig
from vov.serving import client, contract
from vov.serving.engines.onnx import OrtEngine
from vov.serving.engines.torch import TorchEngine
from vov.serving.parity import agreement, agrees
from vov.serving.serve import Stack

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the services package of this checkout
from vov.serving.engines.triton import TritonEngine  # noqa: E402


@pytest.fixture(scope="module")
def triton(wan_backbone, wan_repository, tmp_path_factory):
    stack = Stack("wan", model=wan_backbone.model, device="cpu", repository=wan_repository, max_rank=4,
                  work=tmp_path_factory.mktemp("wan-serve"), torch_threads=1,
                  extra_decoder_args=["--grace", "5"], extra_encoder_args=["--grace", "5"])
    stack.start()
    yield stack
    stack.stop()


def test_round_trip_through_vov_serve(triton, wan_backbone, wan_repository):
    """compress (encoder service) -> file -> decompress (decoder service, Triton) on the Wan folder."""
    png = io.BytesIO()
    Image.fromarray((small_picture(4).pixels * 255).astype(np.uint8)).save(png, format="PNG")
    options = codec.EncodeOptions(backbone="wan", adapter=AdapterSpec(rank=1, d=192, seed=4),
                                  fit=FitConfig(steps=4, lam=0.01, seed=4), target_bpp=None, sampler_steps=4,
                                  caption="a red cat")
    data = client.remote_compress(triton.encoder_address, png.getvalue(), options, quiet=True)
    f = codec.parse(data)
    assert f.backbone == "wan" and f.backbone_hash == wan_backbone.content_hash and f.caption == "a red cat"
    served = np.asarray(Image.open(io.BytesIO(client.remote_decompress_png(triton.decoder_address, data)[0])))
    local = codec.decompress(data, engine=OrtEngine(wan_repository, backbone=wan_backbone),
                             backbone=wan_backbone).pixels
    np.testing.assert_array_equal(served, to_uint8(local))
    reference = codec.decompress(data, engine=TorchEngine(wan_backbone), backbone=wan_backbone).pixels
    assert agrees(local, reference), agreement(local, reference)


def per_decode_bytes(f, backbone, info) -> dict[str, int]:
    """What one decode of file `f` sends to Triton, by protocol: each step's packed row and caption
    (the stateless denoiser, as before) against the adaptation and caption once (a session)."""
    shape = codec.latent_shape(f, backbone, 1)
    latents = 4 * int(np.prod(shape))
    tokens, width = info["axes"]["text_tokens"], info["axes"]["text_dim"]
    caption = 4 * tokens * width
    row = 4 * contract.LoraLayout.from_json(info["layout"]).total
    layers = backbone.target_layers(f.targets)
    sizes = backbone.adaptable_layers()
    factors = 4 * f.rank * sum(sizes[n].in_features + sizes[n].out_features for n in layers)
    steps = f.sampler_steps
    return {"before": steps * (latents + 4 + caption + row) + latents,
            "after": steps * (latents + 4) + (4 + 4 * len(layers) + factors + caption + tokens) + 4 + latents}


def test_decodes_through_triton_match_onnx_runtime_and_agree_with_torch(triton, wan_backbone, wan_repository, wan_files):
    engine = TritonEngine(triton.triton_url, wan_backbone)
    local = OrtEngine(wan_repository, backbone=wan_backbone)
    info = contract.read_engine(wan_repository)
    for data in wan_files:
        f = codec.parse(data)
        before = engine.traffic()
        got = codec.decompress(data, engine=engine, backbone=wan_backbone).pixels
        sent = {k: v - before[k] for k, v in engine.traffic().items()}
        np.testing.assert_array_equal(got, codec.decompress(data, engine=local, backbone=wan_backbone).pixels)
        reference = codec.decompress(data, engine=TorchEngine(wan_backbone), backbone=wan_backbone).pixels
        assert agrees(got, reference), agreement(got, reference)
        # one request a step (the first with the adaptation), a release, and the latent decode
        assert sent["requests"] == f.sampler_steps + 2
        expected = per_decode_bytes(f, wan_backbone, info)
        assert sent["bytes"] == expected["after"]
        assert expected["before"] > 2 * expected["after"]


def test_a_latent_decoder_per_frame_count(triton, wan_backbone, wan_repository):
    engine = TritonEngine(triton.triton_url, wan_backbone)
    local = OrtEngine(wan_repository, backbone=wan_backbone)
    for frames in (1, 2):
        latents = torch.randn(1, 4, frames, 4, 6)
        np.testing.assert_array_equal(engine.decode(latents).numpy(), local.decode(latents).numpy())


def test_concurrent_decodes_give_the_sequential_pixels(triton, wan_backbone, wan_files):
    engine = TritonEngine(triton.triton_url, wan_backbone)
    files = [wan_files[i % 2] for i in range(4)]
    sequential = [codec.decompress(f, engine=engine, backbone=wan_backbone).pixels for f in files]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(lambda f: codec.decompress(f, engine=engine, backbone=wan_backbone).pixels, files))
    for a, b in zip(concurrent, sequential):
        np.testing.assert_allclose(a, b, atol=1e-5)
