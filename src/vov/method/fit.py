"""Fitting: find the adapter vector theta that makes the frozen model reproduce one latent.

Loss: `E_{t, eps} || f_theta_hat(x_t, t) - (eps - x_0) ||^2 + lambda * bpp(theta_hat)`, in two stages:

1. no rate term, theta used as is (AdamW);
2. theta quantised, `theta_hat = s * round(theta / s)` with straight-through rounding.
   - With a rate weight lambda (`--lambda`): s is learned (softplus) and the rate is the bits of
     `theta / s + u` (u uniform) under the learned prior, divided by the pixel count; lambda ramps in
     over the first `ramp` steps of the stage.
   - With a budget (`target_bits`, from `--bpp`): s is chosen at the start of the stage so that the
     vector's coded size meets the budget (`step_for_budget`: a search on the step, whose bits fall as it grows),
     then theta trains at that fixed step without a rate term, and the search runs once more on the
     final vector. The file lands at the target or just under it, whatever the image. (A rate term
     steered online toward the target, tried first, both missed the target by a third and cost
     several dB: it shrank theta, while quantising the unconstrained theta costs ~0.5 dB.)

The coded integers get their own prior at the end (`entropy.fit_prior`), whichever mode.

The noise: decoding starts from one known noise eps_0 (the file's seed, vov.method.noise), so the encoder
can fit along the very path the decoder's ODE takes, x_t = (1 - t) x_0 + t eps_0, whose velocity is the
constant eps_0 - x_0. `path_share` is the share of steps that use eps_0; the others draw fresh noise,
as in the paper, which teaches the adapter to reach x_0 from any noise (what stochastic samplers and
best-of-N search need). On the embedded backbone, fitting along the decoder's path reaches in 100
steps what fresh noise reaches in 1000 (MODEL_CARD.md).

Checkpoints are written every `checkpoint_every` steps when a path is given (safetensors with a JSON
header, never a pickle: `vov.checkpoints`), and a fit restarted with the same checkpoint path and
inputs resumes where it stopped; a checkpoint of other inputs, or a file that is not a checkpoint, is
refused. Long loops call `vov.cancel.checkpoint()`, so a cancelled call stops within a step.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from vov import checkpoints
from vov.backbones.defaults import FitDefaults
from vov.cancel import checkpoint as cancel_point
from vov.errors import UsageError
from vov.format import entropy
from vov.method import parallel
from vov.method.adapters import ADAPTER_NAME, AdaptedDenoiser


def _tuned_fields(defaults: FitDefaults) -> dict:
    """A backbone's fitting defaults by FitConfig's names: the one mapping between the two."""
    return dict(steps=defaults.steps, rate_fraction=defaults.stage2_steps / defaults.steps,
                lr_stage1=defaults.lr_stage1, lr_stage2=defaults.lr_stage2, init_bound=defaults.init_bound,
                ramp=defaults.lambda_ramp, weight_decay=defaults.weight_decay,
                gradient_checkpointing=defaults.gradient_checkpointing)


_TUNED = _tuned_fields(FitDefaults())  # what a fit given no backbone's defaults uses


@dataclass(frozen=True)
class FitConfig:
    """One fit's settings. The ones a backbone is tuned with default to vov.backbones.defaults.FitDefaults;
    `for_backbone` takes them from a backbone instead."""

    steps: int = _TUNED["steps"]
    rate_fraction: float = _TUNED["rate_fraction"]  # share of the steps spent in stage 2
    lr_stage1: float = _TUNED["lr_stage1"]
    lr_stage2: float = _TUNED["lr_stage2"]
    lr_entropy: float = 1e-2
    ramp: int = _TUNED["ramp"]  # steps over which lambda ramps in, at the start of stage 2
    lr_floor: float = 0.05  # theta's lr falls along a cosine to this share by the last step (see theta_lr)
    lam: float = 0.02  # rate weight, per bit per pixel; ignored when target_bits is set
    target_bits: float | None = None  # budget of the coded vector (ideal bits of the payload)
    init_bound: float = _TUNED["init_bound"]
    reference_uses: float = 4.0  # LoRA entries per coordinate of theta the rates were tuned at (size_factor)
    seed: int = 0
    components: int = 3
    path_share: float = 1.0  # share of steps whose noise is the decoder's starting noise (needs decode_noise)
    weight_decay: float = _TUNED["weight_decay"]  # AdamW's on theta
    # recompute activations in the backward pass: less memory, more time
    gradient_checkpointing: bool = _TUNED["gradient_checkpointing"]
    draws: int = 1  # noise draws per step, back-propagated one at a time (gradient accumulation: one draw's memory)

    @classmethod
    def for_backbone(cls, defaults: FitDefaults, **given) -> "FitConfig":
        """The fit a backbone was tuned (or published) with (`Backbone.fit_defaults`), then `given`."""
        return cls(**{**_tuned_fields(defaults), **given})

    @property
    def stage1_steps(self) -> int:
        return self.steps - self.stage2_steps

    @property
    def stage2_steps(self) -> int:
        return max(1, round(self.steps * self.rate_fraction))


@dataclass
class Progress:
    step: int
    total: int
    stage: int
    loss: float
    distortion: float
    est_bits: float  # model estimate of the coded vector's size, 0 in stage 1
    lam: float
    clip: int = 1  # which clip of how many (set by the codec for videos)
    clips: int = 1


@dataclass
class FitResult:
    q: np.ndarray  # integers round(theta / s)
    step_size: float  # s, float32-exact
    prior: entropy.PriorParams
    est_bits: float  # continuous prior's estimate for q, before its parameters were quantised
    history: list[Progress] = field(default_factory=list)

    @property
    def theta_hat(self) -> torch.Tensor:
        return torch.from_numpy(self.q.astype(np.float32)) * torch.tensor(self.step_size, dtype=torch.float32)


def coded_bits(q: np.ndarray, components: int) -> tuple[float, entropy.PriorParams]:
    """(ideal bits of q under its fitted, quantised prior, that prior)."""
    qmax = int(np.abs(q).max()) if len(q) else 0
    prior = entropy.fit_prior(q, components)
    return prior.ideal_bits(q, qmax), prior


def step_for_budget(theta: np.ndarray, budget_bits: float, components: int = 3) -> float:
    """The smallest quantiser step (to 1%) at which round(theta / s) codes in at most `budget_bits`.

    Bisection on log s with the empirical entropy (fast), then the real prior checked and the step
    raised until the coded size fits.
    """
    theta = np.asarray(theta, dtype=np.float64)
    peak = float(np.abs(theta).max()) or 1.0
    lo, hi = peak / 30000.0, 4.0 * peak  # q stays within the format's range; at hi every q is 0
    for _ in range(40):
        cancel_point()
        mid = math.sqrt(lo * hi)
        if entropy.empirical_bits(np.round(theta / mid)) > budget_bits:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.01:
            break
    step = hi
    for _ in range(200):
        cancel_point()
        bits, _ = coded_bits(np.round(theta / step).astype(np.int64), components)
        if bits <= budget_bits:
            break
        step *= 1.02
    return float(np.float32(step))


def size_factor(config: FitConfig, d: int, entries: int) -> float:
    """Scale of theta's initial spread and learning rate for d numbers feeding `entries` LoRA entries.

    Each coordinate of theta feeds `uses = entries / d` LoRA entries, each reading it divided by
    sqrt(uses). Adam moves every coordinate by about lr per step, hence every entry by about
    `lr / sqrt(uses)`: the less sharing, the faster the entries move. The default rates were tuned
    with about `reference_uses` entries per coordinate (d = 16384 of 73728 on the first embedded backbone);
    with less sharing the init and the rate shrink by `sqrt(uses / reference_uses)`, which keeps the
    entries' steps where they were tuned. At a common rate, plain LoRA (uses = 1) and d = 32768
    stalled or diverged on that backbone (MODEL_CARD.md, quality vs fitting steps).
    """
    return min(1.0, math.sqrt(entries / d / config.reference_uses))


def initial_theta(config: FitConfig, d: int, entries: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform in +-init_bound, scaled by `size_factor`: the first draws of the fit's generator."""
    return (torch.rand(d, generator=generator) * 2 - 1) * config.init_bound * size_factor(config, d, entries)


def theta_lr(config: FitConfig, step: int, size: float = 1.0) -> float:
    """theta's learning rate at `step`: the stage's rate times a cosine from 1 down to `lr_floor`,
    times `size` (the adapter's `size_factor`).

    On the embedded backbone at 0.05 bpp and 600 steps, decaying to 5% instead of a constant rate
    gave +0.3 dB on one held-out photo and +3.5 dB on another, whose constant-rate fit oscillated.
    """
    base = config.lr_stage1 if step < config.stage1_steps else config.lr_stage2
    decay = 0.5 * (1 + math.cos(math.pi * step / max(1, config.steps - 1)))
    return base * size * (config.lr_floor + (1 - config.lr_floor) * decay)


class Quantiser(nn.Module):
    """theta -> s * round(theta / s) with a straight-through gradient; off during stage 1."""

    def __init__(self, step: float = 1e-3):
        super().__init__()
        self.raw_step = nn.Parameter(torch.tensor(math.log(math.expm1(step))))
        self.enabled = False

    @property
    def step(self) -> torch.Tensor:
        return F.softplus(self.raw_step)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return theta
        s = self.step
        scaled = theta / s
        return (scaled + (torch.round(scaled) - scaled).detach()) * s


def _problem_key(latents: torch.Tensor, adapter: AdaptedDenoiser, config: FitConfig,
                 decode_noise: torch.Tensor | None) -> str:
    digest = hashlib.sha256(latents.detach().float().numpy().tobytes())
    if decode_noise is not None:
        digest.update(decode_noise.detach().float().numpy().tobytes())
    digest.update(repr((asdict(adapter.spec), adapter.d, asdict(config))).encode())
    return digest.hexdigest()


CHECKPOINT_KIND = "fit checkpoint"


def fit(adapter: AdaptedDenoiser, latents: torch.Tensor, pixels: int, config: FitConfig = FitConfig(),
        on_progress: Callable[[Progress], None] | None = None, checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 50, condition: torch.Tensor | None = None,
        channel_weights: torch.Tensor | None = None, decode_noise: torch.Tensor | None = None,
        initial: torch.Tensor | None = None) -> FitResult:
    """Fit `adapter` to `latents` (1, C, F, h, w). `pixels` is the media's pixel count (for bpp).

    `channel_weights` (C,) weight the squared error of each latent channel (the backbone's
    `distortion_weights()`, so that the loss tracks pixel error); equal weights by default.
    `decode_noise` is the decoder's starting noise (shaped like `latents`); without it every step
    draws fresh noise. `initial` starts theta from a given vector (the previous clip's) instead of
    the seeded uniform draw. Tensors live on the adapter's device; the fit's noise is drawn on the
    CPU from its seeded generator and moved there, so a fit repeats on any device.

    Each step averages `config.draws` noise draws, back-propagated one at a time. In a torchrun
    process group (vov.method.parallel) every rank draws its own noise and the gradients are
    averaged before the step; rank 0 alone writes the checkpoint.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    size = size_factor(config, adapter.d, adapter.lora_entries)
    start_theta = initial_theta(config, adapter.d, adapter.lora_entries, generator)  # drawn either way: same stream
    adapter.set_theta((start_theta if initial is None else initial.float().cpu()).to(adapter.device))
    theta = adapter.raw_theta()
    theta.requires_grad_(True)

    quantiser = Quantiser()
    prior = entropy.LogisticMixture(config.components)
    parametrize.register_parametrization(adapter.theta_slot, ADAPTER_NAME, quantiser, unsafe=True)
    theta = adapter.raw_theta()
    targeted = config.target_bits is not None
    optimiser = torch.optim.AdamW([{"params": [theta], "lr": config.lr_stage1, "weight_decay": config.weight_decay},
                                   {"params": [quantiser.raw_step], "lr": 0.0 if targeted else config.lr_entropy,
                                    "weight_decay": 0.0},
                                   {"params": list(prior.parameters()), "lr": config.lr_entropy, "weight_decay": 0.0}])
    lam = 0.0 if targeted else config.lam
    budget = float(config.target_bits) if targeted else 0.0
    start = 0
    history: list[Progress] = []
    key = _problem_key(latents, adapter, config, decode_noise)

    def state_tensors() -> dict[str, torch.Tensor]:
        return {"theta": theta.detach(), "quantiser.raw_step": quantiser.raw_step.detach(),
                **{f"prior.{k}": v.detach() for k, v in prior.state_dict().items()},
                "generator": generator.get_state(), **checkpoints.optimiser_tensors(optimiser)}

    rank, _ = parallel.world()
    if checkpoint and os.path.exists(checkpoint):
        saved, meta = checkpoints.load(checkpoint, CHECKPOINT_KIND, {**state_tensors(), **checkpoints.adam_shapes(optimiser)},
                                       optional_prefixes=("optimiser.",))
        if meta.get("key") != key:
            raise UsageError(f"{checkpoint} holds the checkpoint of another compress (other input or options); "
                             f"delete it to start afresh, or choose another output")
        try:
            start, lam = int(meta["step"]), float(meta["lam"])
            history = [Progress(**entry) for entry in meta["history"]]
            with torch.no_grad():
                theta.copy_(saved["theta"])
                quantiser.raw_step.copy_(saved["quantiser.raw_step"])
            prior.load_state_dict({k[len("prior."):]: v for k, v in saved.items() if k.startswith("prior.")})
            generator.set_state(saved["generator"])
            checkpoints.restore_optimiser(optimiser, saved)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise UsageError(f"{checkpoint} is not a usable fit checkpoint ({e}); delete it to start afresh") from None
        if not (0 <= start <= config.steps and math.isfinite(lam)):
            raise UsageError(f"{checkpoint} is not a usable fit checkpoint; delete it to start afresh")
    parallel.agree(start, "the step the fit resumes at")

    def save(step: int) -> None:
        checkpoints.save(checkpoint, CHECKPOINT_KIND, state_tensors(),
                         {"key": key, "step": step, "lam": lam, "history": [asdict(p) for p in history]})

    device = adapter.device
    x0 = latents.detach().float().to(device)
    if decode_noise is not None:
        decode_noise = decode_noise.to(device)
    weights = torch.ones(x0.shape[1]) if channel_weights is None else channel_weights.float()
    weights = weights.to(device)
    weights = weights.view(1, -1, 1, 1, 1)
    adapter.train()
    if config.gradient_checkpointing:
        adapter.set_gradient_checkpointing(True)
    for step in range(start, config.steps):
        cancel_point()
        stage = 1 if step < config.stage1_steps else 2
        if stage == 2 and not quantiser.enabled:
            quantiser.enabled = True
        if stage == 2 and step == config.stage1_steps:
            with torch.no_grad():
                if targeted:  # the step that meets the budget now; theta then trains at that step
                    start_step = step_for_budget(theta.detach().float().cpu().numpy(), budget, config.components)
                else:  # start the learned step where theta's spread is a few steps wide
                    start_step = float(theta.detach().std()) / 4 + 1e-8
                quantiser.raw_step.copy_(torch.log(torch.expm1(torch.tensor(start_step))))
        optimiser.param_groups[0]["lr"] = theta_lr(config, step, size)
        noise = generator if rank == 0 else parallel.draw_generator(config.seed, rank, step)
        optimiser.zero_grad(set_to_none=True)
        distortion_sum = 0.0
        for k in range(config.draws):
            t = torch.rand(1, generator=noise).to(device)
            eps = torch.randn(x0.shape, generator=noise).to(device)
            if decode_noise is not None and torch.rand(1, generator=noise).item() < config.path_share:
                eps = decode_noise
            tt = t.view(1, 1, 1, 1, 1)
            noisy = (1 - tt) * x0 + tt * eps
            with adapter.autocast():
                pred = adapter(noisy, t, condition)
            distortion = ((pred.float() - (eps - x0)).pow(2) * weights).mean() / config.draws
            loss = distortion
            est_bits = torch.zeros(())
            if stage == 2 and k == config.draws - 1:  # the rate term once a step, with the last draw
                scaled = theta / quantiser.step
                noisy_q = scaled + torch.rand(scaled.shape, generator=noise).to(device) - 0.5
                if targeted:  # the prior follows theta (for the estimate shown); theta ignores the rate
                    est_bits = prior.bits(noisy_q.detach())
                    loss = distortion + est_bits / theta.numel()
                else:
                    est_bits = prior.bits(noisy_q)
                    ramp = min(1.0, (step - config.stage1_steps + 1) / max(1, config.ramp))
                    loss = distortion + ramp * lam * est_bits / pixels
            loss.backward()
            distortion_sum += distortion.item()
        parallel.average_gradients([theta, quantiser.raw_step, *prior.parameters()])
        optimiser.step()
        rate_loss = loss.item() - distortion.item()
        progress = Progress(step + 1, config.steps, stage, distortion_sum + rate_loss, distortion_sum, est_bits.item(),
                            lam)
        history.append(progress)
        if on_progress:
            on_progress(progress)
        if checkpoint and rank == 0 and ((step + 1) % checkpoint_every == 0):
            save(step + 1)
    adapter.eval()
    if config.gradient_checkpointing:
        adapter.set_gradient_checkpointing(False)

    with torch.no_grad():
        final = theta.detach().float().cpu()
        step_size = step_for_budget(final.numpy(), budget, config.components) if targeted else float(
            np.float32(quantiser.step.item()))
        q = torch.round(final / torch.tensor(step_size, dtype=torch.float32)).to(torch.int64).numpy()
        params = entropy.fit_prior(q, config.components)
        est = params.ideal_bits(q, int(np.abs(q).max()) if q.size else 0)
    parametrize.remove_parametrizations(adapter.theta_slot, ADAPTER_NAME, leave_parametrized=False)
    result = FitResult(q=q, step_size=step_size, prior=params, est_bits=est, history=history)
    adapter.set_theta(result.theta_hat.to(device))
    if checkpoint and rank == 0 and os.path.exists(checkpoint):
        os.remove(checkpoint)
    return result
