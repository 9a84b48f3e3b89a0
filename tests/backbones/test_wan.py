"""The wan backbone on a tiny Wan2.1-Diffusers folder that loads like a downloaded one."""

import json
import shutil

import pytest
import torch

from vov import backbones
from vov.backbones import testing
from vov.backbones.condition import Condition
from vov.backbones.schedule import SCHEDULE_FLOW_SHIFT
from vov.errors import UsageError
from vov.method.adapters import AdaptedDenoiser, AdapterSpec

CUDA = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason="no CUDA GPU here (torch.cuda.is_available() is False); runs on GPU machines")


def test_the_folder_is_a_real_diffusers_model(wan_folder, wan):
    """The folder loads through WanPipeline.from_pretrained, and the backbone computes what its transformer does."""
    from diffusers import WanPipeline

    pipeline = WanPipeline.from_pretrained(str(wan_folder))
    assert json.loads((wan_folder / "model_index.json").read_text())["_class_name"] == "WanPipeline"
    latents, t = torch.randn(1, 4, 2, 8, 12), torch.tensor([0.25])
    condition = wan.condition("a red cat")
    with torch.no_grad():
        theirs = pipeline.transformer(latents, t * 1000, condition.embeddings, return_dict=False)[0]
        ours = wan.velocity(latents, t, condition)
    # the backbone keeps the rotary tables in float32 (diffusers: float64); the difference is rounding
    assert torch.allclose(ours, theirs, atol=1e-4), float((ours - theirs).abs().max())
    assert wan.schedule.id == SCHEDULE_FLOW_SHIFT and wan.schedule.shift == 3.0
    assert wan.device.type == "cpu" and wan.dtype == torch.float32


def test_frames_are_padded_to_one_plus_four_k_never_dropped(wan):
    assert [wan.padded_frames(n) for n in (1, 2, 4, 5, 6, 9, 80, 81)] == [1, 5, 5, 5, 9, 9, 81, 81]
    assert [wan.latent_frames(n) for n in (1, 2, 5, 6, 81)] == [1, 2, 2, 3, 21]
    assert wan.pixel_frames(21) == 81
    assert wan.latent_shape(6, 64, 96) == (4, 3, 8, 12)
    clip = torch.rand(1, 3, 6, 32, 48)
    padded = torch.cat([clip, clip[:, :, -1:].expand(-1, -1, 3, -1, -1)], dim=2)
    latents = wan.encode(clip)
    assert latents.shape == (1, 4, 3, 4, 6)
    assert torch.equal(latents, wan.encode(padded))  # six frames are encoded as nine, the last repeated
    pixels = wan.decode(latents)
    assert pixels.shape == (1, 3, 9, 32, 48)
    assert 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0


def test_one_frame_is_an_image(wan):
    image = torch.rand(2, 3, 1, 32, 32)
    latents = wan.encode(image)
    assert latents.shape == (2, 4, 1, 4, 4)
    assert wan.decode(latents).shape == (2, 3, 1, 32, 32)


def test_latents_are_normalised_by_the_vae_statistics(wan):
    pixels = torch.rand(1, 3, 1, 32, 32)
    raw = wan.vae.encode(pixels * 2 - 1).latent_dist.mode()
    mean = torch.tensor(wan.vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(wan.vae.config.latents_std).view(1, -1, 1, 1, 1)
    assert torch.allclose(wan.encode(pixels), (raw - mean) / std, atol=1e-6)


def test_captions_are_encoded_lazily_once_and_zero_padded(wan_folder):
    backbone = backbones.load("wan", str(wan_folder))
    assert backbone._text is None  # loading the backbone did not load the text encoder
    first = backbone.condition("a red cat")
    assert backbone._text is not None
    assert backbone.condition("a red cat") is first  # cached by caption
    assert first.embeddings.shape == (1, 512, 32) and first.mask.shape == (1, 512)
    tokens = int(first.mask.sum())
    assert tokens == 4  # ▁a ▁red ▁cat </s>
    assert torch.all(first.embeddings[:, tokens:] == 0) and torch.any(first.embeddings[:, :tokens] != 0)
    null = backbone.condition("")
    assert null is backbone.condition(None) and int(null.mask.sum()) == 1  # the null caption: </s> alone
    assert not torch.equal(null.embeddings, first.embeddings)
    assert torch.equal(backbone.condition("a  red\n cat").embeddings, first.embeddings)  # whitespace as Wan cleans it
    with pytest.raises(UsageError, match="caption"):
        backbone.condition("x" * 5000)
    backbone.release_text_encoder()
    assert backbone.condition("a red cat") is first


def test_velocity_takes_a_condition_raw_embeddings_or_none(wan):
    latents, t = torch.randn(2, 4, 3, 8, 12), torch.tensor([0.1, 0.9])
    condition = wan.condition("the sky")
    with torch.no_grad():
        by_condition = wan.velocity(latents, t, condition)
        by_tensor = wan.velocity(latents, t, condition.embeddings)
        by_null = wan.velocity(latents, t)
        null = wan.velocity(latents, t, wan.condition(""))
    assert by_condition.shape == latents.shape and by_condition.dtype == torch.float32
    assert torch.equal(by_condition, by_tensor) and torch.equal(by_null, null)
    assert not torch.equal(by_condition, by_null)


def test_presets_and_the_papers_defaults(wan):
    layers = wan.target_layers("attn")
    blocks = len(wan.transformer.blocks)
    assert len(layers) == 8 * blocks
    assert set(wan.target_layers("self-attn")) | set(wan.target_layers("cross-attn")) == set(layers)
    assert wan.default_targets == "attn" == wan.adapter_defaults.targets
    d = wan.adapter_defaults
    assert (d.rank, d.d, d.seed) == (1, 131072, 42)
    f = wan.fit_defaults
    assert (f.lr_stage1, f.stage1_steps, f.weight_decay, f.gradient_checkpointing) == (2e-3, 2000, 1e-4, True)
    assert wan.max_caption_tokens == 512 and wan.clip_frames == 81


def test_adapters_share_the_frozen_base_and_do_not_interfere(wan):
    before = {k: v.clone() for k, v in wan.transformer.state_dict().items()}
    spec = AdapterSpec(rank=1, d=256, seed=42, targets="attn")
    first, second = AdaptedDenoiser(wan, spec), AdaptedDenoiser(wan, spec)
    latents, t, condition = torch.randn(1, 4, 2, 8, 12), torch.tensor([0.5]), wan.condition("a dog")
    with torch.no_grad():
        base = wan.velocity(latents, t, condition)
        first.set_theta(torch.randn(256))
        one = first(latents, t, condition)
        two = second(latents, t, condition)
        second.set_theta(torch.randn(256))
        again = first(latents, t, condition)
    assert torch.equal(two, base) and torch.equal(again, one) and not torch.equal(one, base)
    # no weight was copied: every adapted layer wraps the backbone's own module
    layers = wan.adaptable_layers()
    for name, layer in first.layers():
        assert layer.base_layer is layers[name]
    after = wan.transformer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(type(m).__name__ == "LoraLinear" for m in wan.denoiser.modules())


def test_gradient_checkpointing_gives_the_same_gradient(wan):
    latents, t, condition = torch.randn(1, 4, 2, 8, 12), torch.tensor([0.4]), wan.condition("a cat")
    grads = []
    for checkpointing in (False, True):
        adapter = AdaptedDenoiser(wan, AdapterSpec(rank=1, d=128))
        adapter.set_theta(torch.linspace(-0.1, 0.1, 128))
        adapter.set_gradient_checkpointing(checkpointing)
        theta = adapter.raw_theta().requires_grad_(True)
        adapter.train()
        adapter(latents, t, condition).pow(2).mean().backward()
        grads.append(theta.grad)
    assert torch.equal(grads[0], grads[1]) and grads[0].abs().max() > 0
    assert not wan.transformer.gradient_checkpointing  # the backbone's own setting is untouched


def test_identity_comes_from_the_files(wan_folder, wan, tmp_path):
    copy = shutil.copytree(wan_folder, tmp_path / "elsewhere")
    config = copy / "transformer" / "config.json"
    data = json.loads(config.read_text())
    data["_diffusers_version"] = "0.0.1"  # bookkeeping keys do not count
    config.write_text(json.dumps(data))
    assert backbones.load("wan", str(copy)).content_hash == wan.content_hash
    other = testing.write_wan_folder(tmp_path / "other", seed=1)
    assert backbones.load("wan", str(other)).content_hash != wan.content_hash
    data["num_layers"] = 2  # same value: still the same model
    config.write_text(json.dumps(data))
    assert backbones.load("wan", str(copy)).content_hash == wan.content_hash


def test_the_same_seed_writes_the_same_files(wan_folder, tmp_path):
    again = testing.write_wan_folder(tmp_path / "again", seed=0)
    for name in ("transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors", "tokenizer/tokenizer.json"):
        assert (again / name).read_bytes() == (wan_folder / name).read_bytes(), name


def test_missing_or_pickled_parts_are_one_clear_error(wan_folder, tmp_path):
    broken = shutil.copytree(wan_folder, tmp_path / "broken")
    shutil.rmtree(broken / "vae")
    with pytest.raises(UsageError, match=r"missing vae/"):
        backbones.load("wan", str(broken))
    pickled = shutil.copytree(wan_folder, tmp_path / "pickled")
    weights = pickled / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(UsageError, match="pickle"):
        backbones.load("wan", str(pickled))
    with pytest.raises(UsageError, match="no such folder"):
        backbones.load("wan", str(tmp_path / "nothing-here"))


def test_another_model_family_is_refused_by_name(image_folder):
    with pytest.raises(UsageError, match="QwenImageTransformer2DModel"):
        backbones.load("wan", str(image_folder))


def test_offline_with_nothing_cached_names_what_is_missing(offline_hub):
    with pytest.raises(UsageError) as error:
        backbones.load("wan")
    message = str(error.value)
    assert "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in message and "HF_HUB_OFFLINE" in message
    assert "transformer" in message and "text_encoder" in message and "\n" not in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the no-GPU error cannot happen")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_a_usage_error(wan_folder, device):
    with pytest.raises(UsageError, match="no GPU"):
        backbones.load("wan", str(wan_folder), device=device)


def test_fp16_on_cpu_is_refused(wan_folder):
    with pytest.raises(UsageError, match="fp16"):
        backbones.load("wan", str(wan_folder), device="cpu", dtype="fp16")


@CUDA
def test_cuda_runs_in_bf16(wan_folder):
    backbone = backbones.load("wan", str(wan_folder), device="cuda")
    assert backbone.dtype == torch.bfloat16 and backbone.transformer.proj_out.weight.is_cuda
    adapter = AdaptedDenoiser(backbone, AdapterSpec(rank=1, d=128))
    adapter.set_theta(torch.randn(128) * 0.1)
    latents, t = torch.randn(1, 4, 2, 8, 12), torch.tensor([0.5])  # on the CPU, like the sampler's
    with torch.no_grad(), backbone.autocast():
        out = adapter(latents, t, backbone.condition("a cat"))
    assert out.device.type == "cpu" and out.dtype == torch.float32 and torch.isfinite(out).all()
    cpu = backbones.load("wan", str(wan_folder), device="cpu")
    assert cpu.content_hash == backbone.content_hash  # the identity is the files', whatever the device


def test_condition_is_plain_data(wan):
    c = wan.condition("a cat")
    assert isinstance(c, Condition) and c.embeddings.device.type == "cpu" and c.embeddings.dtype == torch.float32
    embeddings, mask = c.expand(3)
    assert embeddings.shape == (3, 512, 32) and mask.shape == (3, 512)


def test_random_real_layout_backbone_for_measurements():
    """What bench/backbone_bench.py and bench/gpu_check.py build, in miniature."""
    backbone = testing.random_wan("tiny", device="cpu", seed=0)
    assert testing.wan_config("1.3B")["num_layers"] == 30 and len(backbone.target_layers("attn")) == 16
    adapter = AdaptedDenoiser(backbone, AdapterSpec(rank=1, d=256, seed=42, targets="attn"))
    adapter.set_theta(torch.randn(256) * 0.1)
    condition = backbone.condition("a caption")
    assert condition.embeddings.shape == (1, 512, 4096)
    with torch.no_grad(), backbone.autocast():
        out = adapter(torch.randn(1, 16, 1, 4, 6), torch.tensor([0.5]), condition)
    assert out.shape == (1, 16, 1, 4, 6) and torch.isfinite(out).all()
    with pytest.raises(UsageError, match="no identity"):
        backbone.content_hash
