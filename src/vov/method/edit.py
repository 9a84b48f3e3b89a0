"""Editing with the representation: merged and scaled adaptations of one frozen base.

An adaptation is the set of LoRA factors (A_l, B_l) of its target layers l, read from its vector
theta. Editing combines adaptations without touching any vector:

    merge:     dW_l = w_1 B_1 A_1 + ... + w_n B_n A_n    (rank concatenation)
    strength:  dW_l = s (w_1 B_1 A_1 + ... )             (s = 1: the adaptation as it is; s = 0: the base)

A sum of low-rank products is itself one low-rank product: A_l = [A_1; ...; A_n] stacks the A's
(r_1 + ... + r_n rows) and B_l = [s w_1 B_1, ..., s w_n B_n] puts the B's side by side with their
weights. `EditedAdapter` is an `AdaptedDenoiser` whose factors are exactly these, so everything that
runs an adapter runs an edit unchanged: the codec's decode loop, the engines' `open` (torch, ONNX
Runtime, Triton: they read `expand()` and `layers()`), `lora_factors()` for export.

The parts must adapt the same layers of the same frozen base (the same backbone object): their
layers share the base's `nn.Linear`s. The merged rank is the sum of the parts' ranks; an engine that
serves up to rank R serves a merge only when that sum is at most R (`check_rank`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from vov.backbones.base import Backbone
from vov.errors import BackboneMismatch, UsageError
from vov.limits import LimitExceeded
from vov.method.adapters import AdaptedDenoiser

MAX_PARTS = 4  # adaptations in one merge
WEIGHT_RANGE = (-4.0, 4.0)  # each part's weight w_i
STRENGTH_RANGE = (-4.0, 4.0)  # the edit's strength s
MAX_RANK = 64  # the largest merged rank any path decodes (the format's own largest rank)


def check_number(name: str, value, bounds: tuple[float, float]) -> float:
    """`value` as a float when it is finite and within `bounds`; UsageError otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(number) or not bounds[0] <= number <= bounds[1]:
        raise UsageError(f"{name} must be a finite number between {bounds[0]:g} and {bounds[1]:g}, not {value}")
    return number


def check_weights(weights: Sequence[float], parts: int) -> tuple[float, ...]:
    """One weight per part, each finite and within WEIGHT_RANGE."""
    if len(weights) != parts:
        raise UsageError(f"{len(weights)} weights for {parts} adaptations: give one weight per file")
    return tuple(check_number(f"weight {i + 1}", w, WEIGHT_RANGE) for i, w in enumerate(weights))


def check_rank(rank: int, limit: int, where: str, error: type[Exception] = LimitExceeded) -> None:
    """Refuse an edited rank above what `where` serves (`error`, naming both ranks)."""
    if rank > limit:
        raise error(f"the edited adaptation has rank {rank} (the sum of the merged files' ranks); {where} "
                            f"takes at most rank {limit}: merge fewer or lower-rank files")


class EditedAdapter(AdaptedDenoiser):
    """The merge of `parts` ((adapter, weight) pairs) at `strength`, as one adapter of the same base.

    It holds no vector of its own: its factors are rebuilt from the parts' current factors, so when a
    part's theta changes (the next clip of a video) the edit follows. Its factors are never trained
    (`set_theta` refuses; gradients do not reach the parts). The parts stay owned by the caller.
    """

    def __init__(self, backbone: Backbone, parts: Sequence[tuple[AdaptedDenoiser, float]], strength: float = 1.0):
        parts = list(parts)
        if not 1 <= len(parts) <= MAX_PARTS:
            raise UsageError(f"an edit combines 1 to {MAX_PARTS} adaptations, not {len(parts)}")
        if not all(isinstance(a, AdaptedDenoiser) and not isinstance(a, EditedAdapter) for a, _ in parts):
            raise UsageError("an edit combines adaptations (AdaptedDenoiser), not other edits")
        weights = check_weights([w for _, w in parts], len(parts))
        strength = check_number("strength", strength, STRENGTH_RANGE)
        first = parts[0][0]
        layers = backbone.adaptable_layers()
        for i, (adapter, _) in enumerate(parts):
            if adapter.backbone_name != backbone.name or any(m.base_layer is not layers.get(name)
                                                             for name, m in adapter.layers()):
                raise BackboneMismatch(f"adaptation {i + 1} belongs to another backbone than {backbone.name!r} "
                                       f"(other weights): only adaptations of one backbone merge")
            if adapter.target_names != first.target_names:
                raise UsageError(f"adaptation {i + 1} adapts other layers ({adapter.spec.targets or 'default'}) than "
                                 f"adaptation 1 ({first.spec.targets or 'default'}): only adaptations of the same "
                                 f"target layers merge")
        rank = sum(a.spec.rank for a, _ in parts)
        check_rank(rank, MAX_RANK, "vov")
        super().__init__(backbone, first.spec)  # the layer structure; its own vector stays zero and unused
        self.rank, self.strength = rank, strength
        self.parts = [(adapter, w) for (adapter, _), w in zip(parts, weights)]
        self._scales = [float(strength * w) for w in weights]  # one rounding per part, to the factors' dtype
        self._merged_from: list | None = None
        self._merged: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(w for _, w in self.parts)

    def set_theta(self, theta: torch.Tensor) -> None:
        raise UsageError("an edited adaptation has no vector of its own; set the parts' vectors")

    @torch.no_grad()
    def expand(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's (A, B): the parts' A's stacked, their B's side by side times strength x weight.

        Kept until a part's factors change (each part keeps its own expansion until its theta changes)."""
        expansions = [adapter.expand() for adapter, _ in self.parts]
        if self._merged is not None and all(a is b for a, b in zip(expansions, self._merged_from)):
            return self._merged
        merged = []
        for position in range(len(self.target_names)):
            a_parts = [e[position][0] for e in expansions]
            b_parts = [e[position][1] * scale for e, scale in zip(expansions, self._scales)]
            merged.append((torch.cat(a_parts, 0) if len(a_parts) > 1 else a_parts[0],
                           torch.cat(b_parts, 1) if len(b_parts) > 1 else b_parts[0]))
        self._merged_from, self._merged = expansions, merged
        return merged

    def lora_factors(self, theta: torch.Tensor | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """name -> (A, B) of the edit (rank `self.rank`)."""
        if theta is not None:
            raise UsageError("an edited adaptation has no vector of its own; its factors come from its parts")
        return {name: factors for (name, _), factors in zip(self.layers(), self.expand())}

    def forward(self, latents: torch.Tensor, t: torch.Tensor, condition=None) -> torch.Tensor:
        if self._reader.expanded is not None:  # inside frozen()
            return self.denoiser(latents, t, condition)
        with self.frozen():  # the layers read the merged factors, never the (unused) vector
            return self.denoiser(latents, t, condition)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for adapter, _ in self.parts:
            adapter._apply(fn, recurse)
        self._merged_from, self._merged = None, None
        return self

    def extra_repr(self) -> str:
        weights = ", ".join(f"{w:g}" for w in self.weights)
        return f"parts={len(self.parts)}, weights=({weights}), strength={self.strength:g}, rank={self.rank}"
