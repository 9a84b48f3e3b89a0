"""Encode options that make the tiny backbone fit in a fraction of a second (shared by tests and goldens)."""

from vov.method.adapters import AdapterSpec
from vov.codec import EncodeOptions
from vov.method.fit import FitConfig


def fast_options(target_bpp: float | None = None, **fit) -> EncodeOptions:
    """Rate by lambda unless `target_bpp` (the whole file's rate) is given."""
    return EncodeOptions(backbone="tiny", adapter=AdapterSpec(rank=2, d=512), fit=FitConfig(steps=fit.pop("steps", 12), **fit),
                         target_bpp=target_bpp, sampler_steps=4)
