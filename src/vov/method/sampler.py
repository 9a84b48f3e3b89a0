"""The decoder's sampler: Euler integration of the flow ODE from noise (t = 1) to data (t = 0).

`dx/dt = f(x, t, c)` with x_1 = portable noise from the file's seed (vov.method.noise), on a fixed
schedule of `steps` uniform steps in t (schedule id 0, the only one defined by format version 1).
`velocity` may be the adapted torch module or a remote denoiser; the loop is the same.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from vov.method import noise

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SCHEDULES = {0: "uniform"}


def timesteps(steps: int, schedule: int = 0) -> np.ndarray:
    """steps + 1 times from 1 down to 0, as float32."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule}")
    return np.linspace(1.0, 0.0, steps + 1, dtype=np.float64).astype(np.float32)


def initial_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return noise.normal_tensor(shape, seed, noise.INITIAL)


def sample(velocity: Velocity, shape: tuple[int, ...], seed: int, steps: int, schedule: int = 0,
           on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Integrate from the seed's noise; `shape` is the latent shape with its batch axis."""
    x = initial_noise(shape, seed)
    ts = timesteps(steps, schedule)
    for i in range(steps):
        t = torch.full((shape[0],), float(ts[i]))
        v = velocity(x, t).float()
        x = x + float(ts[i + 1] - ts[i]) * v
        if on_step:
            on_step(i + 1, steps)
    return x


def torch_velocity(module: torch.nn.Module, condition: torch.Tensor | None = None, autocast: bool = True) -> Velocity:
    """A Velocity from a torch denoiser (bf16 autocast on CPU by default)."""

    @torch.no_grad()
    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return module(x, t, condition).float()

    return velocity
