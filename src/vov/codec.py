"""Image in, .vov bytes out, and back: the data flow of the codec, top to bottom.

compress:   pixels -> pad -> latents -> fit theta -> quantise -> entropy-code -> container
decompress: container -> entropy-decode -> theta_hat -> adapter -> sampler -> latents -> pixels
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from vov import backbones
from vov.backbones import Backbone
from vov.cancel import checkpoint as cancel_point
from vov.errors import BackboneMismatch, BitstreamError, UsageError
from vov.format import bitstream, entropy
from vov.limits import Limits
from vov.media import Picture, check_size, pad_to_multiple
from vov.method import sampler
from vov.method.adapters import KINDS, AdaptedDenoiser, AdapterSpec, lora_entry_count
from vov.method.fit import FitConfig, Progress, fit

DEFAULT_BPP = 0.05
MAX_FIT_STEPS = 100_000
MAX_SEED = (1 << 32) - 1  # the format's seed fields hold 32 bits
MIN_PAYLOAD_BYTES = 8  # a budget below this leaves the vector nothing to say


@dataclass(frozen=True)
class EncodeOptions:
    """Everything a compress needs besides the media: the defaults of the CLI, the proto and the bench."""

    backbone: str = "embedded"
    adapter: AdapterSpec = AdapterSpec()
    fit: FitConfig = FitConfig()
    target_bpp: float | None = DEFAULT_BPP  # bits per pixel of the whole file; None: `fit.lam` sets the rate
    sampler_steps: int = 50
    noise_seed: int = 0
    auto_d: bool = True  # with a bpp target and a one-vector adapter, pick d from the target

    def validate(self) -> None:
        """Refuse out-of-range options before any work (UsageError with one line)."""
        if self.target_bpp is not None and not (math.isfinite(self.target_bpp) and self.target_bpp > 0):
            raise UsageError(f"the rate target must be a positive number of bits per pixel, not {self.target_bpp}")
        if self.target_bpp is None and not (math.isfinite(self.fit.lam) and self.fit.lam > 0):
            raise UsageError(f"lambda must be a positive finite number, not {self.fit.lam}")
        if not 1 <= self.fit.steps <= MAX_FIT_STEPS:
            raise UsageError(f"fitting steps must be between 1 and {MAX_FIT_STEPS}, not {self.fit.steps}")
        if not 1 <= self.sampler_steps <= 10000:
            raise UsageError(f"sampler steps must be between 1 and 10000, not {self.sampler_steps}")
        for name, seed in (("seed", self.noise_seed), ("adapter seed", self.adapter.seed), ("fit seed", self.fit.seed)):
            if not 0 <= seed <= MAX_SEED:
                raise UsageError(f"the {name} must be between 0 and {MAX_SEED}, not {seed}")
        self.adapter.validate()


@dataclass
class EncodeReport:
    data: bytes
    pixels: int
    parts: dict[str, int]
    est_bits: float  # the fitted prior's estimate of the coded vector
    payload_bits: int  # what the ANS payload really takes
    d: int
    seconds: float
    history: list[Progress] = field(default_factory=list)

    @property
    def bpp(self) -> float:
        return 8 * len(self.data) / self.pixels

    @property
    def coding_overhead(self) -> float:
        """Actual payload bits over the model's estimate, minus one."""
        return self.payload_bits / max(self.est_bits, 1e-9) - 1.0


@dataclass
class Decoded:
    pixels: np.ndarray  # (height, width, 3) float32 in [0, 1]
    grey: bool
    file: bitstream.VovFile


@lru_cache(maxsize=4)
def get_backbone(name: str) -> Backbone:
    return backbones.load(name)


def _file(options: EncodeOptions, backbone: Backbone, spec: AdapterSpec, d: int, picture: Picture, **coded) -> bitstream.VovFile:
    """The .vov file of `picture` with these options; `coded` gives the fitted parts."""
    return bitstream.VovFile(
        backbone=backbone.name, backbone_hash=backbone.content_hash, adapter_kind=KINDS.index(spec.kind),
        rank=spec.rank, d=d, adapter_seed=spec.seed, targets=spec.targets or backbone.default_targets,
        sampler_steps=options.sampler_steps, noise_seed=options.noise_seed, frames=1, height=picture.height,
        width=picture.width, colour=1 if picture.grey else 0, **coded)


def overhead_bytes(options: EncodeOptions, backbone: Backbone, spec: AdapterSpec, picture: Picture) -> int:
    """Bytes of the file outside its payload (header, prior, section lengths, checksum), at most."""
    components = options.fit.components
    worst = _file(options, backbone, spec, bitstream.MAX_D, picture, step_size=1e-3, prior_weights=(255,) * components,
                  prior_scale_codes=(0,) * components, qmax=1 << 15, payload=b"")
    return len(bitstream.dump(worst)) + 2  # the payload's length grows from 1 to at most 3 bytes


def payload_budget_bits(options: EncodeOptions, backbone: Backbone, spec: AdapterSpec, picture: Picture) -> float:
    """The ideal bits the coded vector may take so that the whole file lands at `options.target_bpp`.

    One contract for every caller (CLI, services, bench): the target is the rate of the whole
    file, every byte counted. The ANS coder adds at most 64 bits to the ideal size (its final
    state and the rounding to 32-bit words), so those are kept aside.
    """
    pixels = picture.width * picture.height
    overhead = overhead_bytes(options, backbone, spec, picture)
    budget = 8 * (math.floor(options.target_bpp * pixels / 8) - overhead) - 64
    if budget < 8 * MIN_PAYLOAD_BYTES:
        smallest = minimum_bpp(options, backbone, spec, picture)
        raise UsageError(f"{options.target_bpp:g} bpp is too low for a {picture.width}x{picture.height} image: "
                         f"the smallest rate that works is {smallest:.4g} bpp (the file's header alone takes "
                         f"{8 * overhead / pixels:.4g} bpp)")
    return float(budget)


def minimum_bpp(options: EncodeOptions, backbone: Backbone, spec: AdapterSpec, picture: Picture) -> float:
    """The smallest whole-file rate whose budget leaves the vector MIN_PAYLOAD_BYTES, rounded up."""
    pixels = picture.width * picture.height
    exact = 8 * (overhead_bytes(options, backbone, spec, picture) + MIN_PAYLOAD_BYTES + 8 + 1) / pixels
    unit = 10.0 ** (math.floor(math.log10(exact)) - 2)  # three significant digits
    return math.ceil(exact / unit) * unit


# On the first embedded backbone (6 blocks, every attention projection adapted), d = 32768 fitted
# better than 16384 unquantised (18.2 against 16.7 dB after 400 steps on a held-out photo) but not
# under a rate target: on that photo at 0.2 bpp, where the budget asks for 32768, a 600-step fit gave
# 15.3 dB at d = 32768 and 17.1 dB at d = 16384. The automatic choice stops here and a bigger budget
# buys finer quantisation instead. (The shipped backbone's default targets give rank 4 only 24576
# LoRA entries, which caps d about as much.) --dim overrides.
MAX_AUTO_D = 16384


def default_rate(picture: Picture, options: EncodeOptions, backbone: Backbone) -> tuple[float, str | None]:
    """The rate to use when the caller named none: DEFAULT_BPP, or the smallest rate that works for an
    image too small for it (with a note saying so)."""
    spec = dataclasses.replace(options.adapter, targets=options.adapter.targets or backbone.default_targets)
    smallest = minimum_bpp(options, backbone, spec, picture)
    if smallest <= DEFAULT_BPP:
        return DEFAULT_BPP, None
    return smallest, (f"the default {DEFAULT_BPP:g} bpp is too low for a {picture.width}x{picture.height} image; "
                      f"using {smallest:.4g} bpp, the smallest rate that works")


def choose_d(budget_bits: float, lora_entries: int, bits_per_entry: float = 2.5) -> int:
    """A vector length that a fit can bring to `budget_bits`: a power of two near budget / 2.5 bits."""
    d = 2 ** round(math.log2(max(budget_bits / bits_per_entry, 64)))
    return int(min(max(d, 64), lora_entries, MAX_AUTO_D))


def latents_of(backbone: Backbone, picture: Picture) -> torch.Tensor:
    padded = pad_to_multiple(picture.pixels, backbone.pixel_multiple)
    tensor = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[None, :, None]
    with torch.no_grad():
        return backbone.encode(tensor)


def plan(picture: Picture, options: EncodeOptions, backbone: Backbone, limits: Limits = Limits()) -> tuple[AdapterSpec, FitConfig]:
    """The adapter and fit a compress will run, after every check that needs no fitting.

    Refuses (UsageError, LimitExceeded) options out of range, a rate the image cannot reach, and
    files that decoders with `limits` would refuse.
    """
    options.validate()
    check_size(picture.width, picture.height)
    spec = dataclasses.replace(options.adapter, targets=options.adapter.targets or backbone.default_targets)
    entries = lora_entry_count(backbone, spec)
    fit_config = options.fit
    if options.target_bpp is not None:
        budget = payload_budget_bits(options, backbone, spec, picture)
        fit_config = dataclasses.replace(fit_config, target_bits=budget)
        if spec.kind == "one-vector" and options.auto_d:
            spec = dataclasses.replace(spec, d=choose_d(budget, entries))
    else:
        fit_config = dataclasses.replace(fit_config, target_bits=None)
        if spec.kind == "one-vector" and options.auto_d:
            spec = dataclasses.replace(spec, d=min(spec.d, entries))
    d = entries if spec.kind == "lora" else spec.d
    if d > entries:
        raise UsageError(f"d = {d} exceeds the {entries} LoRA entries of the targets at rank {spec.rank}; "
                         f"choose a smaller --dim, or --kind lora")
    limits.check(width=picture.width, height=picture.height, frames=1, sampler_steps=options.sampler_steps, d=d,
                 rank=spec.rank, what="a file with these options")
    return spec, fit_config


def compress(picture: Picture, options: EncodeOptions = EncodeOptions(), backbone: Backbone | None = None,
             on_progress: Callable[[Progress], None] | None = None, checkpoint: str | None = None,
             checkpoint_every: int = 50, limits: Limits = Limits()) -> EncodeReport:
    start = time.perf_counter()
    options.validate()
    backbone = backbone or get_backbone(options.backbone)
    spec, fit_config = plan(picture, options, backbone, limits)
    pixels = picture.width * picture.height
    adapter = AdaptedDenoiser(backbone, spec)
    latents = latents_of(backbone, picture)
    result = fit(adapter, latents, pixels, fit_config, on_progress=on_progress, checkpoint=checkpoint,
                 checkpoint_every=checkpoint_every, channel_weights=backbone.distortion_weights(),
                 decode_noise=sampler.initial_noise(tuple(latents.shape), options.noise_seed))
    qmax = int(np.abs(result.q).max()) if result.q.size else 0
    if qmax > 1 << 15:
        raise UsageError("the fitted vector does not fit the format's range; use a larger --lambda")
    if qmax * result.step_size > bitstream.MAX_THETA:
        raise UsageError("the fitted vector's entries exceed the format's range; use a larger --lambda")
    payload = entropy.encode(result.q, result.prior, qmax)
    f = _file(options, backbone, spec, adapter.d, picture, step_size=result.step_size,
              prior_weights=result.prior.weights, prior_scale_codes=result.prior.log2_scale_codes, qmax=qmax,
              payload=payload)
    data = bitstream.dump(f)
    return EncodeReport(data=data, pixels=pixels, parts=bitstream.part_sizes(f), est_bits=result.est_bits,
                        payload_bits=8 * len(payload), d=adapter.d, seconds=time.perf_counter() - start,
                        history=result.history)


def backbone_for(f: bitstream.VovFile) -> Backbone:
    """The backbone a file names, or BackboneMismatch when this installation lacks it."""
    if f.backbone not in backbones.NAMES:
        raise BackboneMismatch(f"file needs backbone {f.backbone!r}, which this decoder does not have")
    return get_backbone(f.backbone)


def adapter_for(f: bitstream.VovFile, backbone: Backbone) -> AdaptedDenoiser:
    """Rebuild the file's adapter with its decoded vector: what every decoder path starts from."""
    if f.backbone != backbone.name or f.backbone_hash != backbone.content_hash:
        raise BackboneMismatch(
            f"file was made with backbone {f.backbone!r} ({f.backbone_hash.hex()}), "
            f"this decoder has {backbone.name!r} ({backbone.content_hash.hex()})"
        )
    spec = AdapterSpec(f.adapter_name, f.rank, f.d, f.adapter_seed, f.targets)
    try:
        spec.validate()
        entries = lora_entry_count(backbone, spec)  # resolves the targets; builds nothing yet
    except UsageError as e:
        raise BitstreamError(f"adapter: {e}") from None
    if f.d > entries or (spec.kind == "lora" and f.d != entries):
        raise BitstreamError(f"adapter: file declares d = {f.d}; its targets at rank {f.rank} have {entries} LoRA "
                             f"entries, and d may not exceed them ({'must equal' if spec.kind == 'lora' else 'at most'})")
    adapter = AdaptedDenoiser(backbone, spec)
    prior = entropy.PriorParams(f.prior_weights, f.prior_scale_codes)
    q = entropy.decode(f.payload, prior, f.qmax, f.d)
    adapter.set_theta(torch.from_numpy(q.astype(np.float32)) * torch.tensor(f.step_size, dtype=torch.float32))
    return adapter


def check_supported(f: bitstream.VovFile) -> None:
    """Refuse what this decoder does not implement, rather than ignore it."""
    if f.frames != 1:
        raise BitstreamError("this decoder handles images (1 frame); the file holds a clip")
    if (f.fps_num, f.fps_den) != (0, 1):
        raise BitstreamError("an image file must declare no frame rate (fps 0/1)")
    if f.guidance != 0:
        raise BitstreamError("classifier-free guidance is not implemented by this decoder (guidance must be 0)")
    if f.search_bits or f.search:
        raise BitstreamError("best-of-N search indices are not implemented by this decoder")
    if f.caption_z:
        raise BitstreamError("captions are not implemented by this decoder's backbones")


def parse(data: bytes, limits: Limits = Limits()) -> bitstream.VovFile:
    """Read a file's header and check it against what this decoder implements and allows, before any work."""
    f = bitstream.load(data)
    check_supported(f)
    limits.check(width=f.width, height=f.height, frames=f.frames, sampler_steps=f.sampler_steps, d=f.d, rank=f.rank)
    check_size(f.width, f.height)
    return f


def decompress(data: bytes, backbone: Backbone | None = None, velocity: sampler.Velocity | None = None,
               decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
               on_step: Callable[[int, int], None] | None = None, limits: Limits = Limits()) -> Decoded:
    """Decode .vov bytes.

    `velocity` and `decode` replace the in-process torch denoiser and latent decoder (for instance
    by models served elsewhere); the sampling loop and the cropping stay here.
    """
    f = parse(data, limits)
    backbone = backbone or backbone_for(f)
    if velocity is None:
        velocity = sampler.torch_velocity(adapter_for(f, backbone))
    m = backbone.pixel_multiple
    padded_h, padded_w = -(-f.height // m) * m, -(-f.width // m) * m
    shape = (1, *backbone.latent_shape(1, padded_h, padded_w))
    def step_done(i: int, n: int) -> None:
        cancel_point()
        if on_step:
            on_step(i, n)

    latents = sampler.sample(velocity, shape, f.noise_seed, f.sampler_steps, f.schedule, step_done)
    if not torch.isfinite(latents).all():
        raise BitstreamError("the file's adaptation drives the model to non-finite values; it cannot be decoded")
    with torch.no_grad():
        pixels = (decode or backbone.decode)(latents)[0, :, 0].clamp(0, 1).numpy().transpose(1, 2, 0)
    return Decoded(np.ascontiguousarray(pixels[: f.height, : f.width]), grey=f.colour == 1, file=f)
