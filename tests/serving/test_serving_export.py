"""`vov export` of the real model classes (tiny Wan2.1 and Qwen-Image folders) through the backbone
interface: parity with torch, what the engine file records, the shapes the plans are built for."""

import json

import numpy as np
import pytest
import torch

from vov.cli import export
from vov.errors import UsageError
from vov.serving import contract, graphs, repository
from vov.serving.parity import parity


@pytest.mark.parametrize("name", ["wan", "image"])
def test_parity_with_torch_within_1e4_two_adaptations_in_one_batch(name, request):
    backbone = request.getfixturevalue(f"{name}_backbone")
    repo = request.getfixturevalue(f"{name}_repository")
    diffs = parity(backbone, repo, rank=2, d=300)
    assert set(diffs) == {"denoiser", *contract.read_engine(repo)["latent_decoders"].values()}
    assert all(diff < 1e-4 for diff in diffs.values()), diffs


def test_wan_engine_file_says_how_frames_are_served(wan_backbone, wan_repository):
    info = contract.read_engine(wan_repository)
    assert info["opset"] >= 18 and info["backbone"] == "wan"
    assert info["denoiser"]["frames"] == contract.ANY_FRAMES  # one denoiser for images and clips
    assert info["denoiser"]["inputs"] == ["latents", "t", "embeddings", "lora"]
    assert info["denoiser"]["max_frames"] == wan_backbone.latent_frames(81) == 21
    # the Wan VAE keeps a causal cache: one latent frame's graphs, looped by `vae_decoder`, said so
    assert info["latent_decoders"] == {contract.ANY_FRAMES: "vae_decoder"}
    assert "looped over the clip's frames" in info["latent_decoder_note"]
    chunks = info["latent_decoder_chunks"]
    assert (chunks["first"], chunks["next"]) == ("vae_decoder_first", "vae_decoder_next")
    assert {g["frames"] for g in info["latent_decoder_graphs"].values()} == {1}
    assert info["axes"]["text_tokens"] == 512 and not info["axes"]["takes_mask"]
    for model in ("denoiser", "vae_decoder_first", "vae_decoder_next"):
        assert graphs.graph_facts(wan_repository / model / "1" / "model.onnx")["external_data"] is False
    session = contract.read_engine(wan_repository)["session"]
    assert session["bytes_per_sequence"] == 4 * contract.LoraLayout.from_json(info["layout"]).total + 4 * 512 * 32 + 512


def test_image_engine_file_takes_a_mask_and_one_frame(image_repository):
    info = contract.read_engine(image_repository)
    assert info["denoiser"]["inputs"] == ["latents", "t", "embeddings", "mask", "lora"]
    assert info["denoiser"]["frames"] == 1 and info["latent_decoders"] == {"1": "vae_decoder"}
    assert info["axes"]["takes_mask"] and info["axes"]["text_tokens"] == 1024


def test_export_finds_the_slots_by_their_weights_not_their_names(wan_backbone):
    """An export module may nest the transformer anywhere: the slot layers are found by identity."""
    from torch import nn

    layout = contract.LoraLayout.for_backbone(wan_backbone, 2)

    class Nested(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.wrapped = nn.ModuleDict({"any_name": inner})

        def forward(self, latents, t, embeddings):
            return self.wrapped["any_name"](latents, t, embeddings)

    original = wan_backbone.export_denoiser

    class Proxy:
        def __getattr__(self, item):
            return getattr(wan_backbone, item)

        def export_denoiser(self):
            return Nested(original())

    module = graphs.lora_module(Proxy(), layout)
    latents, t = torch.randn(1, 4, 1, 4, 4), torch.rand(1)
    embeddings = torch.randn(1, 512, 32)
    with torch.no_grad():
        plain = module(latents, t, embeddings, torch.zeros(1, layout.total))
        assert torch.allclose(plain, original()(latents, t, embeddings), atol=1e-6)
        adapted = module(latents, t, embeddings, torch.full((1, layout.total), 0.05))
    assert not torch.allclose(adapted, plain)
    replaced = [m for m in module.modules() if type(m).__name__ == "RowLoraLinear"]
    assert len(replaced) == len(layout.slots)
    assert all(isinstance(layer, nn.Linear) for layer in wan_backbone.adaptable_layers().values())  # untouched


def test_latent_frame_counts(wan_backbone, image_backbone):
    from vov.backbones.embedded import tiny

    assert graphs.latent_decoder_frames(wan_backbone) == [contract.ANY_FRAMES]  # the chunks, looped
    assert graphs.is_chunked(wan_backbone) and not graphs.is_chunked(image_backbone)
    assert graphs.latent_decoder_frames(image_backbone) == [1]
    assert graphs.latent_decoder_frames(tiny()) == [contract.ANY_FRAMES]  # frames map one to one


def test_gpu_plan_profiles_every_graph(wan_backbone, wan_repository):
    info = contract.read_engine(wan_repository)
    total = contract.LoraLayout.from_json(info["layout"]).total
    script = repository.plan_script({**info, "max_batch": 2}, opt_batch=1, opt_frames=21, opt_size=(60, 104))
    lines = [line for line in script.splitlines() if line.startswith('"$TRTEXEC"')]
    assert len(lines) == 3  # the denoiser and the latent decoder's two chunk graphs
    denoiser = next(line for line in lines if "--onnx=denoiser/1/model.onnx" in line)
    assert "--minShapes=latents:1x4x1x4x4,t:1,embeddings:1x512x32,lora:1x" in denoiser
    assert f"--optShapes=latents:1x4x21x60x104,t:1,embeddings:1x512x32,lora:1x{total}" in denoiser
    assert f"--maxShapes=latents:2x4x21x512x512,t:2,embeddings:2x512x32,lora:2x{total}" in denoiser
    first = next(line for line in lines if "vae_decoder_first/1/model.onnx" in line)
    assert "--minShapes=latents:1x4x1x2x2 " in first and first.endswith("--maxShapes=latents:2x4x1x512x512")
    later = next(line for line in lines if "vae_decoder_next/1/model.onnx" in line)
    caches = info["latent_decoder_chunks"]["caches"]
    for i, (c, s) in enumerate(caches):  # every cache at its scale of the latent sides, two frames
        assert f"cache_{i}:1x{c}x2x{2 * s}x{2 * s}" in later and f"cache_{i}:1x{c}x2x{60 * s}x{104 * s}" in later
        assert f"cache_{i}:2x{c}x2x{512 * s}x{512 * s}" in later
    assert json.loads(json.dumps(info))["max_batch"] == repository.MAX_BATCH


def test_plan_optimum_from_pixels(wan_backbone):
    shapes = export._plan_shapes("1x81x832x480", wan_backbone)
    assert shapes == {"opt_batch": 1, "opt_frames": 21, "opt_size": (60, 104)}
    with pytest.raises(UsageError, match="BATCHxFRAMESxWIDTHxHEIGHT"):
        export._plan_shapes("1x81x832", wan_backbone)


def test_compact_adaptation_unpacks_to_the_padded_row(wan_backbone):
    """The factors of the file's own layers at its own rank, padded into the engine's row: zero
    padding everywhere else, and each layer's A and B where the graph reads them."""
    from vov.errors import BackboneMismatch
    from vov.method.adapters import AdaptedDenoiser, AdapterSpec

    layout = contract.LoraLayout.for_backbone(wan_backbone, 4)
    adapter = AdaptedDenoiser(wan_backbone, AdapterSpec(rank=2, d=500, seed=3, targets="cross-attn"))
    adapter.set_theta(torch.randn(adapter.d))
    compact = layout.compact(adapter)
    assert compact.rank == 2 and compact.factors.size == adapter.lora_entries
    assert compact.nbytes < 4 * layout.total / 2
    row = layout.unpack(compact)
    index = {s.name: s for s in layout.slots}
    factors = adapter.lora_factors()
    for name, (a, b) in factors.items():
        s = index[name]
        big_a = row[s.offset: s.offset + 4 * s.in_features].reshape(4, s.in_features)
        big_b = row[s.offset + 4 * s.in_features: s.offset + s.size(4)].reshape(s.out_features, 4)
        np.testing.assert_array_equal(big_a[:2], a.detach().numpy())
        np.testing.assert_array_equal(big_b[:, :2], b.detach().numpy())
        assert not big_a[2:].any() and not big_b[:, 2:].any()
    used = sum(index[n].size(4) for n in factors)
    assert np.count_nonzero(row) <= used
    with pytest.raises(BackboneMismatch, match="maximum rank 1"):
        contract.LoraLayout.for_backbone(wan_backbone, 1).compact(adapter)
    bad = contract.CompactAdapter(2, compact.slots, compact.factors[:-1])
    with pytest.raises(UsageError, match="does not match"):
        layout.unpack(bad)


def test_embedded_denoiser_serves_images_and_clips_with_one_graph(tmp_path):
    """The embedded backbone's positions are computed from the symbolic frame count: a graph traced
    with two frames must give the same velocity as torch for one frame (not NaN) and for a clip."""
    from vov.backbones.embedded import tiny
    from vov.serving.engines.onnx import ort_session

    backbone = tiny()
    layout = contract.LoraLayout.for_backbone(backbone, 2)
    axes = graphs.Axes.of(backbone)
    path = tmp_path / "denoiser.onnx"
    graphs.export_denoiser(backbone, layout, path)
    assert graphs.graph_facts(path)["frames"] == contract.ANY_FRAMES
    module, session = graphs.lora_module(backbone, layout), ort_session(path)
    for frames in (1, 3, axes.max_frames):
        args, _ = graphs.denoiser_example(axes, layout, "cpu", frames)
        with torch.no_grad():
            expected = module(*args).numpy()
        got = session.run(None, {n: a.numpy() for n, a in zip(graphs.denoiser_inputs(axes), args)})[0]
        assert np.isfinite(got).all() and np.abs(got - expected).max() < 1e-4, frames
