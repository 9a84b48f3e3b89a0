"""The embedded backbone: a small latent flow transformer that vov trains and ships.

It runs on two CPU cores and ships with vov in two generations, both named `embedded` in the files
they make and told apart by the content hash every file records:

- the first (what `embedded` loads): a patch-PCA latent (16 channels, `patch_autoencoder.py`) and
  a 4-block transformer trained on 49 photos (`vov/weights/embedded-1.safetensors`);
- the second (`--backbone embedded-2`): the pretrained tiny autoencoder TAEF2 (32 latent channels
  at 1/8 of the resolution, `tiny_autoencoder.py`) and a 5-block transformer trained on 886 photos
  (`vov/weights/embedded-2.safetensors`). It draws no block edges, but its weights of today, trained
  for about an hour on two cores, code photos worse than the first's; it becomes the default once
  longer training (`vov train-base`) makes it better (DEFAULT_GENERATION).

The same classes, randomly initialised from a smaller config, make the `tiny` backbone that tests
use so that the suite never depends on trained weights.

The denoiser is diffusers' `WanTransformer3DModel`, the class of the Wan2.1 video models, so the
embedded and the real backbones share one path for adaptation, export and serving. Wan positions
tokens only by rotary (relative) embeddings; an adaptation that stores one image must know where
each token is, so three coordinate channels (frame, row, column, each spanning [-1, 1]) are added
to the latent input.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from vov.backbones.base import Backbone
from vov.backbones.condition import Condition
from vov.backbones.defaults import AdapterDefaults, FitDefaults
from vov.backbones.device import resolve_device, resolve_dtype
from vov.backbones.export_signature import ExportSignature
from vov.backbones.identity import file_digest as base_file_digest
from vov.backbones.identity import hash_state
from vov.backbones.module_copy import structural_copy
from vov.backbones.schedule import Schedule
from vov.backbones.patch_autoencoder import PatchAutoencoder
from vov.backbones.tiny_autoencoder import TinyAutoencoder
from vov.errors import UsageError
from vov.method import noise

# diffusers keeps RMSNorm weights in fp32 under bf16 autocast; torch says so on every call
warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")

COORDINATE_CHANNELS = 3
TIME_SCALE = 1000.0  # Wan's timestep embedding expects t in [0, 1000]


PATCH_PCA = "patch-pca"
TAEF2 = "taef2"
AUTOENCODERS = (PATCH_PCA, TAEF2)


@dataclass(frozen=True)
class FlowConfig:
    latent_channels: int = 16
    heads: int = 2
    head_dim: int = 96
    layers: int = 4
    ffn_dim: int = 768
    text_dim: int = 32
    freq_dim: int = 128
    autoencoder: str = PATCH_PCA  # the first generation's files name no autoencoder: theirs is the patch PCA


FIRST_GENERATION = FlowConfig()
# sized by measurement (MODEL_CARD.md): the widest transformer whose 768x512 fitting step and decode
# stay within 2x of the first generation's on two CPU cores
SECOND_GENERATION = FlowConfig(latent_channels=32, heads=2, head_dim=128, layers=5, ffn_dim=1024, autoencoder=TAEF2)
TINY = FlowConfig(latent_channels=16, heads=2, head_dim=16, layers=2, ffn_dim=64, text_dim=8, freq_dim=32)


def make_autoencoder(config: FlowConfig) -> nn.Module:
    if config.autoencoder == PATCH_PCA:
        return PatchAutoencoder(config.latent_channels)
    if config.autoencoder == TAEF2:
        return TinyAutoencoder(config.latent_channels)
    raise UsageError(f"unknown autoencoder {config.autoencoder[:20]!r}; known: {', '.join(AUTOENCODERS)}")


def coordinate_grid(frames: int, height: int, width: int) -> torch.Tensor:
    """(3, frames, height, width): frame, row and column positions, each in [-1, 1]."""
    axes = [torch.linspace(-1.0, 1.0, n) if n > 1 else torch.zeros(1) for n in (frames, height, width)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def _traceable_axis(n) -> torch.Tensor:
    """torch.linspace(-1, 1, n) (zeros(1) for n == 1) from arange, so that n may be a symbolic size.

    linspace computes its first half forward from -1 and its second half backward from 1, each a
    fused multiply-add in float32 with the float32 step; float64 arithmetic rounded once gives the
    same numbers (tests/backbones/test_export_modules.py checks every n up to 2000).
    """
    if isinstance(n, int) and n == 1:
        return torch.zeros(1)
    i = torch.arange(n, dtype=torch.float64)
    last = i[-1:]  # n - 1 as a tensor: a graph traced with n > 1 must still give zeros(1) for n == 1
    step = (torch.tensor(2.0, dtype=torch.float32) / last.float().clamp(min=1.0)).double()
    axis = torch.where(i < n // 2, i * step - 1.0, 1.0 - (last - i) * step).float()
    return axis * (last > 0)


def traceable_coordinate_grid(frames, height, width) -> torch.Tensor:
    """`coordinate_grid` for an exporter that keeps the sizes symbolic."""
    return torch.stack(torch.meshgrid(_traceable_axis(frames), _traceable_axis(height), _traceable_axis(width),
                                      indexing="ij"))


class OneTokenCrossAttention:
    """Wan's cross-attention when the caption is one token (the embedded backbone's null caption).

    Softmax over a single key is 1 whatever the query, so every token receives the same output,
    `to_out(to_v(caption))`, and `to_q`, `to_k` cannot change it. Computing that one row instead
    of attending from every token is exact and saves two token-wide projections and an attention
    per block. Longer captions take diffusers' own processor.
    """

    def __init__(self):
        from diffusers.models.transformers.transformer_wan import WanAttnProcessor

        self.general = WanAttnProcessor()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if encoder_hidden_states is None or encoder_hidden_states.shape[1] != 1 or attn.add_k_proj is not None:
            return self.general(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        row = attn.to_out[1](attn.to_out[0](attn.to_v(encoder_hidden_states)))
        return row.expand(-1, hidden_states.shape[1], -1)


def use_attention_savings(transformer: nn.Module, on: bool = True) -> None:
    """Put vov's two exact savings on a Wan transformer, or (`on=False`, for comparison) diffusers' own.

    The savings: `OneTokenCrossAttention` in every block, and float32 rotary tables (Wan keeps them
    in float64 off Apple GPUs, which drags every rotation in each block through float64; float32 is
    far more precise than the bf16 queries and keys they rotate).
    """
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    for block in transformer.blocks:
        block.attn2.processor = OneTokenCrossAttention() if on else WanAttnProcessor()
    dtype = torch.float32 if on else torch.float64
    rope = transformer.rope
    rope.freqs_cos, rope.freqs_sin = rope.freqs_cos.to(dtype), rope.freqs_sin.to(dtype)


class FlowDenoiser(nn.Module):
    """Velocity prediction `f(x_t, t, c)` around a Wan transformer."""

    def __init__(self, config: FlowConfig):
        super().__init__()
        from diffusers import WanTransformer3DModel

        self.config = config
        self.transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=config.heads,
            attention_head_dim=config.head_dim,
            in_channels=config.latent_channels + COORDINATE_CHANNELS,
            out_channels=config.latent_channels,
            text_dim=config.text_dim,
            freq_dim=config.freq_dim,
            ffn_dim=config.ffn_dim,
            num_layers=config.layers,
            rope_max_seq_len=1024,
        )
        use_attention_savings(self.transformer)

    def null_condition(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, 1, self.config.text_dim)

    def forward(self, latents: torch.Tensor, t: torch.Tensor, condition=None) -> torch.Tensor:
        b, _, f, h, w = latents.shape
        if isinstance(condition, Condition):
            condition = condition.embeddings
        device = self.transformer.proj_out.weight.device
        source = latents
        latents, t = latents.to(device), t.to(device)
        coords = coordinate_grid(f, h, w).to(latents).expand(b, -1, -1, -1, -1)
        if condition is None:
            condition = self.null_condition(b).to(latents)
        condition = condition.to(latents).expand(b, -1, -1)
        out = self.transformer(torch.cat([latents, coords], dim=1), t * TIME_SCALE, condition, return_dict=False)[0]
        return out.to(source.device, source.dtype)


class ExportedFlowDenoiser(nn.Module):
    """`(latents, t, embeddings) -> velocity`, with a coordinate grid that keeps every size symbolic."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer

    def forward(self, latents: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        b, _, f, h, w = latents.shape
        coords = traceable_coordinate_grid(f, h, w).to(latents).expand(b, -1, -1, -1, -1)
        x = torch.cat([latents, coords], dim=1)
        out = self.transformer(x, t * TIME_SCALE, embeddings.to(latents.dtype), return_dict=False)[0]
        return out.to(latents.dtype)


class ExportedLatentDecoder(nn.Module):
    """latents -> pixels in [0, 1] (both autoencoders map frames one to one)."""

    def __init__(self, autoencoder: nn.Module):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(latents)


ATTENTION = r".*blocks\.\d+\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$"
SELF_ATTENTION = r".*blocks\.\d+\.attn1\.(to_q|to_k|to_v|to_out\.0)$"
ATTENTION_AND_FFN = r".*blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ffn\.net\.(0\.proj|2))$"


# A clip is 17 frames: 17 = 1 + 4 * 4 is also a clip length of the Wan-class backbones, so a video is
# cut into the same clips whichever backbone codes it; and the denoiser attends over every token of a
# clip at once, so its cost grows with the square of the clip's tokens (17 frames of 128x128 are
# 1088 tokens, as many as one 512x544 image, about what a fitting step on two cores affords).
CLIP_FRAMES = 17


class LatentFlowBackbone(Backbone):
    latent_factor = 8
    pixel_multiple = 16  # latent cell 8 x transformer patch 2
    temporal_factor = 1  # both autoencoders map frames one to one
    pixel_range = (0.0, 1.0)
    time_scale = TIME_SCALE
    target_presets = {"attn": ATTENTION, "self-attn": SELF_ATTENTION, "attn+ffn": ATTENTION_AND_FFN}
    # With the one-token null caption, cross-attention adds the same row to every token: its to_q and
    # to_k cannot change the output and its to_v and to_out only shift that row. Self-attention alone
    # spends every coded number where it counts (MODEL_CARD.md, fitting on this backbone).
    default_targets = "self-attn"
    adapter_defaults = AdapterDefaults(targets="self-attn")  # rank, d and seed: the defaults, tuned here
    fit_defaults = FitDefaults(note="tuned on held-out photos (MODEL_CARD.md)")
    schedule = Schedule()
    max_caption_tokens = 0

    def __init__(self, name: str, config: FlowConfig, autoencoder: nn.Module, denoiser: FlowDenoiser,
                 device: str | torch.device | None = None, dtype: str | torch.dtype | None = None):
        self.name = name
        self.config = config
        self.latent_channels = config.latent_channels
        self.device = resolve_device(device)
        # the weights stay fp32 on CPU (bf16 autocast runs the forward); bf16 on CUDA unless asked
        self.dtype = resolve_dtype(dtype, self.device)
        self._hash: bytes | None = None
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.denoiser = denoiser.eval().requires_grad_(False)
        if self.device.type != "cpu" or self.dtype != torch.float32:
            self.content_hash  # the identity is the weights' as loaded, before any conversion
            self.autoencoder.to(self.device)  # the autoencoder stays fp32
            self.denoiser.to(self.device, self.dtype)

    @property
    def clip_frames(self) -> int:
        return CLIP_FRAMES

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.encode(pixels.to(self.device)).cpu()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(latents.to(self.device)).cpu()

    def _encode_caption(self, caption: str) -> Condition:
        if caption:
            raise UsageError(f"backbone {self.name!r} has no text encoder: it was trained without captions, so "
                             f"the empty caption is the only one it knows; leave the caption out or choose a "
                             f"text-conditioned backbone (wan, image)")
        return Condition(self.denoiser.null_condition(1), torch.ones(1, 1, dtype=torch.bool), "")

    def export_signature(self) -> ExportSignature:
        return ExportSignature(self.latent_channels, text_tokens=1, text_dim=self.config.text_dim,
                               latent_factor=self.latent_factor, temporal_factor=1)

    def export_denoiser(self) -> nn.Module:
        return ExportedFlowDenoiser(structural_copy(self.denoiser.transformer)).eval()

    def export_latent_decoder(self, latent_frames: int = 1) -> nn.Module:
        return ExportedLatentDecoder(self.autoencoder).eval()

    def distortion_weights(self) -> torch.Tensor:
        if self.config.autoencoder != PATCH_PCA:
            return super().distortion_weights()
        # the latent is an orthogonal transform whitened per channel: un-whitening weights give pixel MSE
        weights = self.autoencoder.scale.detach().float() ** 2
        return weights / weights.mean()

    def velocity(self, latents, t, condition=None):
        return self.denoiser(latents, t, condition)

    @property
    def content_hash(self) -> bytes:
        if self._hash is None:
            self._hash = hash_state(nn.ModuleList([self.autoencoder, self.denoiser.transformer]))
        return self._hash

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            **{f"autoencoder.{k}": v for k, v in self.autoencoder.state_dict().items()},
            **{f"denoiser.{k}": v for k, v in self.denoiser.transformer.state_dict().items()},
        }

    def save(self, path: str | Path, dtype: torch.dtype = torch.bfloat16) -> None:
        """The denoiser in `dtype`; the autoencoder as it came (the PCA basis in fp32, TAEF2 in fp16, both exact)."""
        from safetensors.torch import save_file

        tensors = {}
        for key, value in self.state_dict().items():
            if key.startswith("autoencoder."):
                exact = self.config.autoencoder == TAEF2 and key.startswith(("autoencoder.encoder.", "autoencoder.decoder."))
                tensors[key] = value.to(torch.float16 if exact else torch.float32).contiguous()
            else:
                tensors[key] = value.to(dtype).contiguous()
        save_file(tensors, str(path), metadata={"name": self.name, "config": json.dumps(asdict(self.config))})

    @classmethod
    def second_generation(cls, config: FlowConfig, autoencoder: TinyAutoencoder, denoiser: FlowDenoiser,
                          mean: torch.Tensor, std: torch.Tensor) -> "LatentFlowBackbone":
        """A trained denoiser and the tiny autoencoder, whitened by the training latents' statistics."""
        autoencoder.latent_mean.copy_(mean)
        autoencoder.latent_std.copy_(std)
        return cls("embedded", config, autoencoder, denoiser)


@torch.no_grad()
def portable_init(module: nn.Module, seed: int) -> None:
    """Initialise every parameter from vov.method.noise, so a seeded model is the same on every install.

    Matrices get N(0, 1 / fan_in), vectors named like norm weights get 1, other vectors 0.
    """
    for i, (name, p) in enumerate(sorted(module.named_parameters())):
        if p.dim() >= 2:
            fan_in = p[0].numel()
            p.copy_(noise.normal_tensor(tuple(p.shape), seed, noise.INIT, step=i) / fan_in**0.5)
        else:
            p.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)


def build(name: str, config: FlowConfig, seed: int = 0) -> LatentFlowBackbone:
    """A randomly initialised backbone; the autoencoder gets a random orthonormal basis."""
    denoiser = FlowDenoiser(config)
    portable_init(denoiser, seed)
    if config.autoencoder != PATCH_PCA:
        autoencoder, _ = shipped_autoencoder()
        return LatentFlowBackbone(name, config, autoencoder, denoiser)
    autoencoder = PatchAutoencoder(config.latent_channels)
    draws = noise.normal_tensor((autoencoder._dim, config.latent_channels), seed, noise.INIT, step=1 << 20)
    basis, r = torch.linalg.qr(draws.double())
    basis = basis * torch.sign(torch.diagonal(r))  # unique orthonormalisation, whatever LAPACK does
    autoencoder.basis.copy_(basis.T.float().reshape_as(autoencoder.basis))
    autoencoder.mean.fill_(0.5)
    autoencoder.scale.fill_(0.5)
    return LatentFlowBackbone(name, config, autoencoder, denoiser)


def load_file(path: str | Path, device: str | torch.device | None = None,
              dtype: str | torch.dtype | None = None) -> LatentFlowBackbone:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    config = FlowConfig(**json.loads(meta["config"]))
    autoencoder = make_autoencoder(config)
    autoencoder.load_state_dict({k[len("autoencoder."):]: v.float() for k, v in tensors.items() if k.startswith("autoencoder.")})
    denoiser = FlowDenoiser(config)
    denoiser.transformer.load_state_dict({k[len("denoiser."):]: v.float() for k, v in tensors.items() if k.startswith("denoiser.")})
    return LatentFlowBackbone(meta["name"], config, autoencoder, denoiser, device, dtype)


def _weights(name: str) -> Path:
    return Path(str(resources.files("vov") / "weights" / name))


@dataclass(frozen=True)
class Generation:
    number: int
    registry_name: str  # what `--backbone` calls it; files name every generation "embedded"
    file: str
    content_hash: str  # what files made with it record (tests check it against the file)


# newest first; a file made with any of them decodes on the weights its hash names
GENERATIONS = (
    Generation(2, "embedded-2", "embedded-2.safetensors", "d82331f8626f7acb"),
    Generation(1, "embedded-1", "embedded-1.safetensors", "32aae21cac20b917"),
)
NEWEST = GENERATIONS[0].number
# the generation `embedded` means: the second takes over once it codes photos better than the
# first (MODEL_CARD.md: at 0.05 bpp its weights of today still lose about 3 dB PSNR to the first)
DEFAULT_GENERATION = 1


def generation(number: int) -> Generation:
    return next(g for g in GENERATIONS if g.number == number)


def generation_for_hash(content_hash: bytes) -> Generation | None:
    """The shipped generation whose weights have this content hash, if any."""
    return next((g for g in GENERATIONS if g.content_hash == content_hash.hex()), None)


def shipped_weights(number: int = DEFAULT_GENERATION) -> Path:
    return _weights(generation(number).file)


def shipped_autoencoder() -> tuple[TinyAutoencoder, str]:
    """TAEF2 as converted from its author's checkpoints (`scripts/convert_taef2.py`), and its identity.

    The statistics that whiten its latents are the model's, not the autoencoder's: they stay 0 and 1
    here until a trained backbone brings its own.
    """
    from safetensors.torch import load_file as load_tensors

    path = _weights("taef2.safetensors")
    tensors = load_tensors(str(path))
    autoencoder = TinyAutoencoder(32)
    missing, unexpected = autoencoder.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
    if unexpected or set(missing) != {"latent_mean", "latent_std"}:
        raise UsageError(f"{path}: not the tiny autoencoder's weights")
    return autoencoder.eval().requires_grad_(False), "taef2:" + base_file_digest(path)[:16]


def tiny(device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> LatentFlowBackbone:
    backbone = build("tiny", TINY, seed=0)
    if device is None and dtype is None:
        return backbone
    return LatentFlowBackbone("tiny", TINY, backbone.autoencoder, backbone.denoiser, device, dtype)


def from_registry(model: str | None = None, device=None, dtype=None, number: int = DEFAULT_GENERATION) -> LatentFlowBackbone:
    """`backbones.load("embedded", model)`: the shipped weights, or a file made by `vov train-base`."""
    path = Path(model).expanduser() if model else shipped_weights(number)
    if not path.is_file():
        if model:
            raise UsageError(f"embedded weights {model}: no such file")
        raise UsageError(f"the embedded backbone's weights are missing ({path}); run `vov train-base` to make them")
    if path.suffix != ".safetensors":
        raise UsageError(f"embedded weights {model}: a .safetensors file is needed")
    try:
        return load_file(path, device, dtype)
    except UsageError:
        raise
    except Exception as e:  # a foreign or corrupt file
        raise UsageError(f"embedded weights {path}: not a vov embedded model ({type(e).__name__})") from None


def first_generation_from_registry(model: str | None = None, device=None, dtype=None) -> LatentFlowBackbone:
    """`backbones.load("embedded-1")`: the first generation's shipped weights (files record it as "embedded")."""
    return from_registry(None, device, dtype, number=1)


def second_generation_from_registry(model: str | None = None, device=None, dtype=None) -> LatentFlowBackbone:
    """`backbones.load("embedded-2")`: the second generation's shipped weights (files record it as "embedded")."""
    return from_registry(None, device, dtype, number=2)


def tiny_from_registry(model: str | None = None, device=None, dtype=None) -> LatentFlowBackbone:
    return tiny(device, dtype)
