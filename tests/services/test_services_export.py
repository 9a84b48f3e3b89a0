"""`vov export`: ONNX graphs with the adaptation as an input, checked against torch."""

import numpy as np
import pytest
import torch

from vov import codec
from vov.method.adapters import AdaptedDenoiser, AdapterSpec
from vov.serving.engine import OrtEngine, check_backbone, decompress, parity
from vov.errors import BackboneMismatch
from vov.serving.export import LoraLayout, is_current, read_engine


def test_parity_with_torch_within_1e4(tiny_backbone, tiny_repository):
    diffs = parity(tiny_backbone, tiny_repository, rank=2, d=300)
    assert diffs["denoiser"] < 1e-4 and diffs["vae_decoder"] < 1e-4, diffs


def test_engine_records_the_backbone(tiny_backbone, tiny_repository):
    assert is_current(tiny_repository, tiny_backbone, 4)
    assert not is_current(tiny_repository, tiny_backbone, 8)
    info = read_engine(tiny_repository)
    check_backbone(info, tiny_backbone)
    with pytest.raises(BackboneMismatch):
        check_backbone({**info, "content_hash": "00" * 8}, tiny_backbone)


def test_rows_of_one_batch_are_independent(tiny_backbone, tiny_repository):
    """A batch that mixes adaptations gives each row what it gives alone, for other latent sizes too."""
    engine = OrtEngine(tiny_repository)
    g = torch.Generator().manual_seed(3)
    latents = torch.randn((3, *tiny_backbone.latent_shape(1, 32, 48)), generator=g).numpy()
    t = np.array([0.9, 0.5, 0.1], dtype=np.float32)
    rows = []
    for seed in range(3):
        adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=1 + seed, d=200, seed=seed))
        adapter.set_theta(torch.randn(adapter.d, generator=g))
        rows.append(engine.layout.pack_adapter(adapter))
    together = engine.denoise(latents, t, np.stack(rows))
    for i in range(3):
        alone = engine.denoise(latents[i:i + 1], t[i:i + 1], rows[i][None])
        np.testing.assert_allclose(together[i:i + 1], alone, atol=1e-5)


def test_rank_above_the_engine_maximum_is_refused(tiny_backbone, tiny_repository):
    layout = LoraLayout.from_json(read_engine(tiny_repository)["layout"])
    adapter = AdaptedDenoiser(tiny_backbone, AdapterSpec(rank=layout.max_rank + 1, d=256))
    with pytest.raises(BackboneMismatch, match="maximum rank"):
        layout.pack_adapter(adapter)


def test_onnx_decode_is_close_to_torch(tiny_backbone, tiny_repository, tiny_files):
    """The exported graphs (fp32) and the in-process torch sampler (bf16 autocast) agree closely."""
    engine = OrtEngine(tiny_repository)
    for data in tiny_files[:2]:
        via_onnx = decompress(data, engine, engine.layout, tiny_backbone).pixels
        via_torch = codec.decompress(data, backbone=tiny_backbone).pixels
        assert via_onnx.shape == via_torch.shape
        assert np.abs(via_onnx - via_torch).mean() < 0.02


def parse_config(path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    assert "@" not in path.read_text()  # every placeholder filled in
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_repository_configs_are_valid_triton_model_configs(tiny_backbone, tiny_repository, tmp_path):
    """Every rendered config.pbtxt parses as Triton's ModelConfig; the GPU variant comes with its plan build."""
    from vov.serving import export

    info = export.export_repository(tiny_backbone, tmp_path, max_rank=2, variant="gpu", log=lambda m: None)
    assert export.is_current(tmp_path, tiny_backbone, 2, "gpu") and not export.is_current(tmp_path, tiny_backbone, 2)
    for model in export.MODELS:
        cpu, gpu = parse_config(tiny_repository / model / "config.pbtxt"), parse_config(tmp_path / model / "config.pbtxt")
        assert cpu.name == gpu.name == model and cpu.max_batch_size == gpu.max_batch_size == export.MAX_BATCH
        assert cpu.backend == "python" and gpu.platform == "tensorrt_plan"
    assert not (tiny_repository / export.PLAN_SCRIPT).exists()
    total = export.LoraLayout.from_json(info["layout"]).total
    script = (tmp_path / export.PLAN_SCRIPT).read_text()
    assert f"lora:8x{total}" in script and script.count("--saveEngine=") == 2
