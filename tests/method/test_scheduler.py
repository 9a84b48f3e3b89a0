import math

import numpy as np
import pytest
import torch

from vov.method import noise, sampler
from vov.method.scheduler import (NoiseScale, Scheduler, ideal_mean, mean_gap, model_mean, ode_step, sde_coefficients,
                                  sde_step, timesteps)


def test_uniform_grid_is_format_1_0s():
    for steps in (1, 4, 50, 1000):
        expected = np.linspace(1.0, 0.0, steps + 1, dtype=np.float64).astype(np.float32)
        np.testing.assert_array_equal(timesteps(steps), expected)
        np.testing.assert_array_equal(timesteps(steps, 1, 1.0), expected)  # shift 1 is the uniform grid


def test_shifted_grid():
    t = timesteps(10, 1, 3.0)
    u = np.linspace(1.0, 0.0, 11)
    np.testing.assert_allclose(t, 3 * u / (1 + 2 * u), rtol=1e-6)
    assert t[0] == 1 and t[-1] == 0 and np.all(np.diff(t) < 0)
    assert t[5] > 0.5  # more steps at high noise
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError):
            timesteps(10, 1, bad)
    with pytest.raises(ValueError):
        timesteps(10, 7)
    with pytest.raises(ValueError):
        timesteps(0)


def test_noise_scale():
    paper = NoiseScale(5.0)
    assert paper(1.0) == 5.0
    assert paper(0.5) == pytest.approx(math.sqrt(2))
    assert paper(0.99) == 5.0
    assert NoiseScale(1.0)(0.5) == 1.0 and NoiseScale(1.0)(0.1) == pytest.approx(math.sqrt(0.2 / 0.9))
    assert NoiseScale(0.7, kind=1)(0.01) == 0.7
    with pytest.raises(ValueError):
        NoiseScale(-1.0)
    with pytest.raises(ValueError):
        NoiseScale(1.0, kind=9)


def test_sde_coefficients_at_the_papers_g():
    """At g^2 = 2t/(1-t) the velocity's coefficient is 2 dt and KL(p||q) = |dt| |v - v*|^2 (1-t)/t."""
    t, t_next = 0.6, 0.55
    g = math.sqrt(2 * t / (1 - t))
    c = sde_coefficients(t, t_next, g)
    assert c.c_v == pytest.approx(2 * (t_next - t))
    gen = torch.Generator().manual_seed(0)
    x, v, x0 = (torch.randn(1000, generator=gen, dtype=torch.float64) for _ in range(3))
    gap = mean_gap(x, v, x0, t, t_next, g)
    torch.testing.assert_close(gap, model_mean(x, v, t, t_next, g) - ideal_mean(x, x0, t, t_next, g))
    kl = float(gap.pow(2).sum()) / (2 * c.sigma**2)
    dv = v - (x - x0) / t
    assert kl == pytest.approx(abs(t_next - t) * float(dv.pow(2).sum()) * (1 - t) / t)
    # ... and any other g diverges more for the same velocity error
    for other in (0.5 * g, 2 * g):
        o = sde_coefficients(t, t_next, other)
        assert float(mean_gap(x, v, x0, t, t_next, other).pow(2).sum()) / (2 * o.sigma**2) > kl


def test_sde_step_is_the_reverse_sde():
    """x' = x + dt (v - g^2/2 s) + g sqrt(|dt|) z with the score s = -(x + (1 - t) v) / t."""
    gen = torch.Generator().manual_seed(1)
    x, v, z = (torch.randn(500, generator=gen, dtype=torch.float64) for _ in range(3))
    t, t_next, g = 0.8, 0.7, 1.3
    score = -(x + (1 - t) * v) / t
    expected = x + (t_next - t) * (v - g * g / 2 * score) + g * math.sqrt(t - t_next) * z
    torch.testing.assert_close(sde_step(x, v, t, t_next, g, z), expected)
    # g = 0: the Euler step of the ODE
    torch.testing.assert_close(sde_step(x, v, t, t_next, 0.0, z), x + (t_next - t) * v)
    with pytest.raises(ValueError):
        sde_step(x, v, 0.5, 0.6, g, z)


def gaussian_velocity(m: float, s: float):
    """The exact flow velocity E[eps - x0 | x_t = x] when x0 ~ N(m, s^2)."""

    def velocity(x, t):
        var = (1 - t) ** 2 * s * s + t * t
        centred = x - (1 - t) * m
        e_eps = t / var * centred
        e_x0 = m + (1 - t) * s * s / var * centred
        return e_eps - e_x0

    return velocity


def test_sde_keeps_the_flows_marginals():
    """With the exact velocity the SDE sampler lands on the data distribution, at any cap."""
    m, s = 1.5, 0.4
    velocity = gaussian_velocity(m, s)
    gen = torch.Generator().manual_seed(2)
    for cap in (1.0, 5.0):
        sched = Scheduler(200, noise=NoiseScale(cap), stochastic=199)
        x = torch.randn(40000, generator=gen, dtype=torch.float64)
        for i in range(sched.steps):
            v = velocity(x, sched.t(i))
            z = torch.randn(x.shape, generator=gen, dtype=torch.float64) if sched.is_stochastic(i) else None
            x = sched.step(x, v, i, z)
        assert float(x.mean()) == pytest.approx(m, abs=0.02)
        assert float(x.std()) == pytest.approx(s, rel=0.05)


def test_ideal_transition_follows_the_path_to_x0():
    """q's steps keep x_t ~ N((1 - t) x0, t^2): the conditional path of the known x0."""
    x0 = 0.7
    gen = torch.Generator().manual_seed(3)
    sched = Scheduler(100, noise=NoiseScale(5.0), stochastic=99)
    x = torch.randn(40000, generator=gen, dtype=torch.float64)
    target = torch.full_like(x, x0)
    for i in range(60):
        z = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        x = sched.ideal_mean(x, target, i) + sched.std(i) * z
    t = sched.t(60)
    assert float(x.mean()) == pytest.approx((1 - t) * x0, abs=0.02)
    assert float(x.std()) == pytest.approx(t, rel=0.03)


def test_scheduler_window_and_last_step():
    sched = Scheduler(10, noise=NoiseScale(1.0), stochastic=4, start=5)
    assert [sched.is_stochastic(i) for i in range(10)] == [False] * 5 + [True] * 4 + [False]
    assert list(sched.stochastic_steps()) == [5, 6, 7, 8]
    assert sched.g(0) == 0.0 and sched.g(5) == pytest.approx(min(1.0, math.sqrt(2 * 0.5 / 0.5)))
    leading = Scheduler(10, stochastic=3)
    assert list(leading.stochastic_steps()) == [0, 1, 2] and leading.g(0) == 5.0
    full = Scheduler(10, stochastic=9)
    assert not full.is_stochastic(9) and full.is_stochastic(0)
    x, v = torch.randn(8), torch.randn(8)
    # the final step is the ODE's, whatever the configuration, and takes no noise
    torch.testing.assert_close(full.step(x, v, 9), x - full.t(9) * v)
    with pytest.raises(ValueError):
        full.step(x, v, 9, torch.zeros(8))
    with pytest.raises(ValueError):
        full.step(x, v, 3)
    for bad in (dict(stochastic=10), dict(stochastic=4, start=6), dict(stochastic=1, start=-1)):
        with pytest.raises(ValueError):
            Scheduler(10, **bad)
    with pytest.raises(IndexError):
        full.step(x, v, 10)


def test_sample_is_the_euler_loop(tiny_backbone):
    """The refactored sampler computes exactly what format 1.0 specifies."""
    velocity = sampler.torch_velocity(tiny_backbone.denoiser)
    shape = (1, *tiny_backbone.latent_shape(1, 32, 48))
    x = noise.normal_tensor(shape, 4, noise.INITIAL)
    ts = np.linspace(1.0, 0.0, 7, dtype=np.float64).astype(np.float32)
    for i in range(6):
        x = x + float(ts[i + 1] - ts[i]) * velocity(x, torch.full((1,), float(ts[i]))).float()
    assert torch.equal(sampler.sample(velocity, shape, 4, 6), x)
    assert torch.equal(ode_step(x, x, ts[1], ts[2]), x + float(ts[2] - ts[1]) * x)
