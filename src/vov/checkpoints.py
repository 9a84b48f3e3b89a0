"""Checkpoints as data, never code: tensors in safetensors, everything else as JSON in its header.

A checkpoint lies where someone else may have written it (an output folder, a run folder), so it is
read without unpickling anything: safetensors holds raw tensors, and its string header holds one
JSON document. `load` checks the kind, every tensor's name, dtype and shape against what the caller
expects, and the size of the file, so a planted or foreign file is refused with one clear line
(UsageError) and never run, half-loaded or silently overwritten.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from vov.errors import UsageError


def save(path: str | os.PathLike, kind: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write atomically (a temporary beside `path`, then a rename)."""
    from safetensors.torch import save_file

    tmp = f"{os.fspath(path)}.tmp"
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp,
              metadata={"kind": kind, "meta": json.dumps(meta)})
    os.replace(tmp, path)


def load(path: str | os.PathLike, kind: str, expected: dict[str, torch.Tensor],
         optional_prefixes: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of a checkpoint that `save` wrote with `kind`.

    Every tensor must be named in `expected` with its dtype and shape; every name of `expected`
    must be present except those starting with one of `optional_prefixes` (state that exists only
    after some step, such as an optimiser's).
    """
    from safetensors import safe_open

    path = os.fspath(path)
    budget = sum(v.numel() * v.element_size() for v in expected.values()) + (16 << 20)
    try:
        if Path(path).stat().st_size > budget:
            raise ValueError("larger than any checkpoint of this kind")
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
            if header.get("kind") != kind:
                raise ValueError(f"not a {kind}")
            names = set(f.keys())
            required = {n for n in expected if not n.startswith(optional_prefixes)} if optional_prefixes else set(expected)
            if not required <= names <= set(expected):
                raise ValueError("its tensors are not the ones expected")
            tensors = {}
            for name in names:
                value = f.get_tensor(name)
                if value.dtype != expected[name].dtype or value.shape != expected[name].shape:
                    raise ValueError(f"tensor {name} has the wrong type or shape")
                tensors[name] = value
            meta = json.loads(header["meta"])
            if not isinstance(meta, dict):
                raise ValueError("its header is not a JSON object")
    except Exception as e:  # safetensors, json and the checks above all mean: not a usable checkpoint
        raise UsageError(f"{path} is not a usable {kind} ({e}); delete it to start afresh") from None
    return tensors, meta


def optimiser_tensors(optimiser: torch.optim.Optimizer, prefix: str = "optimiser") -> dict[str, torch.Tensor]:
    """An optimiser's per-parameter state as flat named tensors (empty before its first step)."""
    out = {}
    for index, state in optimiser.state_dict()["state"].items():
        for name, value in state.items():
            out[f"{prefix}.{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(float(value))
    return out


def adam_shapes(optimiser: torch.optim.Optimizer, prefix: str = "optimiser") -> dict[str, torch.Tensor]:
    """What `optimiser_tensors` of an Adam/AdamW optimiser can hold: templates for `load`."""
    out = {}
    for index, param in enumerate(p for g in optimiser.param_groups for p in g["params"]):
        out.update({f"{prefix}.{index}.step": torch.tensor(0.0), f"{prefix}.{index}.exp_avg": torch.zeros_like(param),
                    f"{prefix}.{index}.exp_avg_sq": torch.zeros_like(param)})
    return out


def restore_optimiser(optimiser: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                      prefix: str = "optimiser") -> None:
    state = optimiser.state_dict()
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            _, index, field = name.rsplit(".", 2)
            state["state"].setdefault(int(index), {})[field] = value
    optimiser.load_state_dict(state)
