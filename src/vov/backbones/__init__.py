"""Backbones: the frozen foundation models that vov adapts. `load(name)` gives one by name."""

from __future__ import annotations

from vov.backbones.base import Backbone
from vov.errors import UsageError

NAMES = ("embedded", "tiny")


def load(name: str = "embedded") -> Backbone:
    from vov.backbones import embedded

    if name == "embedded":
        path = embedded.shipped_weights()
        if not path.exists():
            raise UsageError(f"the embedded backbone's weights are missing ({path}); run `vov train-base` to make them")
        return embedded.load_file(path)
    if name == "tiny":
        return embedded.tiny()
    raise UsageError(f"unknown backbone {name!r}; known: {', '.join(NAMES)}")


__all__ = ["Backbone", "load", "NAMES"]
