"""Tiny models in the real models' diffusers layout, written with seeded random weights.

`write_wan_folder(path)` writes what `Wan-AI/Wan2.1-T2V-1.3B-Diffusers` holds (model_index.json,
transformer/, vae/, text_encoder/ (UMT5), tokenizer/, scheduler/) at a few hundred kB, and
`write_qwen_image_folder(path)` does the same for `Qwen/Qwen-Image` (Qwen2.5-VL text encoder).
They are saved by the diffusers pipelines themselves, so they load through
`WanPipeline.from_pretrained` / `QwenImagePipeline.from_pretrained` exactly like downloaded ones,
and through the backbones' normal loading path. No file is fetched: the tokenizers are built here
from small vocabularies (a Unigram model for UMT5's sentencepiece tokenizer, a byte-level BPE for
Qwen2.5-VL's whose merges make the prompt template 34 tokens long, as the real one does).

The same seed gives the same files (on one torch version); another seed gives other weights, and
so another backbone identity. `random_wan` is the `wan` backbone at real size with random weights
and no files at all, for measurements.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

from vov.backbones.condition import Condition
from vov.backbones.device import resolve_device, resolve_dtype
from vov.backbones.schedule import SCHEDULE_FLOW_SHIFT, Schedule
from vov.backbones.wan import (DEFAULT_SHIFT, MAX_SEQUENCE_LENGTH, WanBackbone, WanDenoiser,
                               float32_rotary_tables)
from vov.errors import UsageError

WAN_WORDS = ("the", "a", "of", "and", "in", "on", "cat", "dog", "sky", "sea", "red", "blue", "green", "photo",
             "video", "camera", "slowly", "over", "street", "city", "night", "light")
QWEN_TEMPLATE_PIECES = ("system", "Describe", " the", " image", " by", " detailing", " color", " shape", " size",
                        " texture", " quantity", " text", " spatial", " relationships", " of", " objects", " and",
                        " background", "user", "assistant", " a", " cat", " dog", " red", " photo")


def _build(seed: int, offset: int, make):
    with torch.random.fork_rng():
        torch.manual_seed(seed * 1000 + offset)
        return make()


def wan_tokenizer():
    """A T5 (Unigram) tokenizer over lower-case letters, digits and a few words."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    for word in WAN_WORDS:
        pieces.append(("\u2581" + word, -3.0))
    for c in string.ascii_lowercase + string.digits + ".,'!?-":
        pieces += [("\u2581" + c, -4.0), (c, -5.0)]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def write_wan_folder(path: str | Path, seed: int = 0, layers: int = 2, text_dim: int = 32) -> Path:
    """A Wan2.1-T2V-Diffusers folder with tiny random weights; returns its path."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    path = Path(path)
    tokenizer = wan_tokenizer()
    text_encoder = _build(seed, 1, lambda: UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=text_dim, d_kv=8, d_ff=2 * text_dim, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
        is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0)).eval())
    z = 4
    vae = _build(seed, 2, lambda: AutoencoderKLWan(
        base_dim=8, z_dim=z, dim_mult=[1, 1, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True],
        latents_mean=[0.05 * (i - 1.5) for i in range(z)], latents_std=[1.0 + 0.25 * i for i in range(z)]).eval())
    transformer = _build(seed, 3, lambda: WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=z, out_channels=z,
        text_dim=text_dim, freq_dim=32, ffn_dim=48, num_layers=layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=64).eval())
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                        num_train_timesteps=1000)
    pipeline = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                           transformer=transformer)
    pipeline.save_pretrained(str(path), safe_serialization=True)
    return path


def qwen_tokenizer():
    """A byte-level BPE tokenizer whose merges spell the prompt template's words, with Qwen's chat tokens."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    for word in QWEN_TEMPLATE_PIECES:
        symbols = word.replace(" ", "\u0120")  # the byte-level alphabet's space
        for i in range(1, len(symbols)):
            left, right = symbols[:i], symbols[i]
            if left + right not in vocab:
                merges.append((left, right))
                vocab[left + right] = len(vocab)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    return Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=specials[0], eos_token=specials[2],
                          pad_token=specials[0], additional_special_tokens=specials[1:])


def write_qwen_image_folder(path: str | Path, seed: int = 0, layers: int = 2, text_dim: int = 16) -> Path:
    """A Qwen-Image folder (diffusers layout) with tiny random weights; returns its path."""
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline,
                           QwenImageTransformer2DModel)
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    path = Path(path)
    tokenizer = qwen_tokenizer()
    template = "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, " \
               "text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n"
    count = len(tokenizer(template).input_ids)
    if count != 34:  # the real tokenizer's; the image backbone drops these 34 tokens
        raise AssertionError(f"the tiny Qwen tokenizer makes {count} template tokens, not 34")
    ids = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=text_dim, intermediate_size=2 * text_dim,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [1, 1, 2]},
                         bos_token_id=ids[0], eos_token_id=ids[2], pad_token_id=ids[0]),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=text_dim,
                           fullatt_block_indexes=[0]))
    text_encoder = _build(seed, 1, lambda: Qwen2_5_VLForConditionalGeneration(config).eval())
    z = 4
    vae = _build(seed, 2, lambda: AutoencoderKLQwenImage(
        base_dim=8, z_dim=z, dim_mult=[1, 1, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True],
        latents_mean=[0.05 * (i - 1.5) for i in range(z)], latents_std=[1.0 + 0.25 * i for i in range(z)]).eval())
    transformer = _build(seed, 3, lambda: QwenImageTransformer2DModel(
        patch_size=2, in_channels=4 * z, out_channels=z, num_layers=layers, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=text_dim, axes_dims_rope=(4, 6, 6)).eval())
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
        base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential")
    pipeline = QwenImagePipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                 transformer=transformer)
    pipeline.save_pretrained(str(path), safe_serialization=True)
    return path


def wan_config(size: str = "1.3B") -> dict:
    """The transformer config of the real Wan2.1 T2V models (for building them with random weights)."""
    base = dict(patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096,
                freq_dim=256, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
    if size == "1.3B":
        return {**base, "num_attention_heads": 12, "ffn_dim": 8960, "num_layers": 30}
    if size == "14B":
        return {**base, "num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40}
    if size == "tiny":  # the real layout in miniature, for trying scripts that use real sizes
        return {**base, "num_attention_heads": 2, "attention_head_dim": 24, "ffn_dim": 64, "num_layers": 2}
    raise ValueError(f"unknown Wan2.1 size {size!r} (1.3B, 14B, tiny)")


WAN_VAE_CONFIG = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                      temperal_downsample=[False, True, True])  # Wan2.1's VAE (127M parameters)


def random_wan(size: str = "1.3B", device=None, dtype=None, seed: int = 0, vae: bool = False):
    """A `wan` backbone at real size with random weights and no files, for measurements only.

    The transformer is built from the real config (`wan_config(size)`) directly on `device`; the
    VAE (optional) from Wan2.1's; captions are seeded random 512 x 4096 embeddings. It has no
    identity (`content_hash` refuses), so no file can be made with it.
    """
    return RandomWanBackbone(size, device, dtype, seed, vae)


class RandomWanBackbone(WanBackbone):
    """`wan` at real size with random weights and no files (`random_wan`)."""

    def __init__(self, size: str = "1.3B", device=None, dtype=None, seed: int = 0, with_vae: bool = False):
        import diffusers

        self.device = resolve_device(device, default="auto")
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = f"random Wan2.1-T2V-{size} (seed {seed})"
        self.folder = None
        self.seed = seed
        self.scheduler_config = {"flow_shift": DEFAULT_SHIFT}
        self.schedule = Schedule(SCHEDULE_FLOW_SHIFT, DEFAULT_SHIFT)
        self._text = None
        config = wan_config(size)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            with self.device:
                self.transformer = diffusers.WanTransformer3DModel(**config).eval().requires_grad_(False)
                self.vae = diffusers.AutoencoderKLWan(**WAN_VAE_CONFIG).eval().requires_grad_(False) if with_vae else None
        if self.dtype != torch.float32:  # as from_pretrained does: some modules stay in float32
            keep = set(getattr(self.transformer, "_keep_in_fp32_modules", None) or ())
            self.transformer.to(self.dtype)
            for name, module in self.transformer.named_modules():
                if keep & set(name.split(".")):
                    module.float()
        z = config["in_channels"]
        self.latent_channels = z
        vae_config = self.vae.config if self.vae is not None else {}
        mean = vae_config.get("latents_mean", [0.0] * z)
        std = vae_config.get("latents_std", [1.0] * z)
        self._latents_mean = torch.tensor(mean, dtype=torch.float32).view(1, z, 1, 1, 1)
        self._latents_std = torch.tensor(std, dtype=torch.float32).view(1, z, 1, 1, 1)
        float32_rotary_tables(self.transformer)
        self.text_dim = config["text_dim"]
        self.denoiser = WanDenoiser(self.transformer, lambda: self.condition("")).eval()

    @property
    def content_hash(self) -> bytes:
        raise UsageError("a random backbone has no identity: it cannot make or read files")

    def _encode_caption(self, caption: str) -> Condition:
        generator = torch.Generator().manual_seed(self.seed + len(caption))
        embeddings = torch.randn(1, MAX_SEQUENCE_LENGTH, self.text_dim, generator=generator) * 0.1
        return Condition(embeddings, torch.ones(1, MAX_SEQUENCE_LENGTH, dtype=torch.bool), caption)

    def describe(self) -> dict:
        return {"name": self.name, "model": self.model, "device": str(self.device),
                "parameters": sum(p.numel() for p in self.transformer.parameters())}
