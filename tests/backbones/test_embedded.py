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
