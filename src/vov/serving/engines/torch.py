"""torch in this process: the reference engine.

`TorchEngine` runs the backbone in its own device, dtype and autocast, exactly as `vov decompress`
does (it is vov.codec's default engine); every other engine's pixels must agree with its pixels
within vov.serving.parity's tolerance.
"""

from __future__ import annotations

import torch

from vov.method import sampler
from vov.serving.engines.base import BaseSession


class TorchSession(BaseSession):
    """The adapter's factors expanded once; each step one forward under the sampler's autocast."""

    def __init__(self, adapter, condition, autocast: bool):
        self._frozen = adapter.frozen()
        self._frozen.__enter__()
        self._velocity = sampler.torch_velocity(adapter, condition, autocast)

    def denoise(self, latents, t):
        return self._velocity(latents, t)

    def _close(self) -> None:
        self._frozen.__exit__(None, None, None)


class TorchEngine:
    """The backbone itself. `autocast=False` runs in the weights' dtype (fp32 parity checks)."""

    def __init__(self, backbone, autocast: bool = True):
        self.backbone, self.autocast = backbone, autocast

    def open(self, adapter, condition=None) -> TorchSession:
        return TorchSession(adapter, condition, self.autocast)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.backbone.decode(latents).float()

    def describe(self) -> str:
        return f"torch ({self.backbone.device}, {str(self.backbone.dtype).replace('torch.', '')})"
