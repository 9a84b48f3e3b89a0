"""`wan`: Wan2.1 text-to-video (1.3B and 14B), the paper's video backbone, through diffusers.

Parts read from a diffusers-layout model (`Wan-AI/Wan2.1-T2V-1.3B-Diffusers`, the 14B twin, or a
folder laid out the same way): `WanTransformer3DModel` (the denoiser), `AutoencoderKLWan` (the VAE:
8x8 pixels per latent cell, 4 frames per latent frame after the first, latents normalised by its
`latents_mean` / `latents_std`), the UMT5 encoder and its tokenizer (captions of up to 512
tokens, zero-padded to 512 as Wan was trained), and the scheduler config for the flow shift.

Frames: the VAE encodes 1 + 4k frames into 1 + k latent frames; clips of other lengths are padded
with copies of their last frame (the VAE itself would drop the surplus frames silently).
The network's time is `1000 t`. Sampling uses the flow-shift schedule with the scheduler config's
`flow_shift` (3 for Wan2.1 at 480p).
"""

from __future__ import annotations

import html
import re

import torch
from torch import nn

from vov.backbones import hub
from vov.backbones.condition import Condition
from vov.backbones.defaults import AdapterDefaults, FitDefaults
from vov.backbones.export_signature import ExportSignature
from vov.backbones.module_copy import structural_copy
from vov.backbones.schedule import SCHEDULE_FLOW_SHIFT, Schedule
from vov.backbones.pretrained import ExportedLatentDecoder, PretrainedBackbone
from vov.errors import UsageError

DEFAULT_MODEL = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
LARGE_MODEL = "Wan-AI/Wan2.1-T2V-14B-Diffusers"
MAX_SEQUENCE_LENGTH = 512
TIME_SCALE = 1000.0
DEFAULT_SHIFT = 3.0

BLOCK = r"transformer\.blocks\.\d+\."
PROJECTIONS = r"(to_q|to_k|to_v|to_out\.0)"
PRESETS = {
    "attn": BLOCK + r"attn[12]\." + PROJECTIONS,  # the paper's: q/k/v/out of self- and cross-attention
    "self-attn": BLOCK + r"attn1\." + PROJECTIONS,
    "cross-attn": BLOCK + r"attn2\." + PROJECTIONS,
    "attn+ffn": BLOCK + r"(attn[12]\." + PROJECTIONS + r"|ffn\.net\.(0\.proj|2))",
}


def clean_caption(text: str) -> str:
    """The caption as Wan's pipeline feeds it to the tokenizer: HTML entities resolved, whitespace
    collapsed. (The pipeline also runs `ftfy` when it is installed; vov does not, so that encoder
    and decoder see the same text whatever is installed.)"""
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def float32_rotary_tables(transformer: nn.Module) -> None:
    """Keep Wan's rotary tables in float32 (diffusers builds them in float64 off Apple GPUs, which
    drags every rotation through float64 and is not exportable everywhere; float32 is far more
    precise than the bf16 queries and keys they rotate)."""
    rope = transformer.rope
    rope.freqs_cos, rope.freqs_sin = rope.freqs_cos.float(), rope.freqs_sin.float()


class WanDenoiser(nn.Module):
    """`f(x_t, t, c)` around a `WanTransformer3DModel`, on the backbone's device and dtype.

    Inputs may live anywhere (the sampler keeps them on the CPU); the output returns to the
    latents' device and dtype.
    """

    def __init__(self, transformer: nn.Module, null_condition):
        super().__init__()
        self.transformer = transformer
        self.null_condition = null_condition  # () -> Condition of the empty caption

    def forward(self, latents: torch.Tensor, t: torch.Tensor, condition=None) -> torch.Tensor:
        weight = self.transformer.proj_out.weight
        if condition is None:
            condition = self.null_condition()
        embeddings = condition.embeddings if isinstance(condition, Condition) else condition
        b = latents.shape[0]
        embeddings = embeddings.to(weight.device, weight.dtype).expand(b, -1, -1)
        x = latents.to(weight.device, weight.dtype)
        out = self.transformer(x, t.to(weight.device, torch.float32) * TIME_SCALE, embeddings, return_dict=False)[0]
        return out.to(latents.device, latents.dtype)


class ExportedWanDenoiser(nn.Module):
    """`(latents, t, embeddings) -> velocity` over a structural copy of the transformer."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer

    def forward(self, latents: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        dtype = self.transformer.proj_out.weight.dtype
        out = self.transformer(latents.to(dtype), t * TIME_SCALE, embeddings.to(dtype), return_dict=False)[0]
        return out.float()


class WanBackbone(PretrainedBackbone):
    name = "wan"
    vae_class = "AutoencoderKLWan"
    transformer_class = "WanTransformer3DModel"
    latent_factor = 8
    temporal_factor = 4
    pixel_multiple = 16  # latent cell 8 x transformer patch 2
    time_scale = TIME_SCALE
    target_presets = PRESETS
    default_targets = "attn"
    # the paper's Wan2.1 settings: rank 1, d = 131072 (81 frames at 480p), q/k/v/out of both
    # attentions in every block (240 layers on the 1.3B model), hash seed 42 (proj_seed in its code)
    adapter_defaults = AdapterDefaults(rank=1, d=131072, targets="attn", seed=42)
    fit_defaults = FitDefaults(lr_stage1=2e-3, lr_stage2=1.5e-3, stage1_steps=2000, stage2_steps=1000,
                               weight_decay=1e-4, init_bound=0.02, lambda_ramp=500, gradient_checkpointing=True,
                               note="the paper's: AdamW lr 2e-3 wd 1e-4 for 2000 steps, then lr 1.5e-3 with the "
                                    "rate ramped in over 500 steps (the stage-2 length is vov's choice)")
    max_caption_tokens = MAX_SEQUENCE_LENGTH

    def __init__(self, model: str = DEFAULT_MODEL, device=None, dtype=None):
        from diffusers import WanTransformer3DModel

        super().__init__(model or DEFAULT_MODEL, device, dtype)
        if self.vae.config.get("scale_factor_temporal", 4) != 4 or self.vae.config.get("scale_factor_spatial", 8) != 8:
            raise UsageError(f"model {self.model}: a Wan VAE with 4x temporal and 8x spatial factors is expected")
        self.transformer = self._load_transformer(WanTransformer3DModel)
        patch = tuple(self.transformer.config.patch_size)
        if patch[0] != 1:
            raise UsageError(f"model {self.model}: temporal patches of {patch[0]} frames are not supported")
        self.pixel_multiple = self.latent_factor * max(patch[1], patch[2])
        if self.transformer.config.in_channels != self.latent_channels:
            raise UsageError(f"model {self.model}: the transformer takes {self.transformer.config.in_channels} "
                             f"channels, the VAE makes {self.latent_channels}")
        float32_rotary_tables(self.transformer)
        self.text_dim = self.transformer.config.text_dim
        self.denoiser = WanDenoiser(self.transformer, lambda: self.condition("")).eval()
        shift = self.scheduler_config.get("flow_shift", self.scheduler_config.get("shift", DEFAULT_SHIFT))
        try:
            self.schedule = Schedule(SCHEDULE_FLOW_SHIFT, float(shift))
        except (TypeError, ValueError, UsageError) as e:
            raise UsageError(f"model {self.model}: scheduler flow shift {shift!r}: {e}") from None

    @property
    def clip_frames(self) -> int:
        return 81  # the paper's clips (and Wan2.1's training length)

    # ---- conditioning

    def _load_text_encoder(self) -> tuple:
        from transformers import AutoTokenizer, UMT5EncoderModel

        dtype = torch.bfloat16
        tokenizer = hub.load_component(lambda: AutoTokenizer.from_pretrained(
            str(self.folder / "tokenizer"), local_files_only=True, trust_remote_code=False), "tokenizer", self.model)
        encoder = hub.load_component(lambda: UMT5EncoderModel.from_pretrained(
            str(self.folder / "text_encoder"), dtype=dtype, use_safetensors=True, local_files_only=True,
            trust_remote_code=False), "text_encoder", self.model)
        encoder = encoder.to(self.device).eval().requires_grad_(False)
        if encoder.config.d_model != self.text_dim:
            raise UsageError(f"model {self.model}: the text encoder makes {encoder.config.d_model}-wide embeddings, "
                             f"the transformer takes {self.text_dim}")
        return tokenizer, encoder

    @torch.no_grad()
    def _encode_caption(self, caption: str) -> Condition:
        tokenizer, encoder = self.text_encoder()
        tokens = tokenizer([clean_caption(caption)], padding="max_length", max_length=MAX_SEQUENCE_LENGTH,
                           truncation=True, add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
        hidden = encoder(ids, mask).last_hidden_state.float().cpu()
        length = int(mask.gt(0).sum())
        embeddings = torch.zeros(1, MAX_SEQUENCE_LENGTH, hidden.shape[-1])
        embeddings[:, :length] = hidden[:, :length]  # Wan zero-pads past the caption's tokens
        keep = torch.zeros(1, MAX_SEQUENCE_LENGTH, dtype=torch.bool)
        keep[:, :length] = True
        return Condition(embeddings, keep, caption)

    # ---- export

    def export_signature(self) -> ExportSignature:
        return ExportSignature(self.latent_channels, text_tokens=MAX_SEQUENCE_LENGTH, text_dim=self.text_dim,
                               takes_mask=False, latent_factor=self.latent_factor, temporal_factor=self.temporal_factor)

    def export_denoiser(self) -> nn.Module:
        return ExportedWanDenoiser(structural_copy(self.transformer)).eval()

    def export_latent_decoder(self, latent_frames: int = 1) -> nn.Module:
        if latent_frames < 1:
            raise UsageError(f"latent frames must be at least 1, not {latent_frames}")
        return ExportedLatentDecoder(structural_copy(self.vae), self._latents_mean, self._latents_std,
                                     latent_frames, self.pixel_range).eval()

    def export_latent_decoder_chunk(self, first: bool) -> nn.Module:
        from vov.backbones.wan_chunks import ChunkDecoder

        return ChunkDecoder(structural_copy(self.vae), self._latents_mean, self._latents_std, self.pixel_range,
                            first).eval()
