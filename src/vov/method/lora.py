"""The LoRA layer of every decode and export path, where it goes into a model, and the hashed
assignment of a vector's numbers to its factors.

The assignment (`hashed_layers`) is peft's UniLoRA construction, and part of the file format: the
LoRA entries of the target layers, in module order and each layer's A (r x in) before its B
(out x r), are numbered 0 .. D-1; `UniLoraModel.generate_index(D, d, seed)` gives entry j its
number h(j) in 0 .. d-1 (a balanced hash: each number is used floor(D/d) or ceil(D/d) times); entry
j then holds `theta[h(j)] / sqrt(uses(h(j)))`. A file carries theta only; the decoder rebuilds h from
(seed, d, rank, targets), so a change of the generator would change every decoded file
(tests/method/test_lora.py pins it).

Two layers compute `base(x) + B (A x)`:
- `LoraLinear` reads A and B from an adapter's theta through the assignment (encoding, decoding);
- `RowLoraLinear` reads them from each batch row's slice of a packed row of factors (the exported
  graph, where every row of a batch carries its own adaptation).

Neither copies or changes the `nn.Linear` it wraps. `adapted_tree` puts layers into a model without
changing it (new module objects along the paths to them only); `find_layers` and `inject` put them
into a module of one's own, found by the identity of the wrapped layers' weights.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from vov.backbones.module_copy import shallow_module_copy


# ---------------------------------------------------------------------------------- the assignment


def hash_indices(entries: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """peft's balanced hash of `entries` LoRA entries onto d numbers, and each entry's 1 / sqrt(uses)."""
    from peft.tuners.unilora import UniLoraModel

    indices = UniLoraModel.generate_index(entries, d, seed)
    counts = torch.bincount(indices, minlength=d)
    inverse = torch.zeros(d, dtype=torch.float32)
    used = counts > 0
    inverse[used] = counts[used].float().rsqrt()
    return indices, inverse[indices]


def hashed_layers(bases: Sequence[nn.Linear], rank: int, d: int, seed: int, reader: "FactorReader",
                  device: torch.device | str | None = None) -> list["LoraLinear"]:
    """A `LoraLinear` around each of `bases` (in module order), reading theta of length d through the
    hash cut in that order: each layer's A (rank x in), then its B (out x rank), as peft does."""
    entries = sum(rank * (base.in_features + base.out_features) for base in bases)
    indices, scales = hash_indices(entries, d, seed)
    indices, scales = indices.to(device), scales.to(device)
    layers, offset = [], 0
    for position, base in enumerate(bases):
        size = rank * (base.in_features + base.out_features)
        layers.append(LoraLinear(base, position, reader, indices[offset: offset + size],
                                 scales[offset: offset + size], rank))
        offset += size
    return layers


# ---------------------------------------------------------------------------------- from theta


class FactorReader:
    """Where an adapter's layers read their factors: theta as the adapter's forward saw it, or the
    factors expanded once. Kept after the forward, because gradient checkpointing re-runs blocks
    during the backward pass."""

    def __init__(self, slot: nn.ParameterDict, key: str):
        self.slot, self.key = slot, key  # theta is slot[key] (through any parametrisation of it)
        self.theta: torch.Tensor | None = None
        self.expanded: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.cast: dict[torch.dtype, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # expanded, per autocast dtype
        self.cast_of: list | None = None  # the expansion `cast` was made from

    def factors(self, layer: "LoraLinear") -> tuple[torch.Tensor, torch.Tensor]:
        if self.expanded is not None:
            return self.expanded[layer.position]
        theta = self.theta if self.theta is not None else self.slot[self.key]
        return layer.gather(theta)

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

    def __init__(self, base_layer: nn.Linear, position: int, reader: FactorReader, indices: torch.Tensor,
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

    def gather(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's (A, B) from a vector theta."""
        return theta[self.indices_a] * self.scales_a, theta[self.indices_b] * self.scales_b

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


# ---------------------------------------------------------------------------------- from a packed row


class RowContext:
    """The packed factors of the batch being run, (batch, total): set around each forward."""

    lora: torch.Tensor | None = None


class RowLoraLinear(nn.Module):
    """`base(x) + B (A x)` with A (max_rank x in) and B (out x max_rank) sliced from this batch row's
    part of `context.lora`, starting at `offset`: A row-major, then B. Rank below max_rank is zero
    padding, which adds exactly nothing."""

    def __init__(self, base: nn.Linear, offset: int, max_rank: int, context: RowContext):
        super().__init__()
        self.base, self.context, self.r = base, context, max_rank
        self.n_in, self.n_out = base.in_features, base.out_features
        self.a = (offset, offset + max_rank * self.n_in)
        self.b = (self.a[1], self.a[1] + self.n_out * max_rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        lora = self.context.lora
        batch = lora.shape[0]
        a = lora[:, self.a[0]: self.a[1]].reshape(batch, self.r, self.n_in).to(x.dtype)
        b = lora[:, self.b[0]: self.b[1]].reshape(batch, self.n_out, self.r).to(x.dtype)
        flat = x.reshape(batch, -1, self.n_in)
        delta = torch.bmm(torch.bmm(flat, a.transpose(1, 2)), b.transpose(1, 2))
        return y + delta.reshape(y.shape)


# ---------------------------------------------------------------------------------- injection


def adapted_tree(root: nn.Module, adapted: dict[str, nn.Module]) -> nn.Module:
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


def find_layers(root: nn.Module, layers: Sequence[nn.Linear]) -> list[tuple[str, str] | None]:
    """Where each of `layers` sits in `root`, found by the identity of its weight: (the parent's name
    in `root`, the child's key), or None where `root` does not hold it."""
    wanted = {id(layer.weight): i for i, layer in enumerate(layers)}
    places: list[tuple[str, str] | None] = [None] * len(layers)
    for parent_name, parent in root.named_modules():
        for key, child in parent._modules.items():
            if isinstance(child, nn.Linear) and id(child.weight) in wanted:
                places[wanted.pop(id(child.weight))] = (parent_name, key)
    return places


def inject(root: nn.Module, places: Sequence[tuple[str, str]], make) -> None:
    """Replace, in `root` itself, the layer at each place by `make(i, layer)` (i its place's index)."""
    for i, (parent_name, key) in enumerate(places):
        parent = root.get_submodule(parent_name)
        setattr(parent, key, make(i, getattr(parent, key)))
