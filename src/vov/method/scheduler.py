"""The sampler's time grid and its steps, shared by the decoder's loop and the encoder's search.

A `Scheduler` owns the grid `t_0 = 1 > t_1 > ... > t_steps = 0` and says, for each step i (from
t_i to t_{i+1}), whether it is a deterministic Euler step of the flow ODE or a stochastic step of
the reverse SDE below, and with what noise scale g. The decoder integrates with

    v = f(x, t_i);  x <- scheduler.step(x, v, i, z)        (z: the step's noise, None for ODE steps)

and the encoder's best-of-N search (vov.method.scaling) uses the same `step`, after scoring its
candidate noises with `model_mean`, `ideal_mean` and `std`.

Time grids (`schedule`):
  0  uniform: t_i = 1 - i / steps (float64, rounded to float32), the grid of every plain file;
  1  shifted: t'_i = s t_i / (1 + (s - 1) t_i) on the uniform t_i, with flow shift s > 0 (the
     grid of Wan's flow-matching solvers; s > 1 spends more steps at high noise). s = 1 gives
     schedule 0's numbers exactly.

Noise scales (`NoiseScale.kind`), with a cap `g_cap`:
  0  g(t) = min(sqrt(2 t / (1 - t)), g_cap), the paper's choice (cap 5), g_cap at t = 1;
  1  g(t) = g_cap, constant.

The SDE. Rectified flow: x_t = (1 - t) x0 + t eps, and the model predicts v(x, t) = E[eps - x0 | x_t = x].
The probability-flow ODE dx = v dt carries the marginals p_t. For any g(t) >= 0 the SDE

    dx = [v + (g^2 / 2) grad log p_t] dt + g dW            (t increasing)

has the same marginals: its Fokker-Planck equation adds -div((g^2/2) p grad log p) + (g^2/2) lap p,
which is zero since p grad log p = grad p. Reversing it in time (Anderson 1982) gives the sampler,
run from t = 1 down to 0 with dt < 0:

    dx = [v - (g^2 / 2) s] dt + g dW_bar,    s = grad log p_t.

The score follows from the velocity: p_t is a Gaussian smoothing of the data, so
s(x) = -E[eps | x_t = x] / t, and x = (1 - t) x0 + t eps with v = eps - x0 gives E[eps | x] = x + (1 - t) v:

    s = -(x + (1 - t) v) / t.

Euler-Maruyama from t to t' = t + dt then reads x' = mu + sigma z, z ~ N(0, I), with

    mu = c_x x + c_v v,   c_x = 1 + dt g^2 / (2 t),   c_v = dt (1 + g^2 (1 - t) / (2 t)),   sigma = g sqrt(|dt|).

The model's transition p = N(mu_p, sigma^2 I) uses v = f(x, t). The ideal transition
q = N(mu_q, sigma^2 I) uses the exact velocity toward a known x0 through the current point,
v* = (x - x0) / t (the straight path whose noise is eps* = (x - (1 - t) x0) / t). Their divergence is
KL(p || q) = |mu_p - mu_q|^2 / (2 sigma^2) = |dt| |v - v*|^2 (1 + a g^2)^2 / (2 g^2), a = (1 - t) / (2 t);
for a given velocity error it is smallest at g^2 = 1 / a = 2 t / (1 - t), the paper's uncapped g,
where it equals |dt| |v - v*|^2 (1 - t) / t. With g = 0 the step is the ODE's Euler step.

The last step (to t = 0) is always the ODE step: the SDE's mean needs t > 0 and nothing is gained
by adding noise to the final sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

SCHEDULES = {0: "uniform", 1: "shifted"}
NOISE_SCALES = {0: "min(sqrt(2t/(1-t)), cap)", 1: "constant cap"}
MAX_STEPS = 10000


def timesteps(steps: int, schedule: int = 0, shift: float = 1.0) -> np.ndarray:
    """steps + 1 times from 1 down to 0, as float32."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule}")
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be in 1..{MAX_STEPS}, got {steps}")
    t = np.linspace(1.0, 0.0, steps + 1, dtype=np.float64)
    if schedule == 1:
        if not (math.isfinite(shift) and shift > 0):
            raise ValueError(f"flow shift must be finite and > 0, got {shift}")
        t = shift * t / (1.0 + (shift - 1.0) * t)
    return t.astype(np.float32)


@dataclass(frozen=True)
class NoiseScale:
    """g(t) of the SDE steps: `kind` 0 is min(sqrt(2t / (1 - t)), cap), 1 the constant cap."""

    cap: float = 5.0
    kind: int = 0

    def __post_init__(self):
        if self.kind not in NOISE_SCALES:
            raise ValueError(f"unknown noise scale {self.kind}")
        if not (math.isfinite(self.cap) and self.cap >= 0):
            raise ValueError(f"noise scale cap must be finite and >= 0, got {self.cap}")

    def __call__(self, t: float) -> float:
        if self.kind == 1 or t >= 1.0:
            return float(self.cap)
        return float(min(math.sqrt(2.0 * t / (1.0 - t)), self.cap))


def ode_step(x: torch.Tensor, v: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    """Euler step of dx/dt = v from t to t_next (both float32 grid values)."""
    return x + float(np.float32(t_next) - np.float32(t)) * v


@dataclass(frozen=True)
class SdeCoefficients:
    """One SDE step from t to t_next: mu = c_x x + c_v v, x' = mu + sigma z (module docstring)."""

    t: float
    t_next: float
    g: float

    @property
    def dt(self) -> float:
        return self.t_next - self.t

    @property
    def c_x(self) -> float:
        return 1.0 + self.dt * self.g * self.g / (2.0 * self.t)

    @property
    def c_v(self) -> float:
        return self.dt * (1.0 + self.g * self.g * (1.0 - self.t) / (2.0 * self.t))

    @property
    def sigma(self) -> float:
        return self.g * math.sqrt(abs(self.dt))


def sde_coefficients(t: float, t_next: float, g: float) -> SdeCoefficients:
    if not (0.0 < t <= 1.0 and 0.0 <= t_next < t):
        raise ValueError(f"an SDE step needs 0 <= t_next < t <= 1, got {t} -> {t_next}")
    if not (math.isfinite(g) and g >= 0):
        raise ValueError(f"noise scale must be finite and >= 0, got {g}")
    return SdeCoefficients(float(t), float(t_next), float(g))


def model_mean(x: torch.Tensor, v: torch.Tensor, t: float, t_next: float, g: float) -> torch.Tensor:
    """mu_p: the SDE step's mean with the model's velocity v = f(x, t)."""
    c = sde_coefficients(t, t_next, g)
    return c.c_x * x + c.c_v * v


def ideal_velocity(x: torch.Tensor, x0: torch.Tensor, t: float) -> torch.Tensor:
    """v* = (x - x0) / t: the exact velocity at x of the straight path that ends at x0."""
    return (x - x0) / float(t)


def ideal_mean(x: torch.Tensor, x0: torch.Tensor, t: float, t_next: float, g: float) -> torch.Tensor:
    """mu_q: the SDE step's mean with the exact velocity toward the known x0."""
    c = sde_coefficients(t, t_next, g)
    return c.c_x * x + c.c_v * ideal_velocity(x, x0, t)


def mean_gap(x: torch.Tensor, v: torch.Tensor, x0: torch.Tensor, t: float, t_next: float, g: float) -> torch.Tensor:
    """mu_p - mu_q = c_v (v - v*), computed without the cancellation of subtracting the means."""
    c = sde_coefficients(t, t_next, g)
    return c.c_v * (v - ideal_velocity(x, x0, t))


def sde_step(x: torch.Tensor, v: torch.Tensor, t: float, t_next: float, g: float, z: torch.Tensor) -> torch.Tensor:
    """x' = mu_p + sigma z: the Euler-Maruyama step of the reverse SDE with noise z."""
    c = sde_coefficients(t, t_next, g)
    return (c.c_x * x + c.c_v * v) + c.sigma * z


@dataclass(frozen=True)
class Scheduler:
    """A decode's steps: the grid, and which steps are stochastic with what noise scale.

    Steps start .. start + stochastic - 1 are SDE steps, the others Euler steps of the ODE; the final
    step is always the ODE's, so the window ends before it. stochastic = 0 is the plain ODE decode.
    """

    steps: int
    schedule: int = 0
    shift: float = 1.0
    noise: NoiseScale = NoiseScale()
    stochastic: int = 0
    start: int = 0
    times: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "times", timesteps(self.steps, self.schedule, self.shift))
        if not (0 <= self.stochastic and 0 <= self.start and self.start + self.stochastic <= self.steps - 1):
            raise ValueError(f"the stochastic steps {self.start}..{self.start + self.stochastic - 1} must lie in "
                             f"0..{self.steps - 2} (the last step is deterministic)")

    @property
    def first_stochastic(self) -> int:
        return self.start

    def is_stochastic(self, i: int) -> bool:
        return self.start <= i < self.start + self.stochastic

    def stochastic_steps(self) -> range:
        return range(self.start, self.start + self.stochastic)

    def t(self, i: int) -> float:
        return float(self.times[i])

    def time_tensor(self, i: int, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The model's time input for step i: shape (batch,), float32."""
        return torch.full((batch,), self.t(i), device=device)

    def g(self, i: int) -> float:
        """The noise scale of step i; 0 for ODE steps."""
        return self.noise(self.t(i)) if self.is_stochastic(i) else 0.0

    def std(self, i: int) -> float:
        return sde_coefficients(self.t(i), self.t(i + 1), self.g(i)).sigma if self.is_stochastic(i) else 0.0

    def model_mean(self, x: torch.Tensor, v: torch.Tensor, i: int) -> torch.Tensor:
        return model_mean(x, v, self.t(i), self.t(i + 1), self.g(i))

    def ideal_mean(self, x: torch.Tensor, x0: torch.Tensor, i: int) -> torch.Tensor:
        return ideal_mean(x, x0, self.t(i), self.t(i + 1), self.g(i))

    def mean_gap(self, x: torch.Tensor, v: torch.Tensor, x0: torch.Tensor, i: int) -> torch.Tensor:
        return mean_gap(x, v, x0, self.t(i), self.t(i + 1), self.g(i))

    def step(self, x: torch.Tensor, v: torch.Tensor, i: int, z: torch.Tensor | None = None) -> torch.Tensor:
        """Step i from t_i to t_{i+1}: the ODE's Euler step, or the SDE step with noise z."""
        if not 0 <= i < self.steps:
            raise IndexError(f"step {i} outside 0..{self.steps - 1}")
        if not self.is_stochastic(i):
            if z is not None:
                raise ValueError(f"step {i} is deterministic and takes no noise")
            return ode_step(x, v, self.times[i], self.times[i + 1])
        if z is None:
            raise ValueError(f"step {i} is stochastic and needs its noise")
        return sde_step(x, v, self.t(i), self.t(i + 1), self.g(i), z)
