import pytest
import torch

from vov.backbones import embedded


@pytest.mark.parametrize("shape, caption_tokens", [((2, 16, 3, 4, 6), 1), ((1, 16, 1, 4, 4), 5)],
                         ids=["one-token caption: the savings", "longer caption: diffusers' own attention"])
def test_attention_savings_match_diffusers(shape, caption_tokens):
    denoiser = embedded.tiny().denoiser
    latents, t = torch.randn(shape), torch.rand(shape[0])
    caption = torch.randn(shape[0], caption_tokens, denoiser.config.text_dim)
    ours = denoiser(latents, t, caption)
    embedded.use_attention_savings(denoiser.transformer, on=False)
    theirs = denoiser(latents, t, caption)
    assert torch.allclose(ours, theirs, atol=1e-5), float((ours - theirs).abs().max())


def test_the_query_and_key_of_a_one_token_cross_attention_cannot_change_the_output():
    denoiser = embedded.tiny().denoiser
    latents, t = torch.randn(1, 16, 1, 4, 4), torch.rand(1)
    before = denoiser(latents, t)
    embedded.use_attention_savings(denoiser.transformer, on=False)  # the general path uses query and key
    with torch.no_grad():
        for block in denoiser.transformer.blocks:
            block.attn2.to_q.weight.mul_(3.0)
            block.attn2.to_k.bias.add_(1.0)
    assert torch.allclose(before, denoiser(latents, t), atol=1e-5)


def test_the_savings_are_installed_on_every_embedded_denoiser():
    transformer = embedded.tiny().denoiser.transformer
    assert all(isinstance(b.attn2.processor, embedded.OneTokenCrossAttention) for b in transformer.blocks)
    assert transformer.rope.freqs_cos.dtype == transformer.rope.freqs_sin.dtype == torch.float32


def test_the_default_targets_are_the_self_attention_projections(tiny_backbone):
    from vov.method.adapters import AdaptedDenoiser, AdapterSpec

    names = AdaptedDenoiser(tiny_backbone, AdapterSpec()).target_names
    blocks = len(tiny_backbone.denoiser.transformer.blocks)
    assert sorted(names) == sorted(f"transformer.blocks.{i}.attn1.{p}" for i in range(blocks)
                                   for p in ("to_q", "to_k", "to_v", "to_out.0"))


# ---- interface v2 on the embedded backbone

FIRST_GENERATION_HASH = "32aae21cac20b917"  # files made with the first weights record it: it must never change


@pytest.mark.parametrize("generation", embedded.GENERATIONS, ids=lambda g: g.registry_name)
def test_every_shipped_generation_has_the_hash_its_files_record(generation):
    from vov import backbones

    assert backbones.load(generation.registry_name).content_hash.hex() == generation.content_hash


def test_the_first_generation_keeps_its_identity_and_stays_the_default():
    from vov import backbones

    assert embedded.generation(1).content_hash == FIRST_GENERATION_HASH
    assert backbones.load("embedded").content_hash.hex() == FIRST_GENERATION_HASH
    assert backbones.load("embedded").config == embedded.FIRST_GENERATION
    assert backbones.load("embedded-2").config == embedded.SECOND_GENERATION and embedded.NEWEST == 2


@pytest.mark.parametrize("generation", embedded.GENERATIONS, ids=lambda g: g.registry_name)
def test_a_file_names_embedded_and_its_hash_picks_the_generation(generation):
    from vov.backbones import registry_name_for

    assert registry_name_for("embedded", bytes.fromhex(generation.content_hash)) == generation.registry_name
    assert registry_name_for("embedded", bytes(8)) == "embedded"  # unknown weights: the default refuses them


def test_only_the_null_caption_exists(tiny_backbone):
    from vov.errors import UsageError

    null = tiny_backbone.condition("")
    assert null.embeddings.shape == (1, 1, tiny_backbone.config.text_dim) and bool(null.mask.all())
    assert tiny_backbone.condition(None) is null
    with pytest.raises(UsageError, match="no text encoder"):
        tiny_backbone.condition("a cat")
    latents, t = torch.randn(1, 16, 2, 4, 4), torch.tensor([0.5])
    with torch.no_grad():
        assert torch.equal(tiny_backbone.velocity(latents, t, null), tiny_backbone.velocity(latents, t))


def test_frames_map_one_to_one_and_a_clip_is_17(tiny_backbone):
    assert [tiny_backbone.padded_frames(n) for n in (1, 2, 17, 30)] == [1, 2, 17, 30]
    assert tiny_backbone.latent_frames(17) == 17 == tiny_backbone.clip_frames
    assert tiny_backbone.latent_shape(5, 32, 48) == (16, 5, 4, 6)
    clip = torch.rand(1, 3, 5, 32, 48)
    assert tiny_backbone.encode(clip).shape == (1, 16, 5, 4, 6)


def test_defaults_time_and_schedule(tiny_backbone):
    from vov.backbones.schedule import SCHEDULE_UNIFORM
    from vov.method import sampler

    assert tiny_backbone.schedule.id == SCHEDULE_UNIFORM and tiny_backbone.time_scale == embedded.TIME_SCALE
    assert (tiny_backbone.schedule.times(50) == sampler.timesteps(50)).all()
    d = tiny_backbone.adapter_defaults
    assert (d.rank, d.d, d.targets) == (4, 16384, tiny_backbone.default_targets)
    assert tiny_backbone.device.type == "cpu" and tiny_backbone.dtype == torch.float32


def test_schedules_are_checked_data():
    from vov.backbones.schedule import SCHEDULE_FLOW_SHIFT, Schedule
    from vov.errors import UsageError

    shifted = Schedule(SCHEDULE_FLOW_SHIFT, 3.0).times(4)
    s = torch.linspace(1, 0, 5).double()
    assert torch.allclose(torch.from_numpy(shifted).double(), 3 * s / (1 + 2 * s), atol=1e-7)
    for bad in [dict(id=7), dict(id=SCHEDULE_FLOW_SHIFT, shift=float("nan")), dict(id=SCHEDULE_FLOW_SHIFT, shift=1e9),
                dict(id=0, shift=2.0)]:
        with pytest.raises(UsageError):
            Schedule(**bad)


def test_the_registry_lists_every_backbone_without_loading_one():
    from vov import backbones
    from vov.errors import UsageError

    rows = backbones.listing()
    assert [r["name"] for r in rows] == list(backbones.NAMES) == ["embedded", "embedded-1", "embedded-2", "tiny", "wan", "image"]
    text = backbones.format_listing()
    assert all(name in text for name in backbones.NAMES) and "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in text
    wan = next(r for r in rows if r["name"] == "wan")
    assert wan["adapter"]["rank"] == 1 and wan["adapter"]["d"] == 131072 and wan["captions"]
    assert wan["presets"] == ["attn", "self-attn", "cross-attn", "attn+ffn"] and "presets: attn, self-attn" in text
    with pytest.raises(UsageError, match="unknown backbone"):
        backbones.load("nothing")
    with pytest.raises(UsageError, match="takes no --model"):
        backbones.load("tiny", model="somewhere")
    with pytest.raises(UsageError, match="no such file"):
        backbones.load("embedded", model="/nonexistent/weights.safetensors")


def test_device_strings_are_checked():
    from vov.backbones.device import resolve_device, resolve_dtype
    from vov.errors import UsageError

    assert resolve_device(None).type == "cpu" and resolve_device("CPU").type == "cpu"
    for bad in ["tpu", "cuda:x", "cuda:123", "cpu; rm -rf /"]:
        with pytest.raises(UsageError):
            resolve_device(bad)
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(UsageError, match="fp16"):
        resolve_dtype("fp16", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no GPU"):
            resolve_device("cuda")
