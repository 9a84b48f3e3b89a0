"""Adapters: the low-rank adaptation that stores one image, read from one shared vector theta.

Both kinds are peft's UniLoRA (`UniLoraConfig`): every entry of every LoRA factor A (r x in) and
B (out x r) of the target layers is `theta[h(j)] / sqrt(uses(h(j)))`, with `h` a balanced hash
rebuilt from (seed, d, rank, target layers). Only those numbers travel in a file, never indices.

- "one-vector": d is chosen freely (smaller than the LoRA entry count D), entries share values.
- "lora": plain LoRA of rank r. It is the same construction with d = D: the balanced hash is then a
  permutation and every scale is 1, so each LoRA entry is its own coded number.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from vov.backbones.base import Backbone
from vov.errors import UsageError

KINDS = ("one-vector", "lora")
ADAPTER_NAME = "default"


@dataclass(frozen=True)
class AdapterSpec:
    kind: str = "one-vector"
    rank: int = 4
    d: int = 16384  # ignored for "lora", where d is the LoRA entry count
    seed: int = 0
    targets: str = ""  # a preset id or comma-separated exact layer names; "" means the backbone's default

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"adapter kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not 1 <= self.rank <= 64:
            raise UsageError(f"rank must be between 1 and 64, not {self.rank}")
        if self.kind == "one-vector" and not 16 <= self.d <= 1 << 22:
            raise UsageError(f"d must be between 16 and {1 << 22}, not {self.d}")


def lora_entry_count(backbone: Backbone, spec: AdapterSpec) -> int:
    layers = backbone.adaptable_layers()
    return sum(spec.rank * (layers[n].in_features + layers[n].out_features) for n in backbone.target_layers(spec.targets))


def theta_length(backbone: Backbone, spec: AdapterSpec) -> int:
    return lora_entry_count(backbone, spec) if spec.kind == "lora" else spec.d


class AdaptedDenoiser(nn.Module):
    """A private copy of the backbone's denoiser with a UniLoRA adapter injected.

    `theta_slot` is the ParameterDict that holds theta; the fitting loop attaches its quantiser to
    it with torch's parametrisation, so every layer reads the quantised vector.
    """

    def __init__(self, backbone: Backbone, spec: AdapterSpec):
        super().__init__()
        from peft.tuners.unilora import UniLoraConfig, UniLoraModel

        spec.validate()
        self.spec = spec
        self.target_names = backbone.target_layers(spec.targets)
        if not self.target_names:
            raise UsageError(f"adapter targets {spec.targets!r} name no layer of backbone {backbone.name!r}")
        self.d = theta_length(backbone, spec)
        self.lora_entries = lora_entry_count(backbone, spec)  # D: the LoRA entries that theta feeds
        # exact names: peft matches a name or a dotted suffix of one, and full names have no longer match
        config = UniLoraConfig(r=spec.rank, theta_d_length=self.d, proj_seed=spec.seed,
                               target_modules=list(self.target_names))
        denoiser = copy.deepcopy(backbone.denoiser)
        with torch.random.fork_rng():  # peft draws theta's initial values; they are replaced below
            self.tuner = UniLoraModel(denoiser, config, ADAPTER_NAME)
        self.denoiser = denoiser
        self.theta_slot = self.tuner.unilora_theta_d
        self.set_theta(torch.zeros(self.d))

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

    def layers(self) -> list[tuple[str, nn.Module]]:
        """The adapted layers in hash order, each with its index and scale buffers."""
        return [(n, m) for n, m in self.denoiser.named_modules() if hasattr(m, "unilora_indices_A") and n in self.target_names]

    def lora_factors(self, theta: torch.Tensor | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """name -> (A, B) expanded from theta (default: the adapter's own)."""
        theta = self.theta if theta is None else theta
        out = {}
        for name, m in self.layers():
            a = theta[m.unilora_indices_A[ADAPTER_NAME]] * m.unilora_scales_A[ADAPTER_NAME]
            b = theta[m.unilora_indices_B[ADAPTER_NAME]] * m.unilora_scales_B[ADAPTER_NAME]
            out[name] = (a, b)
        return out

    def forward(self, latents: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.denoiser(latents, t, condition)
