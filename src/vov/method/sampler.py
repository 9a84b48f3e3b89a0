"""The decoder's sampler: Euler integration of the flow ODE from noise (t = 1) to data (t = 0).

`dx/dt = f(x, t, c)` with x_1 = portable noise from the file's seed (vov.method.noise), on the grid
of `vov.method.scheduler` (schedule id 0: `steps` uniform steps in t, the only one defined by format
version 1). `velocity` may be the adapted torch module or a remote denoiser; the loop is the same.
Stochastic decodes (best-of-N replay) run the same loop with SDE steps: vov.method.scaling.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from vov.method import noise
from vov.method.scheduler import SCHEDULES, Scheduler
from vov.method.scheduler import timesteps as _grid

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
__all__ = ["SCHEDULES", "Velocity", "initial_noise", "sample", "timesteps", "torch_velocity"]


def timesteps(steps: int, schedule: int = 0, shift: float = 1.0) -> np.ndarray:
    """steps + 1 times from 1 down to 0, as float32."""
    return _grid(steps, schedule, shift)


def initial_noise(shape: tuple[int, ...], seed: int, device: torch.device | str | None = None) -> torch.Tensor:
    x = noise.normal_tensor(shape, seed, noise.INITIAL)
    return x if device is None else x.to(device)


def sample(velocity: Velocity, shape: tuple[int, ...], seed: int, steps: int, schedule: int = 0,
           on_step: Callable[[int, int], None] | None = None, shift: float = 1.0,
           device: torch.device | str | None = None) -> torch.Tensor:
    """Integrate from the seed's noise; `shape` is the latent shape with its batch axis.

    The latents live on `device` (by default where torch puts new tensors, the CPU), which must be
    where `velocity` takes its inputs.
    """
    scheduler = Scheduler(steps, schedule, shift)
    x = initial_noise(shape, seed, device)
    for i in range(steps):
        v = velocity(x, scheduler.time_tensor(i, shape[0], x.device)).float()
        x = scheduler.step(x, v, i)
        if on_step:
            on_step(i + 1, steps)
    return x


def torch_velocity(module: torch.nn.Module, condition: torch.Tensor | None = None, autocast: bool = True) -> Velocity:
    """A Velocity from a torch denoiser, under bf16 autocast on the inputs' device by default."""

    @torch.no_grad()
    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            return module(x, t, condition).float()

    return velocity
