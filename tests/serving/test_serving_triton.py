"""The tiny Wan2.1 folder served as `vov serve --backbone wan --model FOLDER` serves it (Triton, the
decoder and the encoder): a round trip through the services, decodes that match ONNX Runtime in
process and agree with torch, the adaptation sent once per decode, the latent decoder's chunk graphs
looped by Triton's `vae_decoder` model for any frame count, and concurrent decodes batched together."""

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


def test_the_latent_decoder_loops_its_chunks_over_any_frame_count(triton, wan_backbone, wan_repository):
    engine = TritonEngine(triton.triton_url, wan_backbone)
    local = OrtEngine(wan_repository, backbone=wan_backbone)
    for frames in (1, 2, 3):
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


def test_releases_canaries_and_odd_shapes_cross_triton_cleanly(triton, wan_backbone, wan_repository):
    """Every reply of the session model crosses Triton's Python-backend stub (by DLPack): steps whose
    latents have axes of length 1, the empty reply to a release (of a held decode and of one never
    held), the canary; hostile shapes are refused alone; and Triton's log holds no traceback."""
    import tritonclient.grpc as tc
    from tritonclient.utils import np_to_triton_dtype

    from vov.limits import LimitExceeded
    from vov.method.adapters import AdaptedDenoiser
    from vov.serving.engines.base import EngineUnavailable
    from vov.serving.engines.triton import SequenceLost
    from vov.serving.triton_server import free_port

    engine = TritonEngine(triton.triton_url, wan_backbone)
    local = OrtEngine(wan_repository, backbone=wan_backbone)
    adapter = AdaptedDenoiser(wan_backbone, AdapterSpec(rank=2, d=300, seed=3))
    adapter.set_theta(torch.randn(adapter.d, generator=torch.Generator().manual_seed(3)) * 0.3)
    condition = wan_backbone.condition("a red cat")
    t = torch.full((1,), 0.4)
    for shape in ((1, 4, 1, 2, 2), (1, 4, 2, 2, 4), (1, 4, 1, 6, 2)):  # axes of length 1; Wan's patch is 2 x 2
        latents = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
        with engine.open(adapter, condition) as session:
            got = session.denoise(latents, t)
        with local.open(adapter, condition) as session:
            np.testing.assert_array_equal(got.numpy(), session.denoise(latents, t).numpy())
    running = engine.open(adapter, condition)  # a decode in flight meanwhile: nothing below may end it
    before = running.denoise(latents, t)
    for hostile in (torch.zeros(1, 4, 0, 4, 4), torch.zeros(1, 4, 1, 3, 3)):  # no frames; not whole patches
        with engine.open(adapter, condition) as session:
            with pytest.raises(LimitExceeded):
                session.denoise(hostile, t)
    engine.probe(canary=True)
    with pytest.raises(SequenceLost):  # a failed request of this engine (a step of no decode) ends only itself
        engine.infer(contract.SESSION_MODEL, {"latents": latents.numpy(), "t": t.numpy()[:, None]}, "velocity",
                     sequence=(4141, False, False))
    with pytest.raises(EngineUnavailable):  # a failed probe (nothing listens there) ends only itself
        TritonEngine(f"127.0.0.1:{free_port()}", wan_backbone).probe(canary=True)
    np.testing.assert_array_equal(running.denoise(latents, t).numpy(), before.numpy())
    running.close()

    def request(corrid, start=False, end=False, **inputs):
        tensors = []
        for name, value in inputs.items():
            tensors.append(tc.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype)))
            tensors[-1].set_data_from_numpy(value)
        reply = raw.infer(contract.SESSION_MODEL, tensors, outputs=[tc.InferRequestedOutput("velocity")],
                          sequence_id=corrid, sequence_start=start, sequence_end=end, client_timeout=30)
        return reply.as_numpy("velocity")

    with engine.open(adapter, condition) as session:
        constants = session.constants
    raw = tc.InferenceServerClient(triton.triton_url)
    try:
        step = {"latents": np.zeros((1, 4, 1, 4, 6), np.float32), "t": np.full((1, 1), 0.5, np.float32)}
        assert request(4242, start=True, **step, **constants).shape == (1, 4, 1, 4, 6)
        release = {"t": np.zeros((1, 1), np.float32)}
        assert request(4242, end=True, **release).shape == (1, 4, 0, 0, 0)  # a held decode's release
        assert request(4343, start=True, end=True, **release, **constants).shape == (1, 4, 0, 0, 0)
    finally:
        raw.close()
    log = triton.triton.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "DLPack" not in log, log[-3000:]
