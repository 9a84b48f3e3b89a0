"""What a compress will run, decided before any work: the frames, the clips, the rate and each
clip's fit, with every refusal that needs no fitting.

`plan(media, options, backbone, limits, rate=...)` resolves the rate once (vov.options.Rate: the
default, a target in bits per pixel or a rate weight); the command, the encoder service and the
benchmark plan through it, and `vov.codec.compress` runs the plan it is given.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from vov.backbones import Backbone
from vov.errors import UsageError
from vov.format import bitstream
from vov.limits import Limits
from vov.media import Picture, check_size
from vov.media.shape import FrameShape
from vov.method.adapters import AdapterSpec, lora_entry_count
from vov.method.fit import FitConfig
from vov.options import DEFAULT_BPP, EncodeOptions, Rate

MIN_PAYLOAD_BYTES = 8  # a budget below this leaves the vector nothing to say
ANS_SLACK_BITS = 64  # the ANS coder's final state and the rounding to 32-bit words, at most

# On the first embedded backbone (6 blocks, every attention projection adapted), d = 32768 fitted
# better than 16384 unquantised (18.2 against 16.7 dB after 400 steps on a held-out photo) but not
# under a rate target: on that photo at 0.2 bpp, where the budget asks for 32768, a 600-step fit gave
# 15.3 dB at d = 32768 and 17.1 dB at d = 16384. The automatic choice stops here and a bigger budget
# buys finer quantisation instead. (The shipped backbone's default targets give rank 4 only 24576
# LoRA entries, which caps d about as much.) --dim overrides.
MAX_AUTO_D = 16384


@dataclass
class Frames(FrameShape):
    """What the codec codes: RGB frames (F, H, W, 3) float32 in [0, 1], with the source's rate and colour."""

    pixels: np.ndarray
    grey: bool = False
    fps: tuple[int, int] = (0, 1)  # (0, 1) for an image

    @classmethod
    def of(cls, media) -> "Frames":
        """A Picture (one frame) or a vov.media.video.Clip."""
        if isinstance(media, Frames):
            return media
        if isinstance(media, Picture):
            return cls(media.pixels[None], media.grey)
        frames = getattr(media, "frames", None)
        if isinstance(frames, np.ndarray) and frames.ndim == 4:
            return cls(np.clip(frames, 0.0, 1.0).astype(np.float32, copy=False), bool(media.grey), tuple(media.fps))
        raise UsageError(f"cannot code a {type(media).__name__}; give a picture or a clip")

    @property
    def count(self) -> int:
        return self.num_frames

    @property
    def size(self) -> int:
        return self.count * self.height * self.width


def file_for(options: EncodeOptions, backbone: Backbone, spec: AdapterSpec, d: int, frames: Frames,
          segments: list[bitstream.Segment], limits: Limits = Limits()) -> bitstream.VovFile:
    """The .vov file of `frames` with these options, the (resolved) adapter `spec` of a vector of
    length `d`, and these coded segments."""
    schedule = backbone.schedule_for(backbone.latent_shape(1, frames.height, frames.width))
    sampling = dict(sampler_steps=options.decode_steps, schedule=schedule.id, shift=float(np.float32(schedule.shift)))
    if options.scaling is not None:
        config = options.scaling.config(schedule.id, schedule.shift)
        sampling = {**config.decoder_fields(), **tile_grid(config, _padded_latent_shape(backbone, frames))}
    return bitstream.VovFile(
        backbone=backbone.name, backbone_hash=backbone.content_hash, **dataclasses.replace(spec, d=d).decoder_fields(),
        **sampling, noise_seed=options.noise_seed, frames=frames.count, height=frames.height, width=frames.width,
        fps_num=frames.fps[0] if frames.count > 1 else 0, fps_den=frames.fps[1] if frames.count > 1 else 1,
        colour=1 if frames.grey else 0, caption_z=bitstream.VovFile.pack_caption(options.caption),
        clip_frames=clip_length(backbone, frames, limits), segments=segments)


def _padded_latent_shape(backbone: Backbone, frames: Frames) -> tuple[int, ...]:
    m = backbone.pixel_multiple
    return (1, *backbone.latent_shape(1, -(-frames.height // m) * m, -(-frames.width // m) * m))


def tile_grid(config, shape: tuple[int, ...]) -> dict[str, int]:
    """The file's tile-grid fields of a best-of-N search on latents of `shape`."""
    from vov.method.tiles import TileGrid

    if not config.tile:
        return dict(bitstream.UNTILED)
    try:
        grid = TileGrid.for_shape(shape, config.tile)
    except ValueError as e:
        raise UsageError(f"best-of-N tiles: {e}") from None
    return {"search_tile": config.tile, "tile_rows": grid.rows, "tile_cols": grid.cols}


def clip_length(backbone: Backbone, frames: Frames, limits: Limits = Limits()) -> int:
    """Frames per clip: the backbone's clip length, shortened so a clip's pixels stay within
    `limits.max_clip_pixels` (and to 1 + k * its temporal factor)."""
    if frames.count == 1:
        return 1
    fitting = max(1, limits.max_clip_pixels // (frames.width * frames.height))
    n = min(max(1, backbone.clip_frames), fitting, frames.count)
    step = backbone.temporal_factor
    return 1 + (n - 1) // step * step


def with_search_chosen(options: EncodeOptions, backbone: Backbone, frames: Frames,
                       limits: Limits = Limits()) -> EncodeOptions:
    """`options` with the best-of-N N, K and T left open chosen for a clip of `frames` at the options'
    rate (the default rate under a rate weight): `vov.method.scaling.choose_search`."""
    if options.scaling is None or options.scaling.is_resolved:
        return options
    clip_bits = (options.target_bpp or DEFAULT_BPP) * clip_length(backbone, frames, limits) * frames.height * frames.width
    chosen = options.scaling.resolved(_padded_latent_shape(backbone, frames), clip_bits)
    return dataclasses.replace(options, scaling=chosen)


def _worst_segments(options: EncodeOptions, lengths: list[int], shape: tuple[int, ...]) -> list[bitstream.Segment]:
    """Segments as large as coding can make them, with empty payloads: the overhead's upper bound
    (`shape`: the latents' shape, which sets the number of best-of-N tiles)."""
    k = (options.fit or FitConfig()).components
    search = b""
    if options.scaling is not None:
        search = bytes(options.scaling.config().index_bytes(shape))
    return [bitstream.Segment(n, 1e-3, (255,) * k, (0,) * k, 1 << 15, b"", search) for n in lengths]


def overhead_bytes(options: EncodeOptions, backbone: Backbone, spec: AdapterSpec, frames: Frames,
                   limits: Limits = Limits()) -> int:
    """Bytes of the file outside its payloads (header, priors, indices, lengths, checksum), at most."""
    lengths = bitstream.clip_lengths(frames.count, clip_length(backbone, frames, limits))
    options = with_search_chosen(options, backbone, frames, limits)
    worst = file_for(options, backbone, spec, bitstream.MAX_D, frames,
                  _worst_segments(options, lengths, _padded_latent_shape(backbone, frames)), limits)
    return len(bitstream.dump(worst)) + 4 * len(lengths)  # a payload's and a segment's lengths grow by <= 2 bytes each


def payload_budgets(options: EncodeOptions, backbone: Backbone, spec: AdapterSpec, frames: Frames,
                    limits: Limits = Limits()) -> list[float]:
    """The ideal bits each clip's vector may take so that the whole file lands at `options.target_bpp`.

    One contract for every caller (CLI, services, bench): the target is the rate of the whole file,
    every byte counted (header, priors, best-of-N indices). What remains goes to the clips in
    proportion to their frames.
    """
    lengths = bitstream.clip_lengths(frames.count, clip_length(backbone, frames, limits))
    overhead = overhead_bytes(options, backbone, spec, frames, limits)
    total = 8 * (math.floor(options.target_bpp * frames.size / 8) - overhead) - ANS_SLACK_BITS * len(lengths)
    budgets = [total * n / frames.count for n in lengths]
    if min(budgets) < 8 * MIN_PAYLOAD_BYTES:
        smallest = minimum_bpp(options, backbone, spec, frames, limits)
        what = "image" if frames.count == 1 else f"{frames.count}-frame clip"
        raise UsageError(f"{options.target_bpp:g} bpp is too low for a {frames.width}x{frames.height} {what}: "
                         f"the smallest rate that works is {smallest:.4g} bpp (the file's header alone takes "
                         f"{8 * overhead / frames.size:.4g} bpp)")
    return budgets


def minimum_bpp(options: EncodeOptions, backbone: Backbone, spec: AdapterSpec, frames: Frames,
                limits: Limits = Limits()) -> float:
    """The smallest whole-file rate whose budget leaves each clip's vector MIN_PAYLOAD_BYTES, rounded up."""
    lengths = bitstream.clip_lengths(frames.count, clip_length(backbone, frames, limits))
    per_clip = MIN_PAYLOAD_BYTES + ANS_SLACK_BITS // 8 + 1
    needed = overhead_bytes(options, backbone, spec, frames, limits) + per_clip * frames.count / min(lengths)
    exact = 8 * needed / frames.size
    unit = 10.0 ** (math.floor(math.log10(exact)) - 2)  # three significant digits
    return math.ceil(exact / unit) * unit


def default_rate(media, options: EncodeOptions, backbone: Backbone, limits: Limits = Limits()) -> tuple[float, str | None]:
    """The rate to use when the caller named none: DEFAULT_BPP, or the smallest rate that works for
    media too small for it (with a note saying so)."""
    frames = Frames.of(media)
    spec = options.adapter.resolved(backbone)
    smallest = minimum_bpp(options, backbone, spec, frames, limits)
    if smallest <= DEFAULT_BPP:
        return DEFAULT_BPP, None
    return smallest, (f"the default {DEFAULT_BPP:g} bpp is too low for {frames.width}x{frames.height}"
                      f"{'' if frames.count == 1 else f' x {frames.count} frames'}; using {smallest:.4g} bpp, "
                      f"the smallest rate that works")


def choose_d(budget_bits: float, lora_entries: int, bits_per_entry: float = 2.5) -> int:
    """A vector length that a fit can bring to `budget_bits`: a power of two near budget / 2.5 bits."""
    d = 2 ** round(math.log2(max(budget_bits / bits_per_entry, 64)))
    return int(min(max(d, 64), lora_entries, MAX_AUTO_D))


@dataclass
class Plan:
    """What a compress will run, decided before any fit: the options with their rate resolved, the
    adapter, one fit per clip, the clips, and what the rate's choice should tell a person."""

    spec: AdapterSpec
    fits: list[FitConfig]
    lengths: list[int]  # frames of each clip
    options: EncodeOptions | None = None
    note: str | None = None  # the default rate raised for small media, and why


def plan(media, options: EncodeOptions, backbone: Backbone, limits: Limits = Limits(), rate: Rate | None = None) -> Plan:
    """Every check that needs no fitting: options in range, sizes, a reachable rate, a file within `limits`.

    `rate` is resolved here (None: the options' own `target_bpp` or `lam`); the default rate is
    DEFAULT_BPP, or the smallest rate that works for media too small for it (`Plan.note` says so).
    Refuses with UsageError (or MediaError, LimitExceeded) before any work.
    """
    note = None
    if rate is not None:
        rate.validate()
        default_bpp = DEFAULT_BPP
        if rate.kind == "default":
            default_bpp, note = default_rate(media, options, backbone, limits)
        options = options.with_rate(rate, default_bpp)
    options.validate()
    frames = Frames.of(media)
    check_size(frames.width, frames.height)
    backbone.condition(options.caption)  # a caption the backbone cannot take is refused here
    spec = options.adapter.resolved(backbone)
    entries = lora_entry_count(backbone, spec)
    clip_frames = clip_length(backbone, frames, limits)
    lengths = bitstream.clip_lengths(frames.count, clip_frames)
    options = with_search_chosen(options, backbone, frames, limits)
    options.validate()
    fit_config = options.fit_config(backbone)
    fits = [dataclasses.replace(fit_config, target_bits=None)] * len(lengths)
    if options.target_bpp is not None:
        budgets = payload_budgets(options, backbone, spec, frames, limits)
        fits = [dataclasses.replace(fit_config, target_bits=b) for b in budgets]
        if spec.kind == "one-vector" and options.auto_d:
            spec = dataclasses.replace(spec, d=choose_d(min(budgets), entries))
    elif spec.kind == "one-vector" and options.auto_d:
        spec = dataclasses.replace(spec, d=min(spec.d, entries))
    d = entries if spec.kind == "lora" else spec.d
    if d > entries:
        raise UsageError(f"d = {d} exceeds the {entries} LoRA entries of the targets at rank {spec.rank}; "
                         f"choose a smaller --dim, or --kind lora")
    limits.check(width=frames.width, height=frames.height, frames=frames.count, sampler_steps=options.decode_steps,
                 d=d, rank=spec.rank, clip_frames=clip_frames, what="a file with these options")
    return Plan(spec, fits, lengths, options, note)
