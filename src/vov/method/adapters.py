"""Adapters: the low-rank adaptation that stores one image, read from one shared vector theta.

Both kinds are peft's UniLoRA construction: every entry of every LoRA factor A (r x in) and
B (out x r) of the target layers is `theta[h(j)] / sqrt(uses(h(j)))`, with `h` a balanced hash
rebuilt from (seed, d, rank, target layers) by `UniLoraModel.generate_index`. Only those numbers
travel in a file, never indices.

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

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from vov.backbones.base import Backbone, set_gradient_checkpointing, shallow_module_copy
from vov.errors import UsageError

KINDS = ("one-vector", "lora")
ADAPTER_NAME = "default"


@dataclass(frozen=True)
class AdapterSpec:
    """The adapter a file records. None (rank, d) and "" (targets) mean the backbone's default
    (`Backbone.adapter_defaults`); `resolved(backbone)` fills them in."""

    kind: str = "one-vector"
    rank: int | None = None
    d: int | None = None  # ignored for "lora", where d is the LoRA entry count
    seed: int = 0
    targets: str = ""  # a preset id or comma-separated exact layer names; "" means the backbone's default

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"adapter kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.rank is not None and not 1 <= self.rank <= 64:
            raise UsageError(f"rank must be between 1 and 64, not {self.rank}")
        if self.kind == "one-vector" and self.d is not None and not 16 <= self.d <= 1 << 22:
            raise UsageError(f"d must be between 16 and {1 << 22}, not {self.d}")

    def resolved(self, backbone: Backbone) -> "AdapterSpec":
        """This spec with the backbone's defaults where it leaves a choice open."""
        defaults = backbone.adapter_defaults
        return AdapterSpec(self.kind, self.rank if self.rank is not None else defaults.rank,
                           self.d if self.d is not None else defaults.d, self.seed,
                           self.targets or defaults.targets or backbone.default_targets)


def default_spec(backbone: Backbone, kind: str = "one-vector") -> AdapterSpec:
    """The backbone's own adapter defaults as a spec."""
    d = backbone.adapter_defaults
    return AdapterSpec(kind, d.rank, d.d, d.seed, d.targets)


def lora_entry_count(backbone: Backbone, spec: AdapterSpec) -> int:
    spec = spec.resolved(backbone)
    layers = backbone.adaptable_layers()
    return sum(spec.rank * (layers[n].in_features + layers[n].out_features) for n in backbone.target_layers(spec.targets))


def theta_length(backbone: Backbone, spec: AdapterSpec) -> int:
    return lora_entry_count(backbone, spec) if spec.kind == "lora" else spec.resolved(backbone).d


def hash_indices(entries: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """peft's balanced hash of `entries` LoRA entries onto d numbers, and each entry's 1 / sqrt(uses)."""
    from peft.tuners.unilora import UniLoraModel

    indices = UniLoraModel.generate_index(entries, d, seed)
    counts = torch.bincount(indices, minlength=d)
    inverse = torch.zeros(d, dtype=torch.float32)
    used = counts > 0
    inverse[used] = counts[used].float().rsqrt()
    return indices, inverse[indices]


class _Reader:
    """Where an adapter's layers read their factors: theta as the adapter's forward saw it, or the
    factors expanded once. Kept after the forward, because gradient checkpointing re-runs blocks
    during the backward pass."""

    def __init__(self, slot: nn.ParameterDict):
        self.slot = slot
        self.theta: torch.Tensor | None = None
        self.expanded: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.cast: dict[torch.dtype, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # expanded, per autocast dtype
        self.cast_of: list | None = None  # the expansion `cast` was made from

    def factors(self, layer: "LoraLinear") -> tuple[torch.Tensor, torch.Tensor]:
        if self.expanded is not None:
            return self.expanded[layer.position]
        theta = self.theta if self.theta is not None else self.slot[ADAPTER_NAME]
        return theta[layer.indices_a] * layer.scales_a, theta[layer.indices_b] * layer.scales_b

    def expanded_as(self, layer: "LoraLinear", dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The expanded factors already in `dtype`: what autocast would make of them in every call."""
        if self.cast_of is not self.expanded:
            self.cast, self.cast_of = {}, self.expanded
        if dtype not in self.cast:
            self.cast[dtype] = [(a.to(dtype), b.to(dtype)) for a, b in self.expanded]
        return self.cast[dtype][layer.position]


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast gives matrix products on this device now, or None when it is off."""
    try:
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    except (AttributeError, TypeError, RuntimeError):  # an older torch: no shortcut
        return None


class LoraLinear(nn.Module):
    """`base_layer(x) + B (A x)`: a shared frozen linear layer with this adapter's factors.

    The arithmetic is peft's UniLoRA layer's, step for step (the product in theta's dtype, the sum
    cast back to the input's dtype), so decoded files do not change with the implementation.
    """

    def __init__(self, base_layer: nn.Linear, position: int, reader: _Reader, indices: torch.Tensor,
                 scales: torch.Tensor, rank: int):
        super().__init__()
        self.base_layer = base_layer
        self.position = position
        self.reader = reader
        n_in, n_out = base_layer.in_features, base_layer.out_features
        split = rank * n_in
        self.register_buffer("indices_a", indices[:split].view(rank, n_in).clone())
        self.register_buffer("indices_b", indices[split:].view(n_out, rank).clone())
        self.register_buffer("scales_a", scales[:split].view(rank, n_in).clone())
        self.register_buffer("scales_b", scales[split:].view(n_out, rank).clone())

    in_features = property(lambda self: self.base_layer.in_features)
    out_features = property(lambda self: self.base_layer.out_features)
    weight = property(lambda self: self.base_layer.weight)
    bias = property(lambda self: self.base_layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        previous = x.dtype
        result = self.base_layer(x)
        reader = self.reader
        if reader.expanded is not None:
            dtype = _autocast_dtype(x.device.type)
            if dtype is not None:
                # Under autocast both products run in `dtype` whatever their inputs' dtype: the
                # factors cast once give the same numbers, and x need not make the round trip
                # through theta's dtype (exact both ways), which saves three copies per call.
                a, b = reader.expanded_as(self, dtype)
                return (result + F.linear(F.linear(x, a), b)).to(previous)
        a, b = reader.factors(self)
        x = x.to(a.dtype)
        result = result + F.linear(F.linear(x, a), b)
        return result.to(previous)

    def _apply_own(self, fn) -> None:
        for key, buf in self._buffers.items():
            if buf is not None:
                self._buffers[key] = fn(buf)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.indices_a.shape[0]}"


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
        self._reader = _Reader(self.theta_slot)
        self._cache_key: tuple | None = None
        self._cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None

        # the hash, cut in module order: each layer's A (r x in) then its B (out x r), as peft does
        indices, scales = hash_indices(self.lora_entries, self.d, spec.seed)
        indices, scales = indices.to(device), scales.to(device)
        layers = backbone.adaptable_layers()
        self._lora: list[tuple[str, LoraLinear]] = []
        offset = 0
        adapted = {}
        for position, name in enumerate(self.target_names):
            base = layers[name]
            size = spec.rank * (base.in_features + base.out_features)
            layer = LoraLinear(base, position, self._reader, indices[offset: offset + size],
                               scales[offset: offset + size], spec.rank)
            offset += size
            adapted[name] = layer
            self._lora.append((name, layer))
        self.denoiser = _adapted_tree(backbone.denoiser, adapted)

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
        return {name: (theta[m.indices_a] * m.scales_a, theta[m.indices_b] * m.scales_b) for name, m in self._lora}

    @torch.no_grad()
    def expand(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The factors of every layer from the current theta, gathered once (kept until theta changes)."""
        theta = self.theta.detach()
        key = (theta.data_ptr(), theta._version, theta.device, theta.dtype, parametrize.is_parametrized(self.theta_slot))
        if self._cache is None or self._cache_key != key or parametrize.is_parametrized(self.theta_slot):
            self._cache = [(theta[m.indices_a] * m.scales_a, theta[m.indices_b] * m.scales_b) for _, m in self._lora]
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


def _adapted_tree(root: nn.Module, adapted: dict[str, nn.Module]) -> nn.Module:
    """`root` with the modules named in `adapted` replaced, without changing `root`.

    The modules on the way from the root to each replaced one are shallow copies (new objects,
    same tensors); every other module is the original object.
    """
    copies = {"": shallow_module_copy(root)}
    for name, replacement in adapted.items():
        parts = name.split(".")
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth])
            if prefix not in copies:
                parent = copies[".".join(parts[: depth - 1])]
                copies[prefix] = shallow_module_copy(parent._modules[parts[depth - 1]])
                parent._modules[parts[depth - 1]] = copies[prefix]
        copies[".".join(parts[:-1])]._modules[parts[-1]] = replacement
    return copies[""]
