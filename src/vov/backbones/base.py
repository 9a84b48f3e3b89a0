"""The interface every foundation model ("backbone") offers to the codec.

A backbone maps pixels to latents and back, and predicts the flow-matching velocity
`v = eps - x_0` of a noisy latent `x_t = (1 - t) x_0 + t eps`. Its `denoiser` is the module that
adapters are injected into; `target_presets` names groups of its linear layers to adapt.
Tensors are shaped (batch, channels, frames, height, width); an image is a one-frame clip.

What every backbone owns, so that callers need no special case (interface v2):

- pixels: `encode` takes RGB in [0, 1] and `decode` returns RGB in [0, 1] (not clamped); the
  range the model's own VAE works in (`pixel_range`) and the normalisation of its latents stay
  inside the backbone.
- frames: `padded_frames(n)` is the frame count a clip of n frames is encoded with (never fewer:
  clips are padded with copies of their last frame, never cut), `latent_frames(n)` the latent
  frames that gives, `pixel_frames(k)` the frames k latent frames decode to.
- conditioning: `condition(caption)` -> `Condition(embeddings, mask)`, computed once per caption
  (the text encoder is loaded on first use), the empty caption being the null condition.
- time: the network sees `t * time_scale`; `schedule_for(latent_shape)` is the sampler's schedule
  (a `Schedule`: an id and a flow shift, both of which a file records).
- device and dtype: chosen when the backbone is loaded (`resolve_device`, `resolve_dtype`);
  `autocast()` is the context its forward passes run in.
- defaults: `adapter_defaults` (rank, d, targets preset, hash seed) and `fit_defaults` (learning
  rates, steps) as plain data.
- export: `export_denoiser()` and `export_latent_decoder(latent_frames)` return plain torch modules
  with fixed signatures (see `ExportSignature`), so an exporter needs no backbone's internals.
- identity: `content_hash`, 8 bytes from its weight files (`weights_identity`), recorded in files.

Adapter targets are a closed vocabulary: a file or a request names either one of the backbone's
preset ids or an explicit comma-separated list of its adaptable layers' exact names. The presets'
patterns are vov's own code; nothing that arrives from outside is ever compiled or matched as a
pattern (a hostile pattern could back-track for hours while holding the interpreter lock).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from vov.errors import UsageError

MAX_TARGETS_BYTES = 512  # what a file's `targets` field holds (docs/format.md)
MAX_CAPTION_BYTES = 4096  # a caption longer than this is refused before any tokenizer sees it
CONDITION_CACHE = 16  # captions whose embeddings a backbone keeps


# --------------------------------------------------------------------------------------------
# plain data the codec reads


@dataclass(frozen=True, eq=False)
class Condition:
    """A caption's embeddings (1, L, D) and mask (1, L), True where a token carries the caption.

    The mask is informative for backbones whose network attends to every position (Wan pads the
    caption with zero vectors and attends to all 512), and an input for those that take one
    (Qwen-Image). `caption` is the text it came from ("" for the null condition).
    """

    embeddings: torch.Tensor
    mask: torch.Tensor
    caption: str = ""

    def expand(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embeddings.expand(batch, -1, -1), self.mask.expand(batch, -1)


SCHEDULE_UNIFORM = 0  # t uniform in [0, 1]: format version 1's only schedule
SCHEDULE_FLOW_SHIFT = 1  # s uniform, t = shift s / (1 + (shift - 1) s): Wan's and Qwen-Image's family
SCHEDULES = {SCHEDULE_UNIFORM: "uniform", SCHEDULE_FLOW_SHIFT: "flow-shift"}
MAX_SHIFT = 64.0


@dataclass(frozen=True)
class Schedule:
    """The sampler's time grid: an id the file records, and its one parameter (the flow shift).

    A shift above 1 spends more of the steps at high noise. Wan2.1 samples with shift 3 at 480p
    (its scheduler config's `flow_shift`); Qwen-Image's shift grows with the image's token count
    (`exp(mu)` of its scheduler); the embedded backbone uses the uniform grid.
    """

    id: int = SCHEDULE_UNIFORM
    shift: float = 1.0

    def __post_init__(self):
        if self.id not in SCHEDULES:
            raise UsageError(f"unknown schedule id {self.id}; known: {', '.join(map(str, SCHEDULES))}")
        if not (np.isfinite(self.shift) and 1.0 / MAX_SHIFT <= self.shift <= MAX_SHIFT):
            raise UsageError(f"flow shift must be between 1/{MAX_SHIFT:g} and {MAX_SHIFT:g}, not {self.shift}")
        if self.id == SCHEDULE_UNIFORM and self.shift != 1.0:
            raise UsageError("the uniform schedule has no shift")

    @property
    def name(self) -> str:
        return SCHEDULES[self.id]

    def times(self, steps: int) -> np.ndarray:
        """steps + 1 times from 1 down to 0, as float32 (the grid of vov.method.scheduler)."""
        from vov.method.scheduler import timesteps

        return timesteps(steps, self.id, self.shift)

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "shift": self.shift}


@dataclass(frozen=True)
class AdapterDefaults:
    """What a compress without adapter options uses on this backbone."""

    rank: int = 4
    d: int = 16384
    targets: str = ""  # a preset id of the backbone
    seed: int = 0  # the hash's seed (peft's proj_seed)


@dataclass(frozen=True)
class FitDefaults:
    """The fitting settings this backbone was tuned (or published) with."""

    lr_stage1: float = 2e-2
    lr_stage2: float = 1e-2
    stage1_steps: int = 800
    stage2_steps: int = 400
    weight_decay: float = 0.0
    init_bound: float = 0.02
    lambda_ramp: int = 100
    gradient_checkpointing: bool = False  # worth it at this backbone's usual sizes
    note: str = ""

    @property
    def steps(self) -> int:
        return self.stage1_steps + self.stage2_steps


@dataclass(frozen=True)
class ExportSignature:
    """What `export_denoiser()` and `export_latent_decoder()` take and return.

    denoiser(latents (B, C, F, h, w) f32, t (B,) f32 in [0, 1], embeddings (B, L, D) f32
             [, mask (B, L) bool when `takes_mask`]) -> velocity (B, C, F, h, w) f32
    latent_decoder(latents (B, C, F_latent, h, w) f32) -> pixels (B, 3, F_pixels, H, W) f32 in [0, 1]
    """

    latent_channels: int
    text_tokens: int  # L of the embeddings the backbone produces (the null caption's length for embedded)
    text_dim: int  # D
    takes_mask: bool = False
    latent_factor: int = 8
    temporal_factor: int = 1


# --------------------------------------------------------------------------------------------
# device and dtype


def resolve_device(device: str | torch.device | None, default: str = "cpu") -> torch.device:
    """A torch device from what a person typed, or a UsageError that says why it cannot be used."""
    if device is None or device == "":
        device = default
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device, torch.device):
        parsed = device
    else:
        text = str(device).strip().lower()
        if not re.fullmatch(r"cpu|cuda(:\d{1,2})?", text):
            raise UsageError(f"device must be cpu, cuda or cuda:N, not {str(device)[:40]!r}")
        parsed = torch.device(text)
    if parsed.type == "cpu":
        return parsed
    if parsed.type != "cuda":
        raise UsageError(f"device {parsed} is not supported (cpu, cuda, cuda:N)")
    if not torch.cuda.is_available():
        why = "this torch was built without CUDA" if torch.version.cuda is None else "torch sees no CUDA GPU"
        raise UsageError(f"device {parsed}: no GPU is available ({why}); use --device cpu")
    count = torch.cuda.device_count()
    index = parsed.index if parsed.index is not None else torch.cuda.current_device()
    if index >= count:
        raise UsageError(f"device {parsed}: there {'is' if count == 1 else 'are'} only {count} GPU(s) (cuda:0"
                         f"{'' if count == 1 else f' .. cuda:{count - 1}'})")
    return torch.device("cuda", index)


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The weights' dtype: bf16 on CUDA and fp32 on CPU unless asked; never fp16 on CPU."""
    if dtype is None or dtype == "":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if not isinstance(dtype, torch.dtype):
        key = str(dtype).strip().lower()
        if key not in DTYPES:
            raise UsageError(f"dtype must be one of fp32, bf16, fp16, not {str(dtype)[:20]!r}")
        dtype = DTYPES[key]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise UsageError(f"dtype {dtype} is not supported (fp32, bf16, fp16 on CUDA)")
    if dtype == torch.float16 and device.type == "cpu":
        raise UsageError("fp16 is not supported on CPU (slow and inexact there); use bf16 or fp32")
    return dtype


# --------------------------------------------------------------------------------------------
# identity from weight files


_digests: dict[tuple[str, int, int], str] = {}
_digest_lock = threading.Lock()
CHUNK = 8 << 20


def _digest_cache_path() -> Path:
    base = os.environ.get("VOV_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "vov")
    return Path(base) / "file-digests.json"


def _read_digest_cache() -> dict:
    try:
        data = json.loads(_digest_cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_digest_cache(entries: dict) -> None:
    path = _digest_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=0, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # the cache only saves time


def file_digest(path: str | os.PathLike, use_disk_cache: bool = True) -> str:
    """sha256 (hex) of a file's bytes, read in 8 MiB chunks.

    Cached by (real path, size, mtime) in memory and in `~/.cache/vov/file-digests.json`, so the
    tens of GB of a large model are read once per change of its files, not once per process.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    disk_key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    with _digest_lock:
        if key in _digests:
            return _digests[key]
        if use_disk_cache:
            cached = _read_digest_cache().get(disk_key)
            if isinstance(cached, str) and re.fullmatch(r"[0-9a-f]{64}", cached):
                _digests[key] = cached
                return cached
    digest = hashlib.sha256()
    with open(real, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    with _digest_lock:
        _digests[key] = value
        if use_disk_cache:
            entries = _read_digest_cache()
            entries[disk_key] = value
            _write_digest_cache(entries)
    return value


def weights_identity(entries: Iterable[tuple[str, str]]) -> bytes:
    """32 bytes naming a model by content: sha256 over its (name, sha256 hex) entries sorted by name.

    A name is the file's place in the model (e.g. "transformer/diffusion_pytorch_model.safetensors"),
    so the same bytes in another folder give the same identity and a file moved between components
    does not. `vov.backbones.hub.identity_entries` lists a diffusers folder's entries.
    """
    digest = hashlib.sha256(b"vov-weights-1\0")
    for name, value in sorted(entries, key=lambda item: item[0]):
        digest.update(name.encode("utf-8") + b"\0" + value.encode("ascii") + b"\n")
    return digest.digest()


def hash_state(module: nn.Module) -> bytes:
    """Content hash of a module's tensors, independent of how they were stored on disk.

    The embedded backbone's identity (its files record it); backbones loaded from weight files
    use `weights_identity` instead, which reads the files and never converts a weight.
    """
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().float().contiguous().numpy().tobytes())
    return digest.digest()[:8]


# --------------------------------------------------------------------------------------------
# the interface


class Backbone(ABC):
    name: str
    latent_channels: int
    pixel_multiple: int  # image sides are padded to a multiple of this
    latent_factor: int  # pixels per latent cell, each spatial axis
    temporal_factor: int = 1  # pixel frames per latent frame after the first
    pixel_range: tuple[float, float] = (0.0, 1.0)  # the range the model's VAE works in (encode/decode map to [0, 1])
    time_scale: float = 1000.0  # the network's timestep for t = 1
    denoiser: nn.Module
    target_presets: dict[str, str]  # preset id -> regular expression over denoiser module names (vov's own)
    default_targets: str
    adapter_defaults: AdapterDefaults = AdapterDefaults()
    fit_defaults: FitDefaults = FitDefaults()
    schedule: Schedule = Schedule()
    max_caption_tokens: int = 0  # 0: the backbone takes no caption
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    model: str = ""  # the hub id or folder the weights came from ("" for the embedded ones)

    # ---- pixels and latents

    @abstractmethod
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, F, H, W) in [0, 1] -> normalised latents (B, C, latent_frames(F), H / f, W / f).

        F is padded to `padded_frames(F)` with copies of the last frame first (never cut).
        """

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> pixels in [0, 1] (not clamped), `pixel_frames(latent frames)` frames."""

    @abstractmethod
    def velocity(self, latents: torch.Tensor, t: torch.Tensor, condition=None) -> torch.Tensor:
        """Predicted velocity for latents at times `t` (shape (batch,), in [0, 1]).

        `condition` is a `Condition`, a raw embeddings tensor (B or 1, L, D), or None for the null caption.
        """

    @property
    @abstractmethod
    def content_hash(self) -> bytes:
        """8 bytes that identify the weights; files record it so they never decode on other weights."""

    def distortion_weights(self) -> torch.Tensor:
        """Per latent channel weights that make latent MSE track pixel MSE (default: equal)."""
        return torch.ones(self.latent_channels)

    # ---- frames

    def padded_frames(self, frames: int) -> int:
        """The frame count a clip of `frames` frames is encoded with: 1 + k * temporal_factor, >= frames."""
        if frames < 1:
            raise UsageError(f"a clip needs at least one frame, not {frames}")
        f = self.temporal_factor
        return 1 + -(-(frames - 1) // f) * f

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a clip of `frames` pixel frames (after padding)."""
        return 1 + (self.padded_frames(frames) - 1) // self.temporal_factor

    def pixel_frames(self, latent_frames: int) -> int:
        """Pixel frames that `latent_frames` latent frames decode to."""
        if latent_frames < 1:
            raise UsageError(f"latents need at least one frame, not {latent_frames}")
        return 1 + (latent_frames - 1) * self.temporal_factor

    def pad_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) -> (B, 3, padded_frames(F), H, W), repeating the last frame."""
        frames = pixels.shape[2]
        extra = self.padded_frames(frames) - frames
        if extra == 0:
            return pixels
        return torch.cat([pixels, pixels[:, :, -1:].expand(-1, -1, extra, -1, -1)], dim=2)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        f = self.latent_factor
        return (self.latent_channels, self.latent_frames(frames), height // f, width // f)

    @property
    def clip_frames(self) -> int:
        """The longest clip one adaptation holds on this backbone (longer videos are cut into clips)."""
        return 1

    # ---- conditioning

    def condition(self, caption: str | None = "") -> Condition:
        """The caption's condition, computed once and cached; "" (or None) is the null condition."""
        caption = caption or ""
        if len(caption.encode("utf-8")) > MAX_CAPTION_BYTES:
            raise UsageError(f"caption: longer than {MAX_CAPTION_BYTES} bytes")
        cache = self.__dict__.setdefault("_conditions", OrderedDict())
        lock = self.__dict__.setdefault("_conditions_lock", threading.Lock())
        with lock:
            if caption in cache:
                cache.move_to_end(caption)
                return cache[caption]
        made = self._encode_caption(caption)
        with lock:
            cache[caption] = made
            while len(cache) > CONDITION_CACHE:
                cache.popitem(last=False)
        return made

    def _encode_caption(self, caption: str) -> Condition:
        """Run the text encoder (loaded on first use) on one caption."""
        if caption:
            raise UsageError(f"backbone {self.name!r} takes no caption")
        raise NotImplementedError

    def schedule_for(self, latent_shape: tuple[int, ...]) -> Schedule:
        """The sampler's schedule for latents of this shape (with or without the batch axis)."""
        return self.schedule

    # ---- device, precision, memory

    def autocast(self, enabled: bool = True):
        """The context forward passes run in: bf16 autocast on CPU with fp32 weights, on CUDA always."""
        if not enabled:
            return contextlib.nullcontext()
        if self.device.type == "cuda" or self.dtype == torch.float32:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def set_gradient_checkpointing(self, on: bool = True) -> None:
        """Recompute each block's activations in the backward pass (less memory, ~1.3x the time).

        Adapters copy the setting when they are built (`AdaptedDenoiser.set_gradient_checkpointing`
        changes one adapter's).
        """
        set_gradient_checkpointing(self.denoiser, on, self.name)

    # ---- adapters

    def adaptable_layers(self) -> dict[str, nn.Linear]:
        """Every linear layer of the denoiser by its full name, in module order (the hash's order)."""
        return {n: m for n, m in self.denoiser.named_modules() if isinstance(m, nn.Linear)}

    def target_layers(self, targets: str | None) -> list[str]:
        """The layers that `targets` names, in module order.

        `targets` is a preset id of this backbone, "" for the default preset, or a comma-separated
        list of exact layer names. Anything else is a UsageError, decided without evaluating it.
        """
        targets = targets or self.default_targets
        if len(targets.encode("utf-8")) > MAX_TARGETS_BYTES:
            raise UsageError(f"adapter targets: longer than {MAX_TARGETS_BYTES} bytes")
        layers = self.adaptable_layers()
        if targets in self.target_presets:
            preset = re.compile(self.target_presets[targets])
            return [n for n in layers if preset.fullmatch(n)]
        names = targets.split(",")
        unknown = [n for n in names if n not in layers]
        if unknown:
            shown = unknown[0] if len(unknown[0]) <= 80 else unknown[0][:80] + "..."
            raise UsageError(f"adapter targets: {shown!r} is neither a preset of backbone {self.name!r} "
                             f"({', '.join(sorted(self.target_presets))}) nor the exact name of one of its "
                             f"adaptable layers")
        if len(set(names)) != len(names):
            raise UsageError("adapter targets: a layer is named twice")
        chosen = set(names)
        return [n for n in layers if n in chosen]

    # ---- export

    def export_signature(self) -> ExportSignature:
        raise NotImplementedError(f"backbone {self.name!r} does not export")

    def export_denoiser(self) -> nn.Module:
        """A module `(latents, t, embeddings[, mask]) -> velocity` in float32 (see `ExportSignature`).

        Its structure is its own (an exporter may replace its linear layers) but its parameters are
        the backbone's: deep-copy it before converting any of them.
        """
        raise NotImplementedError(f"backbone {self.name!r} does not export")

    def export_latent_decoder(self, latent_frames: int = 1) -> nn.Module:
        """A module `latents (B, C, latent_frames, h, w) -> pixels in [0, 1]` for that frame count."""
        raise NotImplementedError(f"backbone {self.name!r} does not export")

    # ---- description

    def describe(self) -> dict:
        """Plain facts about this instance, for `vov backbones` and service model listings."""
        return {"name": self.name, "model": self.model, "content_hash": self.content_hash.hex(),
                "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "latent_channels": self.latent_channels, "latent_factor": self.latent_factor,
                "temporal_factor": self.temporal_factor, "pixel_multiple": self.pixel_multiple,
                "clip_frames": self.clip_frames, "max_caption_tokens": self.max_caption_tokens,
                "schedule": self.schedule.to_json(), "target_presets": sorted(self.target_presets),
                "default_targets": self.default_targets, "adapter_defaults": asdict(self.adapter_defaults),
                "fit_defaults": asdict(self.fit_defaults)}


def set_gradient_checkpointing(denoiser: nn.Module, on: bool, backbone_name: str) -> None:
    """Switch activation recomputation on the first diffusers model inside `denoiser`."""
    for module in denoiser.modules():
        if getattr(module, "_supports_gradient_checkpointing", False):
            if on:
                module.enable_gradient_checkpointing()
            else:
                module.disable_gradient_checkpointing()
            return
    if on:
        raise UsageError(f"backbone {backbone_name!r} does not support gradient checkpointing")


def shallow_module_copy(module: nn.Module) -> nn.Module:
    """A new module object with the same attributes, parameters, buffers and children.

    Its registries (children, parameters, buffers, hooks) are new dicts holding the same objects,
    so a child can be replaced in the copy without touching the original; the tensors are shared.
    """
    copy = module.__class__.__new__(module.__class__)
    state = dict(module.__dict__)
    for key, value in state.items():
        if key.startswith("_") and type(value) in (dict, OrderedDict, set):
            state[key] = type(value)(value)
    copy.__dict__.update(state)
    return copy


def structural_copy(root: nn.Module) -> nn.Module:
    """Every module of `root` copied with `shallow_module_copy`: a tree of its own over shared tensors."""
    memo: dict[int, nn.Module] = {}

    def visit(module: nn.Module) -> nn.Module:
        if id(module) in memo:
            return memo[id(module)]
        copy = shallow_module_copy(module)
        memo[id(module)] = copy
        for name, child in list(module._modules.items()):
            if child is not None:
                copy._modules[name] = visit(child)
        return copy

    return visit(root)


__all__ = ["AdapterDefaults", "Backbone", "Condition", "ExportSignature", "FitDefaults", "Schedule",
           "SCHEDULE_FLOW_SHIFT", "SCHEDULE_UNIFORM", "file_digest", "hash_state", "resolve_device",
           "resolve_dtype", "shallow_module_copy", "structural_copy", "weights_identity"]
