import torch
from diffusers.models.transformers.transformer_wan import WanAttnProcessor

from vov.backbones import embedded


def _with_diffusers_attention(denoiser):
    for block in denoiser.transformer.blocks:
        block.attn2.processor = WanAttnProcessor()
    rope = denoiser.transformer.rope
    rope.freqs_cos, rope.freqs_sin = rope.freqs_cos.double(), rope.freqs_sin.double()


def test_one_token_cross_attention_and_float32_tables_match_diffusers():
    denoiser = embedded.tiny().denoiser
    latents, t = torch.randn(2, 16, 3, 4, 6), torch.rand(2)
    caption = torch.randn(2, 1, denoiser.config.text_dim)
    ours = denoiser(latents, t, caption)
    _with_diffusers_attention(denoiser)
    theirs = denoiser(latents, t, caption)
    assert torch.allclose(ours, theirs, atol=1e-5), float((ours - theirs).abs().max())


def test_longer_captions_take_the_general_attention():
    denoiser = embedded.tiny().denoiser
    latents, t = torch.randn(1, 16, 1, 4, 4), torch.rand(1)
    caption = torch.randn(1, 5, denoiser.config.text_dim)
    ours = denoiser(latents, t, caption)
    _with_diffusers_attention(denoiser)
    assert torch.allclose(ours, denoiser(latents, t, caption), atol=1e-5)


def test_the_query_and_key_of_a_one_token_cross_attention_cannot_change_the_output():
    denoiser = embedded.tiny().denoiser
    latents, t = torch.randn(1, 16, 1, 4, 4), torch.rand(1)
    before = denoiser(latents, t)
    _with_diffusers_attention(denoiser)  # the general path, which does use the query and key
    with torch.no_grad():
        for block in denoiser.transformer.blocks:
            block.attn2.to_q.weight.mul_(3.0)
            block.attn2.to_k.bias.add_(1.0)
    assert torch.allclose(before, denoiser(latents, t), atol=1e-5)
