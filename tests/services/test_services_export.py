"""`vov export` of the tiny embedded model, and the adaptation crossing to a real Triton once per decode.

The Triton tests start the stack as `vov serve` does (vov.serving.serve.Stack): Triton with the
exported repository, the decoder pointed at it, and the encoder.
"""

import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from service_media import picture, tiny_options

from vov import codec
from vov.media import to_uint8
from vov.errors import BackboneMismatch
from vov.limits import LimitExceeded
from vov.method.adapters import AdaptedDenoiser, AdapterSpec
from vov.serving import client, contract, graphs, repository
from vov.serving.contract import check_backbone
from vov.serving.engines.onnx import OrtEngine
from vov.serving.engines.torch import TorchEngine
from vov.serving.parity import agreement, agrees, parity
from vov.serving.serve import Stack


def test_parity_with_torch_within_1e4(tiny_backbone, tiny_repository):
    diffs = parity(tiny_backbone, tiny_repository, rank=2, d=300)
    assert diffs["denoiser"] < 1e-4 and diffs["vae_decoder"] < 1e-4, diffs


def test_engine_records_the_backbone(tiny_backbone, tiny_repository):
    assert repository.is_current(tiny_repository, tiny_backbone, 4)
    assert not repository.is_current(tiny_repository, tiny_backbone, 8)
    info = contract.read_engine(tiny_repository)
    check_backbone(info, tiny_backbone)
    with pytest.raises(BackboneMismatch):
        check_backbone({**info, "content_hash": "00" * 8}, tiny_backbone)
    assert info["latent_decoders"] == {contract.ANY_FRAMES: "vae_decoder"}  # frames map one to one
    assert info["denoiser"]["inputs"] == ["latents", "t", "embeddings", "lora"]


def test_rows_of_one_batch_are_independent(tiny_backbone, tiny_repository):
    """A batch that mixes adaptations gives each row what it gives alone, for other latent sizes too."""
    engine = OrtEngine(tiny_repository, backbone=tiny_backbone)
    g = torch.Generator().manual_seed(3)
    latents = torch.randn((3, *tiny_backbone.latent_shape(1, 32, 48)), generator=g).numpy()
    t = np.array([0.9, 0.5, 0.1], dtype=np.float32)
    embeddings, mask = engine.condition(None)
    rows = []
    for seed in range(3):
        adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=1 + seed, d=200, seed=seed))
        adapter.set_theta(torch.randn(adapter.d, generator=g))
        rows.append(engine.layout.pack_adapter(adapter))
    repeat = lambda a, n: np.repeat(a, n, axis=0)  # noqa: E731
    together = engine.run_denoiser(latents, t, repeat(embeddings, 3), repeat(mask, 3), np.stack(rows))
    for i in range(3):
        alone = engine.run_denoiser(latents[i:i + 1], t[i:i + 1], embeddings, mask, rows[i][None])
        np.testing.assert_allclose(together[i:i + 1], alone, atol=1e-5)


def test_rank_above_the_engine_maximum_is_refused(tiny_backbone, tiny_repository):
    layout = contract.LoraLayout.from_json(contract.read_engine(tiny_repository)["layout"])
    adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=layout.max_rank + 1, d=256))
    with pytest.raises(BackboneMismatch, match="maximum rank"):
        layout.compact(adapter)


def parse_config(path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    assert "@" not in path.read_text()  # every placeholder filled in
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_repository_configs_are_valid_triton_model_configs(tiny_backbone, tiny_repository, tmp_path, monkeypatch):
    """Every rendered config.pbtxt parses as Triton's ModelConfig; the GPU variant comes with its plan build."""
    def copy_graph(model):  # the same backbone and layout make the same graphs: copy the cpu export's
        return lambda *args: shutil.copyfile(tiny_repository / model / "1" / "model.onnx", args[-1])

    monkeypatch.setattr(graphs, "export_denoiser", copy_graph("denoiser"))
    monkeypatch.setattr(graphs, "export_vae_decoder", copy_graph("vae_decoder"))
    info = repository.export_repository(tiny_backbone, tmp_path, max_rank=4, variant="gpu", log=lambda m: None)
    assert (repository.is_current(tmp_path, tiny_backbone, 4, "gpu")
            and not repository.is_current(tmp_path, tiny_backbone, 4))
    for model in (contract.SESSION_MODEL, contract.DENOISER_MODEL, "vae_decoder"):
        cpu, gpu = parse_config(tiny_repository / model / "config.pbtxt"), parse_config(tmp_path / model / "config.pbtxt")
        assert cpu.name == gpu.name == model and cpu.max_batch_size == gpu.max_batch_size == repository.MAX_BATCH
    for variant in (tiny_repository, tmp_path):
        session = parse_config(variant / contract.SESSION_MODEL / "config.pbtxt")
        assert session.backend == "python" and session.HasField("sequence_batching")
        assert session.sequence_batching.oldest.max_candidate_sequences == repository.DEFAULT_MAX_SEQUENCES
        assert {c.name for c in session.sequence_batching.control_input} == {"START", "END", "CORRID"}
        assert (variant / contract.SESSION_MODEL / "1" / "model.py").exists()
    assert parse_config(tmp_path / "denoiser" / "config.pbtxt").platform == "tensorrt_plan"
    assert parse_config(tiny_repository / "denoiser" / "config.pbtxt").backend == "python"
    assert not (tiny_repository / repository.PLAN_SCRIPT).exists() and not (tmp_path / "denoiser" / "1" / "model.py").exists()
    total = contract.LoraLayout.from_json(info["layout"]).total
    script = (tmp_path / repository.PLAN_SCRIPT).read_text()
    assert f"lora:8x{total}" in script and script.count("--saveEngine=") == 2
    assert "embeddings:8x1x8" in script


# --------------------------------------------------------------------------------------------
# a real Triton, started as `vov serve` starts it


@pytest.fixture(scope="module")
def stack(tiny_repository, tmp_path_factory):
    s = Stack("tiny", repository=tiny_repository, work=tmp_path_factory.mktemp("stack-export"), max_rank=4,
              torch_threads=1, extra_decoder_args=["--grace", "5"], extra_encoder_args=["--grace", "5"])
    s.start()
    yield s
    s.stop()


@pytest.fixture
def triton_engine(stack, tiny_backbone):
    from vov.serving.engines.triton import TritonEngine

    return TritonEngine(stack.triton_url, tiny_backbone)


def decode_png(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float32) / 255


@pytest.mark.slow
def test_round_trip_through_vov_serve_agrees_with_every_engine(stack, tiny_backbone, tiny_repository):
    """compress -> encoder service -> file -> decoder service (Triton) -> PNG; the same file through
    ONNX Runtime in this process gives the same pixels, and both agree with the torch reference."""
    png = io.BytesIO()
    Image.fromarray((picture(2, 48, 64).pixels * 255).astype(np.uint8)).save(png, format="PNG")
    data = client.remote_compress(stack.encoder_address, png.getvalue(), tiny_options(2), quiet=True)
    served = decode_png(client.remote_decompress_png(stack.decoder_address, data)[0])
    local = codec.decompress(data, engine=OrtEngine(tiny_repository, backbone=tiny_backbone),
                             backbone=tiny_backbone).pixels
    np.testing.assert_array_equal(served, to_uint8(local).astype(np.float32) / 255)
    reference = codec.decompress(data, engine=TorchEngine(tiny_backbone), backbone=tiny_backbone).pixels
    assert agrees(local, reference), agreement(local, reference)
    assert agrees(served, reference), agreement(served, reference)


@pytest.mark.slow
def test_bytes_per_decode_before_and_after(triton_engine, tiny_backbone, tiny_repository):
    """A decode sends its adaptation and caption once: every step carries latents and t only."""
    data = codec.compress(picture(3), tiny_options(3, sampler_steps=8), backbone=tiny_backbone).data
    f = codec.parse(data)
    before = triton_engine.traffic()
    codec.decompress(data, engine=triton_engine, backbone=tiny_backbone)
    sent = {k: v - before[k] for k, v in triton_engine.traffic().items()}
    info = contract.read_engine(tiny_repository)
    latents = 4 * int(np.prod(codec.latent_shape(f, tiny_backbone, 1)))
    caption = 4 * info["axes"]["text_tokens"] * info["axes"]["text_dim"] + info["axes"]["text_tokens"]
    adapter = codec.adapter_for(f, tiny_backbone)
    constants = 4 + 4 * len(adapter.layers()) + 4 * adapter.lora_entries + caption
    assert sent == {"requests": 8 + 2, "bytes": 8 * (latents + 4) + constants + 4 + latents}
    packed_row_every_step = 8 * (latents + 4 + 4 * contract.LoraLayout.from_json(info["layout"]).total + caption) + latents
    assert packed_row_every_step > 4 * sent["bytes"]


@pytest.mark.slow
def test_triton_checks_what_it_is_sent(triton_engine, tiny_backbone):
    """Hostile or oversized requests to the served models are refused one by one; the models stay up."""
    from vov.serving.engines.triton import SequenceLost, TritonSession

    adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=2, d=256))
    with triton_engine.open(adapter) as good:
        constants = dict(good.constants)
        latents, t = torch.zeros(1, 16, 1, 4, 4), torch.full((1,), 0.5)
        expected = good.denoise(latents, t)
    with TritonSession(triton_engine, {**constants, "factors": constants["factors"][:, :-3]}) as bad:
        with pytest.raises(LimitExceeded, match="refused.*factors hold"):
            bad.denoise(latents, t)
    with triton_engine.open(adapter) as session:
        with pytest.raises(LimitExceeded, match="refused.*latents have 18 frames, at most 17 allowed"):
            session.denoise(torch.zeros(1, 16, 18, 4, 4), t)  # a clip of the tiny backbone is 17 latent frames
    with pytest.raises(SequenceLost):  # a step of a decode Triton does not know: start it again
        triton_engine.infer(contract.SESSION_MODEL, {"latents": latents.numpy(), "t": t.numpy()[:, None]}, "velocity",
                            sequence=(12345, False, False))
    with pytest.raises(LimitExceeded, match="refused.*unexpected shape for input 'lora'"):
        triton_engine.infer(contract.DENOISER_MODEL, {"latents": latents.numpy(), "t": t.numpy()[:, None],
                                                    "embeddings": constants["embeddings"],
                                                    "lora": np.zeros((1, 7), np.float32)}, "velocity")
    with triton_engine.open(adapter) as again:
        torch.testing.assert_close(again.denoise(latents, t), expected, atol=0, rtol=0)


@pytest.mark.slow
def test_a_decode_survives_a_triton_restart(stack, triton_engine, tiny_backbone):
    """Triton forgets every sequence when it restarts: the session sends its adaptation again."""
    adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=2, d=256, seed=5))
    adapter.set_theta(torch.randn(adapter.d) * 0.3)
    latents, t = torch.randn(1, 16, 1, 4, 6), torch.full((1,), 0.7)
    with triton_engine.open(adapter) as session:
        first = session.denoise(latents, t)
        stack.triton.process.kill()  # a crash: Triton comes back knowing no decode
        stack.triton.process.wait()
        stack.restart("triton")
        sent = triton_engine.traffic()["bytes"]
        again = session.denoise(latents, t)  # its own connection found the old one gone: a new one
        assert triton_engine.traffic()["bytes"] - sent >= session.constants["factors"].nbytes  # sent again
    torch.testing.assert_close(again, first, atol=0, rtol=0)
