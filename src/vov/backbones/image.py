"""`image`: Qwen-Image, the paper's image backbone, through diffusers.

Parts read from a diffusers-layout model (`Qwen/Qwen-Image` or a folder laid out the same way):
`QwenImageTransformer2DModel` (a 60-block double-stream MMDiT that attends jointly over caption
and image tokens), `AutoencoderKLQwenImage` (8x8 pixels per latent cell, latents normalised by its
`latents_mean` / `latents_std`; images are one-frame clips), the Qwen2.5-VL text encoder with its
tokenizer (its last hidden states after the prompt template's 34 system tokens, with a mask), and
the scheduler config for the resolution-dependent flow shift.

The transformer takes latents packed in 2x2 patches and t itself (it scales by 1000 inside);
`QwenImageDenoiser` packs and unpacks, so the codec sees (B, C, 1, h, w) latents like every other
backbone's.

Qwen-Image's rotary embedding is written with complex numbers, which the ONNX exporter refuses.
At load the transformer's rotary module and attention processors are replaced by `RealRotary` and
`RealRotaryAttention`, which compute the same rotation with cosines and sines (equal to diffusers'
within float32 rounding, tests/backbones/test_image.py), so the eager and the exported graphs are
one computation.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from vov.backbones import hub
from vov.backbones.condition import Condition
from vov.backbones.defaults import AdapterDefaults, FitDefaults
from vov.backbones.export_signature import ExportSignature
from vov.backbones.module_copy import structural_copy
from vov.backbones.schedule import SCHEDULE_FLOW_SHIFT, Schedule
from vov.backbones.pretrained import ExportedLatentDecoder, PretrainedBackbone
from vov.errors import UsageError

DEFAULT_MODEL = "Qwen/Qwen-Image"
PROMPT_TEMPLATE = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, "
                   "text, spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}"
                   "<|im_end|>\n<|im_start|>assistant\n")
TEMPLATE_TOKENS = 34  # the template's tokens before the caption, dropped from the embeddings
MAX_SEQUENCE_LENGTH = 1024

BLOCK = r"transformer\.transformer_blocks\.\d+\."
IMAGE_PROJECTIONS = r"(to_q|to_k|to_v|to_out\.0)"
TEXT_PROJECTIONS = r"(add_q_proj|add_k_proj|add_v_proj|to_add_out)"
PRESETS = {
    "img-attn": BLOCK + r"attn\." + IMAGE_PROJECTIONS,  # the paper's: attention of the image stream
    "attn": BLOCK + r"attn\.(" + IMAGE_PROJECTIONS + "|" + TEXT_PROJECTIONS + ")",
    "img-attn+mlp": BLOCK + r"(attn\." + IMAGE_PROJECTIONS + r"|img_mlp\.net\.(0\.proj|2))",
}


# --------------------------------------------------------------------------------------------
# rotary embedding in real arithmetic


class RealRotary(nn.Module):
    """Qwen-Image's 3-axis rotary angles as (cos, sin) tables instead of complex exponentials.

    Token positions: frame f, and height and width centred on the image (`scale_rope`: rows
    -(h - h // 2) .. h // 2 - 1); caption tokens continue on the diagonal after the image's largest
    centred index. Each axis has its own frequencies `theta ** (-2 i / dim)`.
    """

    def __init__(self, theta: float, axes_dim: tuple[int, ...], scale_rope: bool = True):
        super().__init__()
        self.theta = theta
        self.axes_dim = tuple(int(a) for a in axes_dim)
        self.scale_rope = scale_rope
        for axis, dim in enumerate(self.axes_dim):
            if dim % 2:
                raise ValueError(f"rotary axis {axis} has odd size {dim}")
            exponent = torch.arange(0, dim, 2).to(torch.float32).div(dim)
            self.register_buffer(f"inverse_{axis}", 1.0 / torch.pow(theta, exponent), persistent=False)

    def _angles(self, positions: torch.Tensor, axis: int) -> torch.Tensor:
        return positions.to(torch.float32)[:, None] * getattr(self, f"inverse_{axis}")[None, :]

    def forward(self, video_fhw, device: torch.device | None = None, max_txt_seq_len=None):
        if max_txt_seq_len is None:
            raise ValueError("max_txt_seq_len is required")
        shape = video_fhw[0] if isinstance(video_fhw, list) else video_fhw
        if isinstance(shape, list):  # one entry per image of a sample: vov has one
            shape = shape[0]
        frames, height, width = shape
        device = device or self.inverse_0.device
        f_pos = torch.arange(frames, device=device)
        if self.scale_rope:
            h_pos = torch.arange(height, device=device) - (height - height // 2)
            w_pos = torch.arange(width, device=device) - (width - width // 2)
            text_start = max(height // 2, width // 2)
        else:
            h_pos = torch.arange(height, device=device)
            w_pos = torch.arange(width, device=device)
            text_start = max(height, width)
        a_f, a_h, a_w = self._angles(f_pos, 0), self._angles(h_pos, 1), self._angles(w_pos, 2)
        grid = torch.cat([a_f[:, None, None, :].expand(frames, height, width, -1),
                          a_h[None, :, None, :].expand(frames, height, width, -1),
                          a_w[None, None, :, :].expand(frames, height, width, -1)], dim=-1)
        image = grid.reshape(frames * height * width, -1)
        t_pos = torch.arange(max_txt_seq_len, device=device) + text_start
        text = torch.cat([self._angles(t_pos, axis) for axis in range(3)], dim=-1)
        return (torch.cos(image), torch.sin(image)), (torch.cos(text), torch.sin(text))


def rotate(x: torch.Tensor, table: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x (B, S, H, D) with its channel pairs (2i, 2i + 1) rotated by the table's angles (S, D / 2)."""
    cos, sin = table
    pairs = x.float().unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack([real * c - imag * s, real * s + imag * c], dim=-1).flatten(-2).type_as(x)


class RealRotaryAttention:
    """Qwen-Image's joint (caption + image) attention, with `RealRotary` tables.

    Both streams project their queries, keys and values, normalise queries and keys per head,
    rotate them, attend jointly (caption tokens first), and project their outputs back.
    """

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, encoder_hidden_states_mask=None,
                 attention_mask=None, image_rotary_emb=None):
        if encoder_hidden_states is None:
            raise ValueError("Qwen-Image attention needs the caption stream")
        if attention_mask is not None:
            raise ValueError("pass encoder_hidden_states_mask, not attention_mask")
        mask = None
        if encoder_hidden_states_mask is not None:
            image_part = torch.ones(hidden_states.shape[:2], dtype=torch.bool, device=hidden_states.device)
            mask = torch.cat([encoder_hidden_states_mask.to(torch.bool), image_part], dim=1)[:, None, None, :]
        head_dim = attn.inner_dim // attn.heads
        split = lambda y: y.unflatten(-1, (-1, head_dim))  # noqa: E731
        iq, ik, iv = split(attn.to_q(hidden_states)), split(attn.to_k(hidden_states)), split(attn.to_v(hidden_states))
        tq = split(attn.add_q_proj(encoder_hidden_states))
        tk = split(attn.add_k_proj(encoder_hidden_states))
        tv = split(attn.add_v_proj(encoder_hidden_states))
        if attn.norm_q is not None:
            iq = attn.norm_q(iq)
        if attn.norm_k is not None:
            ik = attn.norm_k(ik)
        if attn.norm_added_q is not None:
            tq = attn.norm_added_q(tq)
        if attn.norm_added_k is not None:
            tk = attn.norm_added_k(tk)
        if image_rotary_emb is not None:
            image_table, text_table = image_rotary_emb
            iq, ik = rotate(iq, image_table), rotate(ik, image_table)
            tq, tk = rotate(tq, text_table), rotate(tk, text_table)
        q = torch.cat([tq, iq], dim=1).transpose(1, 2)
        k = torch.cat([tk, ik], dim=1).transpose(1, 2)
        v = torch.cat([tv, iv], dim=1).transpose(1, 2)
        joint = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
        joint = joint.transpose(1, 2).flatten(2, 3).to(q.dtype)
        caption_tokens = encoder_hidden_states.shape[1]
        image_out = attn.to_out[0](joint[:, caption_tokens:].contiguous())
        if len(attn.to_out) > 1:
            image_out = attn.to_out[1](image_out)
        text_out = attn.to_add_out(joint[:, :caption_tokens].contiguous())
        return image_out, text_out


def use_real_rotary(transformer: nn.Module) -> None:
    """Replace the transformer's complex rotary module and attention processors (in place)."""
    rope = transformer.pos_embed
    if type(rope).__name__ != "QwenEmbedRope":
        raise UsageError(f"a Qwen-Image transformer with {type(rope).__name__} positions is not supported")
    transformer.pos_embed = RealRotary(rope.theta, tuple(rope.axes_dim), rope.scale_rope).to(
        transformer.img_in.weight.device)
    for block in transformer.transformer_blocks:
        block.attn.set_processor(RealRotaryAttention())


# --------------------------------------------------------------------------------------------
# packing and the denoiser


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, h, w) -> (B, h/2 * w/2, 4C): 2x2 patches as tokens, channel-major within a token."""
    b, c, _, h, w = latents.shape
    x = latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack` for latents of height x width."""
    b, _, channels = tokens.shape
    x = tokens.reshape(b, height // 2, width // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels // 4, 1, height, width)


def _run(transformer: nn.Module, latents: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor,
         mask: torch.Tensor | None) -> torch.Tensor:
    _, _, frames, h, w = latents.shape
    if not torch.compiler.is_compiling() and frames != 1:
        raise UsageError("the image backbone takes one frame")
    # one shape for the whole batch (RealRotary reads the first): a list as long as the batch would
    # pin the batch size in an exported graph
    out = transformer(hidden_states=pack(latents), encoder_hidden_states=embeddings, encoder_hidden_states_mask=mask,
                      timestep=t, img_shapes=[(1, h // 2, w // 2)], return_dict=False)[0]
    return unpack(out, h, w)


class QwenImageDenoiser(nn.Module):
    """`f(x_t, t, c)` around a `QwenImageTransformer2DModel`, on the backbone's device and dtype."""

    def __init__(self, transformer: nn.Module, null_condition):
        super().__init__()
        self.transformer = transformer
        self.null_condition = null_condition

    def forward(self, latents: torch.Tensor, t: torch.Tensor, condition=None) -> torch.Tensor:
        weight = self.transformer.img_in.weight
        if condition is None:
            condition = self.null_condition()
        if isinstance(condition, Condition):
            embeddings, mask = condition.embeddings, condition.mask
        else:
            embeddings, mask = condition, None
        b = latents.shape[0]
        embeddings = embeddings.to(weight.device, weight.dtype).expand(b, -1, -1)
        if mask is not None:
            mask = None if bool(mask.all()) else mask.to(weight.device).expand(b, -1)  # as the pipeline does
        out = _run(self.transformer, latents.to(weight.device, weight.dtype), t.to(weight.device, weight.dtype),
                   embeddings, mask)
        return out.to(latents.device, latents.dtype)


class ExportedQwenImageDenoiser(nn.Module):
    """`(latents, t, embeddings, mask) -> velocity`; sizes stay symbolic (positions are computed)."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer

    def forward(self, latents: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        dtype = self.transformer.img_in.weight.dtype
        return _run(self.transformer, latents.to(dtype), t.to(dtype), embeddings.to(dtype), mask).float()


# --------------------------------------------------------------------------------------------
# the backbone


class QwenImageBackbone(PretrainedBackbone):
    name = "image"
    vae_class = "AutoencoderKLQwenImage"
    transformer_class = "QwenImageTransformer2DModel"
    latent_factor = 8
    temporal_factor = 1  # images only
    pixel_multiple = 16  # latent cell 8 x packing 2
    time_scale = 1.0  # the transformer scales t by 1000 itself
    target_presets = PRESETS
    default_targets = "img-attn"
    # the paper's Qwen-Image settings: rank 4, d = 65536, the image stream's attention projections
    adapter_defaults = AdapterDefaults(rank=4, d=65536, targets="img-attn", seed=42)
    fit_defaults = FitDefaults(lr_stage1=2e-3, lr_stage2=1.5e-3, stage1_steps=2000, stage2_steps=1000,
                               weight_decay=1e-4, init_bound=0.02, lambda_ramp=500, gradient_checkpointing=True,
                               note="the paper's Wan2.1 schedule, used as is for Qwen-Image (not tuned here)")
    max_caption_tokens = MAX_SEQUENCE_LENGTH

    def __init__(self, model: str = DEFAULT_MODEL, device=None, dtype=None):
        from diffusers import QwenImageTransformer2DModel

        super().__init__(model or DEFAULT_MODEL, device, dtype)
        self.transformer = self._load_transformer(QwenImageTransformer2DModel)
        config = self.transformer.config
        if config.patch_size != 2 or config.in_channels != 4 * self.latent_channels:
            raise UsageError(f"model {self.model}: a transformer over 2x2 patches of the VAE's "
                             f"{self.latent_channels} channels is expected")
        if getattr(config, "zero_cond_t", False) or getattr(config, "use_additional_t_cond", False) \
                or getattr(config, "use_layer3d_rope", False) or getattr(config, "guidance_embeds", False):
            raise UsageError(f"model {self.model}: an edit or layered Qwen-Image variant; vov takes the text-to-image model")
        use_real_rotary(self.transformer)
        self.text_dim = config.joint_attention_dim
        self.denoiser = QwenImageDenoiser(self.transformer, lambda: self.condition("")).eval()
        self.schedule = self.schedule_for((1, self.latent_channels, 1, 128, 128))  # 1024x1024

    def schedule_for(self, latent_shape) -> Schedule:
        """Qwen-Image's resolution-dependent shift: mu linear in the image's token count between the
        scheduler config's (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift), shift
        exp(mu) (its "exponential" time shift, which is the flow shift with that value)."""
        c = self.scheduler_config
        h, w = latent_shape[-2], latent_shape[-1]
        tokens = (h // 2) * (w // 2)
        if not c.get("use_dynamic_shifting", False):
            return Schedule(SCHEDULE_FLOW_SHIFT, float(c.get("shift", 1.0)))
        try:
            x0, x1 = float(c.get("base_image_seq_len", 256)), float(c.get("max_image_seq_len", 4096))
            y0, y1 = float(c.get("base_shift", 0.5)), float(c.get("max_shift", 1.15))
            mu = y0 + (tokens - x0) * (y1 - y0) / (x1 - x0)
            if c.get("time_shift_type", "exponential") != "exponential":
                raise UsageError("only the exponential time shift is supported")
            return Schedule(SCHEDULE_FLOW_SHIFT, float(math.exp(mu)))
        except (TypeError, ValueError, ZeroDivisionError, OverflowError, UsageError) as e:
            raise UsageError(f"model {self.model}: scheduler config: {e}") from None

    # ---- conditioning

    def _load_text_encoder(self) -> tuple:
        from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        tokenizer = hub.load_component(lambda: AutoTokenizer.from_pretrained(
            str(self.folder / "tokenizer"), local_files_only=True, trust_remote_code=False), "tokenizer", self.model)
        encoder = hub.load_component(lambda: Qwen2_5_VLForConditionalGeneration.from_pretrained(
            str(self.folder / "text_encoder"), dtype=torch.bfloat16, use_safetensors=True, local_files_only=True,
            trust_remote_code=False), "text_encoder", self.model)
        encoder = encoder.to(self.device).eval().requires_grad_(False)
        width = encoder.config.get_text_config().hidden_size
        if width != self.text_dim:
            raise UsageError(f"model {self.model}: the text encoder makes {width}-wide states, the transformer "
                             f"takes {self.text_dim}")
        return tokenizer, encoder

    @torch.no_grad()
    def _encode_caption(self, caption: str) -> Condition:
        tokenizer, encoder = self.text_encoder()
        tokens = tokenizer([PROMPT_TEMPLATE.format(caption)], max_length=MAX_SEQUENCE_LENGTH + TEMPLATE_TOKENS,
                           padding=True, truncation=True, return_tensors="pt")
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
        hidden = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        kept = hidden[0][mask[0].bool()][TEMPLATE_TOKENS:TEMPLATE_TOKENS + MAX_SEQUENCE_LENGTH].float().cpu()
        if kept.shape[0] == 0:
            raise UsageError("caption: the tokenizer left no token after the prompt template")
        return Condition(kept[None], torch.ones(1, kept.shape[0], dtype=torch.bool), caption)

    # ---- export

    def export_signature(self) -> ExportSignature:
        return ExportSignature(self.latent_channels, text_tokens=MAX_SEQUENCE_LENGTH, text_dim=self.text_dim,
                               takes_mask=True, latent_factor=self.latent_factor, temporal_factor=1)

    def export_denoiser(self) -> nn.Module:
        return ExportedQwenImageDenoiser(structural_copy(self.transformer)).eval()

    def export_latent_decoder(self, latent_frames: int = 1) -> nn.Module:
        if latent_frames != 1:
            raise UsageError("the image backbone decodes one frame")
        return ExportedLatentDecoder(structural_copy(self.vae), self._latents_mean, self._latents_std, 1,
                                     self.pixel_range).eval()
