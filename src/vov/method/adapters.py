"""Adapters: the low-rank adaptation that stores one image, read from one shared vector theta.

Both kinds are peft's UniLoRA construction (vov.method.lora): every entry of every LoRA factor
A (r x in) and B (out x r) of the target layers is `theta[h(j)] / sqrt(uses(h(j)))`, with `h` a
balanced hash rebuilt from (seed, d, rank, target layers). Only those numbers travel in a file,
never indices.

- "one-vector": d is chosen freely (smaller than the LoRA entry count D), entries share values.
- "lora": plain LoRA of rank r. It is the same construction with d = D: the balanced hash is then a
  permutation and every scale is 1, so each LoRA entry is its own coded number.

One frozen base serves every adapter. An adapter never copies a weight: it builds its own module
objects only along the paths from the denoiser's root to its target layers (the other modules, and
every parameter, are the backbone's), and each target layer becomes a `LoraLinear` around the
backbone's own `nn.Linear`. Two adapters on one backbone therefore hold their own theta, indices and
structure, and the backbone's modules are never modified.

Expansion: the LoRA factors are gathered from theta in every forward while theta trains. When theta
is fixed (decoding, serving, the encoder's best-of-N search), they are gathered once and reused:
automatically in a forward without gradients (the gathered factors are kept until theta changes),
or explicitly inside `with adapter.frozen():`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from vov.backbones.base import Backbone, set_gradient_checkpointing
from vov.backbones.defaults import AdapterDefaults
from vov.errors import UsageError
from vov.format import bitstream
from vov.format.bitstream import MAX_D, MAX_RANK
from vov.method.lora import FactorReader, LoraLinear, adapted_tree, hashed_layers

KINDS = bitstream.ADAPTER_KINDS  # the kinds by their number in a file
DEFAULT_KIND = "one-vector"
ADAPTER_NAME = "default"
_GENERIC = AdapterDefaults()  # a backbone's unless it sets its own; a spec that names no seed or targets takes these


@dataclass(frozen=True)
class AdapterSpec:
    """The adapter a file records. None (rank, d) and "" (targets) mean the backbone's default
    (`Backbone.adapter_defaults`); `resolved(backbone)` fills them in."""

    kind: str = DEFAULT_KIND
    rank: int | None = None
    d: int | None = None  # ignored for "lora", where d is the LoRA entry count
    seed: int = _GENERIC.seed
    # a preset id or comma-separated exact layer names; "" means the backbone's default
    targets: str = _GENERIC.targets

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"adapter kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.rank is not None and not 1 <= self.rank <= MAX_RANK:
            raise UsageError(f"rank must be between 1 and {MAX_RANK}, not {self.rank}")
        if self.kind == "one-vector" and self.d is not None and not 16 <= self.d <= MAX_D:
            raise UsageError(f"d must be between 16 and {MAX_D}, not {self.d}")

    def decoder_fields(self) -> dict[str, int | str]:
        """The file's adapter fields (vov.format.bitstream.VovFile) by their names: the one mapping between
        the two. For a resolved spec whose `d` is the coded vector's length (for "lora": the LoRA entries)."""
        return {"adapter_kind": KINDS.index(self.kind), "rank": self.rank, "d": self.d, "adapter_seed": self.seed,
                "targets": self.targets}

    @classmethod
    def from_decoder_fields(cls, fields: Mapping[str, int | str]) -> "AdapterSpec":
        """The spec a file records (`decoder_fields`; a VovFile's `vars()`)."""
        return cls(KINDS[fields["adapter_kind"]], fields["rank"], fields["d"], fields["adapter_seed"],
                   fields["targets"])

    def resolved(self, backbone: Backbone) -> "AdapterSpec":
        """This spec with the backbone's defaults where it leaves a choice open."""
        defaults = backbone.adapter_defaults
        return AdapterSpec(self.kind, self.rank if self.rank is not None else defaults.rank,
                           self.d if self.d is not None else defaults.d, self.seed,
                           self.targets or defaults.targets or backbone.default_targets)


def default_spec(backbone: Backbone, kind: str = DEFAULT_KIND) -> AdapterSpec:
    """The backbone's own adapter defaults as a spec."""
    d = backbone.adapter_defaults
    return AdapterSpec(kind, d.rank, d.d, d.seed, d.targets)


def lora_entry_count(backbone: Backbone, spec: AdapterSpec) -> int:
    spec = spec.resolved(backbone)
    layers = backbone.adaptable_layers()
    return sum(spec.rank * (layers[n].in_features + layers[n].out_features) for n in backbone.target_layers(spec.targets))


def theta_length(backbone: Backbone, spec: AdapterSpec) -> int:
    return lora_entry_count(backbone, spec) if spec.kind == "lora" else spec.resolved(backbone).d


class AdaptedDenoiser(nn.Module):
    """The backbone's denoiser with a UniLoRA adapter, sharing every weight with the backbone.

    `theta_slot` is the ParameterDict that holds theta; the fitting loop attaches its quantiser to
    it with torch's parametrisation, so every layer reads the quantised vector.

    Only the adapter's own tensors (theta, the hash's indices and scales) follow `.to()`, and
    `.train()` / `.requires_grad_()` touch only them: the base belongs to the backbone.
    """

    expand_when_fixed = True  # False: gather the factors in every forward, as before (for comparisons)

    def __init__(self, backbone: Backbone, spec: AdapterSpec):
        super().__init__()
        spec.validate()
        spec = spec.resolved(backbone)
        self.spec = spec
        self.backbone_name = backbone.name
        self.target_names = backbone.target_layers(spec.targets)
        if not self.target_names:
            raise UsageError(f"adapter targets {spec.targets!r} name no layer of backbone {backbone.name!r}")
        self.d = theta_length(backbone, spec)
        self.lora_entries = lora_entry_count(backbone, spec)  # D: the LoRA entries that theta feeds
        device = getattr(backbone, "device", torch.device("cpu"))
        self.device = device
        self.autocast = backbone.autocast  # the context the backbone's forward passes run in
        self.theta_slot = nn.ParameterDict({ADAPTER_NAME: nn.Parameter(torch.zeros(self.d, device=device))})
        self._reader = FactorReader(self.theta_slot, ADAPTER_NAME)
        self._cache_key: tuple | None = None
        self._cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        layers = backbone.adaptable_layers()
        lora = hashed_layers([layers[name] for name in self.target_names], spec.rank, self.d, spec.seed,
                             self._reader, device)
        self._lora: list[tuple[str, LoraLinear]] = list(zip(self.target_names, lora))
        self.denoiser = adapted_tree(backbone.denoiser, dict(self._lora))

    # ---- theta

    @property
    def theta(self) -> torch.Tensor:
        return self.theta_slot[ADAPTER_NAME]

    def raw_theta(self) -> nn.Parameter:
        """The stored (unparametrised) vector."""
        if hasattr(self.theta_slot, "parametrizations"):
            return getattr(self.theta_slot.parametrizations, ADAPTER_NAME).original
        return self.theta_slot[ADAPTER_NAME]

    @torch.no_grad()
    def set_theta(self, theta: torch.Tensor) -> None:
        if theta.shape != (self.d,):
            raise ValueError(f"theta has shape {tuple(theta.shape)}, the adapter needs ({self.d},)")
        self.raw_theta().copy_(theta)

    # ---- layers and factors

    def layers(self) -> list[tuple[str, LoraLinear]]:
        """The adapted layers in hash order."""
        return list(self._lora)

    def lora_factors(self, theta: torch.Tensor | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """name -> (A, B) expanded from theta (default: the adapter's own)."""
        theta = self.theta if theta is None else theta
        return {name: m.gather(theta) for name, m in self._lora}

    @torch.no_grad()
    def expand(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The factors of every layer from the current theta, gathered once (kept until theta changes)."""
        theta = self.theta.detach()
        key = (theta.data_ptr(), theta._version, theta.device, theta.dtype, parametrize.is_parametrized(self.theta_slot))
        if self._cache is None or self._cache_key != key or parametrize.is_parametrized(self.theta_slot):
            self._cache = [m.gather(theta) for _, m in self._lora]
            self._cache_key = key
        return self._cache

    @contextlib.contextmanager
    def frozen(self):
        """Inside, every forward uses the factors expanded once from theta as it is on entry.

        For a theta that does not change (best-of-N candidates, decoding with gradients on):
        gradients do not reach theta inside. An adapter serves one caller at a time.
        """
        previous = self._reader.expanded
        self._reader.expanded = self.expand()
        try:
            yield self
        finally:
            self._reader.expanded = previous

    def forward(self, latents: torch.Tensor, t: torch.Tensor, condition=None) -> torch.Tensor:
        reader = self._reader
        if reader.expanded is not None:  # inside frozen()
            return self.denoiser(latents, t, condition)
        if self.expand_when_fixed and not torch.is_grad_enabled() and not parametrize.is_parametrized(self.theta_slot):
            reader.expanded = self.expand()
            try:
                return self.denoiser(latents, t, condition)
            finally:
                reader.expanded = None
        reader.theta = self.theta  # one read (and one quantisation) per forward
        return self.denoiser(latents, t, condition)

    # ---- what belongs to the adapter

    def set_gradient_checkpointing(self, on: bool = True) -> None:
        """Gradient checkpointing for this adapter's forward passes only."""
        set_gradient_checkpointing(self.denoiser, on, self.backbone_name)

    def _apply(self, fn, recurse=True):
        self.theta_slot._apply(fn)
        for _, layer in self._lora:
            layer._apply_own(fn)
        self._cache, self._cache_key = None, None
        self._reader.theta, self._reader.cast, self._reader.cast_of = None, {}, None
        return self

    def train(self, mode: bool = True):
        self.training = mode
        for _, layer in self._lora:
            layer.training = mode
        return self

    def requires_grad_(self, requires_grad: bool = True):
        self.raw_theta().requires_grad_(requires_grad)
        return self

