"""Copies of a module tree that share its tensors: a child can be replaced in the copy (an adapter
injected, an exporter's layer swapped) while the original is left as it was."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn


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
