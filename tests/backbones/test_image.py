"""The image backbone (Qwen-Image) on a tiny folder in Qwen-Image's diffusers layout."""

import json
import math
import shutil

import pytest
import torch

from vov import backbones
from vov.backbones import image as qwen_image
from vov.backbones import testing
from vov.errors import UsageError
from vov.method.adapters import AdaptedDenoiser, AdapterSpec


def diffusers_transformer(folder):
    """The folder's transformer as diffusers builds it: complex rotary embedding, diffusers' processors."""
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel.from_pretrained(str(folder / "transformer")).eval()


def test_the_folder_loads_like_the_real_one(image_folder, qwen):
    from diffusers import QwenImagePipeline

    pipeline = QwenImagePipeline.from_pretrained(str(image_folder))
    assert type(pipeline.transformer).__name__ == "QwenImageTransformer2DModel"
    assert json.loads((image_folder / "model_index.json").read_text())["_class_name"] == "QwenImagePipeline"
    assert (qwen.latent_channels, qwen.latent_factor, qwen.pixel_multiple, qwen.temporal_factor) == (4, 8, 16, 1)


@pytest.mark.parametrize("masked", [False, True], ids=["no mask", "padded caption"])
def test_real_rotary_matches_diffusers_complex_rotary(image_folder, qwen, masked):
    theirs_model = diffusers_transformer(image_folder)
    latents, t = torch.randn(2, 4, 1, 8, 12), torch.tensor([0.3, 0.8])
    embeddings = qwen.condition("a red cat").embeddings.expand(2, -1, -1)
    mask = None
    if masked:
        mask = torch.ones(2, embeddings.shape[1], dtype=torch.bool)
        mask[1, -2:] = False
    with torch.no_grad():
        ours = qwen_image._run(qwen.transformer, latents, t, embeddings, mask)
        theirs = theirs_model(hidden_states=qwen_image.pack(latents), encoder_hidden_states=embeddings,
                              encoder_hidden_states_mask=mask, timestep=t, img_shapes=[(1, 4, 6)] * 2,
                              return_dict=False)[0]
    theirs = qwen_image.unpack(theirs, 8, 12)
    assert torch.allclose(ours, theirs, atol=1e-5), float((ours - theirs).abs().max())
    assert not any(p.is_complex() for p in qwen.transformer.buffers())


def test_pack_and_unpack_are_inverse():
    latents = torch.randn(3, 4, 1, 6, 10)
    tokens = qwen_image.pack(latents)
    assert tokens.shape == (3, 15, 16)
    assert torch.equal(qwen_image.unpack(tokens, 6, 10), latents)


def test_encode_decode_and_velocity_shapes(qwen):
    pixels = torch.rand(2, 3, 1, 32, 48)
    latents = qwen.encode(pixels)
    assert latents.shape == (2, 4, 1, 4, 6) == (2, *qwen.latent_shape(1, 32, 48))
    decoded = qwen.decode(latents)
    assert decoded.shape == pixels.shape and 0.0 <= float(decoded.min()) and float(decoded.max()) <= 1.0
    with torch.no_grad():
        v = qwen.velocity(latents, torch.tensor([0.2, 0.6]), qwen.condition("a dog"))
    assert v.shape == latents.shape and v.dtype == torch.float32
    assert qwen.padded_frames(1) == 1 and qwen.latent_frames(1) == 1


def test_the_caption_drops_the_templates_34_tokens_and_is_cached(image_folder):
    backbone = backbones.load("image", str(image_folder))
    assert backbone._text is None
    condition = backbone.condition("a red cat")
    tokenizer, _ = backbone.text_encoder()
    whole = tokenizer(qwen_image.PROMPT_TEMPLATE.format("a red cat")).input_ids
    assert condition.embeddings.shape == (1, len(whole) - 34, 16) and bool(condition.mask.all())
    assert backbone.condition("a red cat") is condition
    assert backbone.condition("").embeddings.shape[1] > 0  # the null caption keeps the template's tail


def test_the_shift_grows_with_the_image(qwen):
    small = qwen.schedule_for((1, 4, 1, 32, 32))  # 256 tokens: the base shift
    large = qwen.schedule_for((1, 4, 1, 128, 128))
    assert math.isclose(small.shift, math.exp(0.5), rel_tol=1e-9)
    assert large.shift > small.shift and large.id == small.id == 1
    times = large.times(10)
    assert times[0] == 1.0 and times[-1] == 0.0 and all(times[i] > times[i + 1] for i in range(10))


def test_image_stream_preset_and_two_adapters(qwen):
    names = qwen.target_layers("img-attn")
    assert len(names) == 4 * len(qwen.transformer.transformer_blocks)
    assert all(n.rsplit(".", 2)[-2:] != ["attn", "add_q_proj"] for n in names)
    d = qwen.adapter_defaults
    assert (d.rank, d.d, d.targets) == (4, 65536, "img-attn")
    spec = AdapterSpec(rank=4, d=512, seed=1)
    first, second = AdaptedDenoiser(qwen, spec), AdaptedDenoiser(qwen, spec)
    first.set_theta(torch.randn(512) * 0.3)
    latents, t, c = torch.randn(1, 4, 1, 8, 12), torch.tensor([0.5]), qwen.condition("a cat")
    with torch.no_grad():
        base = qwen.velocity(latents, t, c)
        assert torch.equal(second(latents, t, c), base)
        assert not torch.equal(first(latents, t, c), base)
    assert all(layer.base_layer is qwen.adaptable_layers()[name] for name, layer in first.layers())


def test_identity_and_errors(image_folder, qwen, tmp_path, offline_hub):
    other = testing.write_qwen_image_folder(tmp_path / "other", seed=1, layers=1)
    assert backbones.load("image", str(other)).content_hash != qwen.content_hash
    with pytest.raises(UsageError, match="Qwen/Qwen-Image"):
        backbones.load("image")  # offline, nothing cached
    with pytest.raises(UsageError, match="WanTransformer3DModel|needs a QwenImageTransformer2DModel"):
        wan_like = shutil.copytree(image_folder, tmp_path / "mislabelled")
        config = wan_like / "transformer" / "config.json"
        config.write_text(config.read_text().replace("QwenImageTransformer2DModel", "WanTransformer3DModel"))
        backbones.load("image", str(wan_like))
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no GPU"):
            backbones.load("image", str(image_folder), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA GPU here (torch.cuda.is_available() is False); runs on GPU machines")
def test_cuda_runs_in_bf16(image_folder):
    backbone = backbones.load("image", str(image_folder), device="cuda")
    assert backbone.dtype == torch.bfloat16
    with torch.no_grad(), backbone.autocast():
        out = backbone.velocity(torch.randn(1, 4, 1, 8, 12), torch.tensor([0.5]), backbone.condition("a cat"))
    assert out.device.type == "cpu" and torch.isfinite(out).all()
