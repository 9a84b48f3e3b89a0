"""What a compress is asked to do: one home for every option and its default.

The CLI (`vov compress`), the encoder service (`CompressOptions` in proto/vov/v1/codec.proto) and
the benchmark build an `EncodeOptions` and read their defaults from here; `validate()` refuses
values out of range before any work. Backbone-specific defaults (rank, d, targets, learning rates)
belong to the backbone (`Backbone.adapter_defaults`, `fit_defaults`); what is here applies to every
backbone.

A compress's rate is a `Rate`: the default, a target in bits per pixel, or a rate weight; the plan
(`vov.plan.plan`) resolves it once. `to_wire` and `from_wire` are the one translation each way
between `EncodeOptions` and the wire's `CompressOptions`: the service client sends with the one,
the encoder service reads with the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from vov.backbones import DEFAULT_BACKBONE
from vov.backbones.base import MAX_CAPTION_BYTES
from vov.errors import UsageError
from vov.method.adapters import AdapterSpec
from vov.method.fit import FitConfig
from vov.method.scaling import MAX_SEARCH_STEPS, SEARCH_CANDIDATES, ScalingConfig, choose_search

DEFAULT_BPP = 0.05
MAX_FIT_STEPS = 100_000
MAX_DRAWS = 64  # noise draws per fitting step
MAX_SEED = (1 << 32) - 1  # the format's seed fields hold 32 bits


RATE_KINDS = ("default", "bpp", "lambda")


@dataclass(frozen=True)
class Rate:
    """How a compress sets its rate: the default (DEFAULT_BPP, or the smallest rate that works for
    media too small for it), a target in bits per pixel of the whole file, or a rate weight lambda
    (per bpp). `vov.plan.plan` resolves it, once per compress."""

    kind: str = "default"
    value: float | None = None

    @classmethod
    def of(cls, bpp: float | None = None, lam: float | None = None) -> "Rate":
        """The rate of the two flags --bpp and --lambda (neither: the default)."""
        if bpp is not None and lam is not None:
            raise UsageError("give a rate target (--bpp) or a rate weight (--lambda), not both")
        return cls("bpp", bpp) if bpp is not None else cls("lambda", lam) if lam is not None else cls()

    def validate(self) -> None:
        if self.kind not in RATE_KINDS:
            raise UsageError(f"a rate is one of {', '.join(RATE_KINDS)}, not {self.kind!r}")
        if self.kind != "default" and not (self.value is not None and math.isfinite(self.value) and self.value > 0):
            name = "the rate target" if self.kind == "bpp" else "lambda"
            raise UsageError(f"{name} must be a positive finite number, not {self.value}")


FLAGS = {"candidates": "--best-of", "tile": "--best-of-tile", "steps": "--scaling-steps"}  # ScalingConfig's names


@dataclass(frozen=True)
class ScalingOptions:
    """Best-of-N: K scaled sampler steps, N candidate noises each, one choice per tile of T x T latent
    cells (T = 0: one for the whole latent); the chosen indices go in the file.

    N, K and T left None are chosen by the plan for the image and the rate
    (`vov.method.scaling.choose_search`: N = 4, tiles of 8 cells, as many steps as half the file's
    bits pay for); `resolved` fills them in. `steps` (K) becomes the file's sampler grid;
    `stochastic` of its steps from `start` are SDE steps searched over N noises (None: every step
    but the last, which stays deterministic). `g_cap` bounds the SDE's noise scale
    g(t) = min(sqrt(2t/(1-t)), g_cap); `selection` is how a candidate is kept ("outcome": the
    candidate whose one-step prediction of the final latents lands nearest the original, in
    pixel-weighted distance). A searched file's fit spends `fit_path_share` of its steps on the
    decoder's own starting noise and the rest on fresh noise, so the adaptation also holds off the
    ODE's path. The cap, the rule and the share were chosen on held-out photos
    (bench/scaling_eval.py; the paper's cap of 5 and a fit on the decoder's path alone did worse;
    MODEL_CARD.md), the choice of N, K and T by bench/scaling_table.py (docs/best-of-n.md).
    """

    candidates: int | None = None
    steps: int | None = None
    stochastic: int | None = ScalingConfig.stochastic
    start: int = ScalingConfig.start
    g_cap: float = ScalingConfig.g_cap
    g_kind: int = ScalingConfig.g_kind
    selection: str = ScalingConfig.selection
    tile: int | None = None
    fit_path_share: float = 0.5

    @property
    def is_resolved(self) -> bool:
        return None not in (self.candidates, self.steps, self.tile)

    def resolved(self, shape: tuple[int, ...], file_bits: float) -> "ScalingOptions":
        """These options with N, K and T chosen where None, for latents of `shape` in a file (or a
        clip) of `file_bits` bits."""
        n, k, t = choose_search(shape, file_bits, self.candidates, self.steps, self.tile)
        return replace(self, candidates=n, steps=k, tile=t)

    def validate(self) -> None:
        """Refuse options out of range with one line naming the flag: the search's own checks
        (`ScalingConfig`, on the values given), then the bounds only a request has (at least two
        steps, a cap on g, the fit's share)."""
        given = replace(self, candidates=self.candidates or SEARCH_CANDIDATES, steps=self.steps or MAX_SEARCH_STEPS,
                        tile=self.tile or 0)
        try:
            given.config()
        except ValueError as e:
            flag = next((f for field, f in FLAGS.items() if str(e).startswith(field)), "best-of-N")
            raise UsageError(f"{flag}: {e}") from None
        if self.steps is not None and self.steps < 2:
            raise UsageError(f"--scaling-steps: a scaled decode takes 2 steps or more, not {self.steps}")
        if self.g_cap > 1000:
            raise UsageError(f"the noise-scale cap must be in (0, 1000], not {self.g_cap}")
        if not 0.0 <= self.fit_path_share <= 1.0:
            raise UsageError(f"the fit's share of decoder-path noise must be in [0, 1], not {self.fit_path_share}")

    def config(self, schedule: int = 0, shift: float = 1.0):
        """The method's `ScalingConfig` for these (resolved) options on a backbone's schedule (id and flow shift)."""
        if not self.is_resolved:
            raise ValueError("best-of-N options with N, K or T still open: resolve them for the image first")
        return ScalingConfig(steps=self.steps, candidates=self.candidates, g_cap=self.g_cap, g_kind=self.g_kind,
                             stochastic=self.stochastic, start=self.start, selection=self.selection,
                             schedule=schedule, shift=shift, tile=self.tile)


@dataclass(frozen=True)
class EncodeOptions:
    """Everything a compress needs besides the media.

    What is left None (the adapter's rank and d, the fit, its steps) takes the backbone's defaults
    (`Backbone.adapter_defaults`, `fit_defaults`): the embedded backbone's tuned settings, the
    paper's for Wan and Qwen-Image.
    """

    backbone: str = DEFAULT_BACKBONE
    model: str | None = None  # the backbone's weights: a folder or hub id (None: its default)
    device: str | None = None  # cpu, cuda, cuda:N (None: the backbone's default)
    adapter: AdapterSpec = AdapterSpec()
    fit: FitConfig | None = None  # a whole fit configuration (None: the backbone's, with `steps` and `lam`)
    steps: int | None = None  # fitting steps per clip (None: the fit's)
    draws: int | None = None  # noise draws per fitting step (None: the fit's, 1)
    lam: float | None = None  # rate weight when `target_bpp` is None (None: the fit's)
    target_bpp: float | None = DEFAULT_BPP  # bits per pixel of the whole file; None: the rate weight sets the rate
    sampler_steps: int = 50
    noise_seed: int = 0
    auto_d: bool = True  # with a bpp target and a one-vector adapter, pick d from the target
    caption: str = ""  # the condition the adaptation is fitted (and decoded) with; "" is the null caption
    scaling: ScalingOptions | None = None  # best-of-N search; None: a plain ODE decode
    warm_start: bool = False  # a clip's fit starts from the previous clip's vector

    def validate(self) -> None:
        """Refuse out-of-range options before any work (UsageError with one line)."""
        if self.target_bpp is not None and not (math.isfinite(self.target_bpp) and self.target_bpp > 0):
            raise UsageError(f"the rate target must be a positive number of bits per pixel, not {self.target_bpp}")
        lam = self.lam if self.lam is not None else (self.fit or FitConfig()).lam
        if self.target_bpp is None and not (math.isfinite(lam) and lam > 0):
            raise UsageError(f"lambda must be a positive finite number, not {lam}")
        steps = self.steps if self.steps is not None else (self.fit.steps if self.fit else 1)
        if not 1 <= steps <= MAX_FIT_STEPS:
            raise UsageError(f"fitting steps must be between 1 and {MAX_FIT_STEPS}, not {steps}")
        draws = self.draws if self.draws is not None else (self.fit.draws if self.fit else 1)
        if not 1 <= draws <= MAX_DRAWS:
            raise UsageError(f"noise draws per fitting step must be between 1 and {MAX_DRAWS}, not {draws}")
        if not 1 <= self.sampler_steps <= 10000:
            raise UsageError(f"sampler steps must be between 1 and 10000, not {self.sampler_steps}")
        fit_seed = self.fit.seed if self.fit else self.noise_seed
        for name, seed in (("seed", self.noise_seed), ("adapter seed", self.adapter.seed), ("fit seed", fit_seed)):
            if not 0 <= seed <= MAX_SEED:
                raise UsageError(f"the {name} must be between 0 and {MAX_SEED}, not {seed}")
        if len(self.caption.encode("utf-8")) > MAX_CAPTION_BYTES:
            raise UsageError(f"the caption is longer than {MAX_CAPTION_BYTES} bytes")
        self.adapter.validate()
        if self.scaling is not None:
            self.scaling.validate()

    def fit_config(self, backbone) -> FitConfig:
        """The fit this compress runs on `backbone`: `fit`, or the backbone's defaults; then `steps` and `lam`."""
        config = self.fit or FitConfig.for_backbone(backbone.fit_defaults, seed=self.noise_seed)
        given = {k: v for k, v in (("steps", self.steps), ("lam", self.lam), ("draws", self.draws)) if v is not None}
        if self.scaling is not None and self.fit is None:
            given["path_share"] = self.scaling.fit_path_share
        return replace(config, **given) if given else config

    @property
    def rate(self) -> Rate:
        """The rate these options code at: the target, or the rate weight (the fit's when none is given)."""
        if self.target_bpp is not None:
            return Rate("bpp", self.target_bpp)
        return Rate("lambda", self.lam if self.lam is not None else (self.fit or FitConfig()).lam)

    def with_rate(self, rate: Rate, default_bpp: float = DEFAULT_BPP) -> "EncodeOptions":
        """These options at `rate`; the default rate is `default_bpp` (vov.plan chooses it for the media)."""
        if rate.kind == "lambda":
            return replace(self, target_bpp=None, lam=rate.value)
        return replace(self, target_bpp=rate.value if rate.kind == "bpp" else default_bpp, lam=None)

    @property
    def decode_steps(self) -> int:
        """The file's sampler grid: the scaled steps when best-of-N is on, else `sampler_steps`."""
        return self.scaling.steps if self.scaling is not None else self.sampler_steps


# ---------------------------------------------------------------------------------- the wire
# `CompressOptions` in proto/vov/v1/codec.proto: zero (or "") means the default for every field, and
# the rate is a oneof (target_bpp, lambda, or neither: the default rate).


def to_wire(options: EncodeOptions, rate: Rate | None = None) -> dict:
    """The CompressOptions fields of `options` at `rate` (None: the options' own target or weight)."""
    rate = rate or options.rate
    rate.validate()
    spec, scaling = options.adapter, options.scaling
    fields = dict(kind=spec.kind, rank=spec.rank or 0, dim=0 if options.auto_d else spec.d or 0,
                  targets=spec.targets, steps=options.steps or (options.fit.steps if options.fit else 0),
                  sampler_steps=options.sampler_steps, seed=options.noise_seed, backbone=options.backbone,
                  caption=options.caption)
    if scaling is not None:
        fields.update(best_of_search=True, best_of=scaling.candidates or 0, scaling_steps=scaling.steps or 0)
        if scaling.tile is not None:
            fields["best_of_tile"] = scaling.tile
    if rate.kind != "default":
        fields["target_bpp" if rate.kind == "bpp" else "lambda"] = rate.value
    return fields


def from_wire(message, backbone: str) -> tuple[EncodeOptions, Rate]:
    """The EncodeOptions and the Rate of a CompressOptions message for an encoder serving `backbone`,
    checked (UsageError, or BackboneMismatch for another backbone's request)."""
    from vov.errors import BackboneMismatch

    if message.backbone and message.backbone != backbone:
        raise BackboneMismatch(f"this encoder serves backbone {backbone!r}, not {message.backbone!r}")
    which = message.WhichOneof("rate")
    rate = Rate("bpp", message.target_bpp) if which == "target_bpp" else (
        Rate("lambda", getattr(message, "lambda")) if which == "lambda" else Rate())
    rate.validate()
    defaults, scaling = EncodeOptions(), None
    tile = message.best_of_tile if message.HasField("best_of_tile") else None
    if message.best_of_search or message.best_of or message.scaling_steps or tile is not None:
        scaling = ScalingOptions(candidates=message.best_of or None, steps=message.scaling_steps or None, tile=tile)
    spec = AdapterSpec(message.kind or defaults.adapter.kind, message.rank or None, message.dim or None, message.seed,
                       message.targets)
    options = EncodeOptions(backbone=backbone, adapter=spec, steps=message.steps or None,
                            sampler_steps=message.sampler_steps or defaults.sampler_steps, noise_seed=message.seed,
                            auto_d=message.dim == 0, caption=message.caption, scaling=scaling).with_rate(rate)
    options.validate()
    return options, rate


RATE_TOLERANCE = 0.05  # a file further than this from the rate asked for is noted


def rate_note(asked: float | None, got: float, d: int) -> str | None:
    """What to tell a person whose file missed the rate asked for by more than RATE_TOLERANCE (None: on target).

    A file lands under its target when the fitted vector takes fewer bits than its budget: its d
    entries say what they can about the input before the budget runs out (small images, large
    targets)."""
    if asked is None or not asked > 0 or abs(got / asked - 1) <= RATE_TOLERANCE:
        return None
    if got < asked:
        return (f"the file is {got:.4g} bpp, {100 * (1 - got / asked):.0f}% under the {asked:g} bpp asked for: the "
                f"fitted vector (d = {d}) took no more on this input (a larger --dim or --kind lora can take more)")
    return f"the file is {got:.4g} bpp, {100 * (got / asked - 1):.0f}% over the {asked:g} bpp asked for"


__all__ = ["RATE_TOLERANCE", "Rate", "rate_note", "DEFAULT_BPP", "EncodeOptions", "MAX_FIT_STEPS", "MAX_SEED", "ScalingOptions"]
