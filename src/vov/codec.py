"""Media in, .vov bytes out, and back: the data flow of the codec, top to bottom.

compress:   frames -> clips of the backbone's length -> pad -> latents -> fit theta (one per clip)
            -> quantise -> entropy-code [-> best-of-N search: the chosen noises' indices] -> container
decompress: container -> per clip: entropy-decode -> theta_hat -> adapter -> sampler (replaying the
            chosen noises) -> latents -> frames, yielded clip by clip (`decode_clips`)

An image is a one-frame clip. Every clip is fitted and coded on its own (its own vector, prior and
indices), so each decodes on its own and a decoder can stream a video clip after clip.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterator

import numpy as np
import torch

from vov import backbones
from vov.backbones import Backbone, Condition
from vov.cancel import checkpoint as cancel_point
from vov.errors import BackboneMismatch, BitstreamError, UsageError
from vov.files import write_atomic
from vov.format import bitstream, entropy
from vov.limits import Limits
from vov.media import Picture, check_size, pad_to_multiple
from vov.method import parallel, sampler
from vov.method.adapters import AdaptedDenoiser, AdapterSpec, lora_entry_count
from vov.method.fit import FitConfig, Progress, fit
from vov.options import DEFAULT_BPP, EncodeOptions, ScalingOptions
from vov.serving.engines.base import Engine
from vov.serving.engines.torch import TorchEngine

MIN_PAYLOAD_BYTES = 8  # a budget below this leaves the vector nothing to say
ANS_SLACK_BITS = 64  # the ANS coder's final state and the rounding to 32-bit words, at most

# On the first embedded backbone (6 blocks, every attention projection adapted), d = 32768 fitted
# better than 16384 unquantised (18.2 against 16.7 dB after 400 steps on a held-out photo) but not
# under a rate target: on that photo at 0.2 bpp, where the budget asks for 32768, a 600-step fit gave
# 15.3 dB at d = 32768 and 17.1 dB at d = 16384. The automatic choice stops here and a bigger budget
# buys finer quantisation instead. (The shipped backbone's default targets give rank 4 only 24576
# LoRA entries, which caps d about as much.) --dim overrides.
MAX_AUTO_D = 16384


# ---------------------------------------------------------------------------------- the media


@dataclass
class Frames:
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
        return self.pixels.shape[0]

    @property
    def height(self) -> int:
        return self.pixels.shape[1]

    @property
    def width(self) -> int:
        return self.pixels.shape[2]

    @property
    def size(self) -> int:
        return self.count * self.height * self.width


def clip_seed(noise_seed: int, clip: int) -> int:
    """The seed of clip `clip`'s noises (initial and best-of-N): the file's seed in the low 32 bits,
    the clip's index above them, so clip 0 of any file draws what format 1.0 drew."""
    return noise_seed + (clip << 32)


# ---------------------------------------------------------------------------------- backbones


@lru_cache(maxsize=4)
def get_backbone(name: str, model: str | None = None, device: str | None = None) -> Backbone:
    return backbones.load(name, model=model, device=device)


def backbone_for(f: bitstream.VovFile, model: str | None = None, device: str | None = None) -> Backbone:
    """The backbone a file names, or BackboneMismatch when this installation lacks it."""
    if f.backbone not in backbones.NAMES:
        raise BackboneMismatch(f"file needs backbone {f.backbone!r}, which this decoder does not have")
    name = f.backbone if model else backbones.registry_name_for(f.backbone, f.backbone_hash)
    return get_backbone(name, model, device)


# ---------------------------------------------------------------------------------- the rate


def _file(options: EncodeOptions, backbone: Backbone, spec: AdapterSpec, d: int, frames: Frames,
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
    worst = _file(options, backbone, spec, bitstream.MAX_D, frames,
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


# ---------------------------------------------------------------------------------- compress


@dataclass
class Plan:
    """What a compress will run, decided before any fit: the adapter, one fit per clip, the clips."""

    spec: AdapterSpec
    fits: list[FitConfig]
    lengths: list[int]  # frames of each clip


def plan(media, options: EncodeOptions, backbone: Backbone, limits: Limits = Limits()) -> Plan:
    """Every check that needs no fitting: options in range, sizes, a reachable rate, a file within `limits`.

    Refuses with UsageError (or MediaError, LimitExceeded) before any work.
    """
    options.validate()
    frames = Frames.of(media)
    check_size(frames.width, frames.height)
    backbone.condition(options.caption)  # a caption the backbone cannot take is refused here
    spec = options.adapter.resolved(backbone)
    entries = lora_entry_count(backbone, spec)
    clip_frames = clip_length(backbone, frames, limits)
    lengths = bitstream.clip_lengths(frames.count, clip_frames)
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
    return Plan(spec, fits, lengths)


@dataclass
class EncodeReport:
    data: bytes
    pixels: int
    parts: dict[str, int]
    est_bits: float  # the fitted priors' estimate of the coded vectors
    payload_bits: int  # what the ANS payloads really take
    d: int
    seconds: float
    history: list[Progress] = field(default_factory=list)
    clip_bytes: list[int] = field(default_factory=list)  # each clip's segment
    index_bits: int = 0  # bits of the best-of-N indices, all clips together

    @property
    def bpp(self) -> float:
        return 8 * len(self.data) / self.pixels

    @property
    def coding_overhead(self) -> float:
        """Actual payload bits over the model's estimate, minus one."""
        return self.payload_bits / max(self.est_bits, 1e-9) - 1.0


def latents_of(backbone: Backbone, pixels) -> torch.Tensor:
    """(F, H, W, 3) frames (or a Picture, a Clip) -> the backbone's latents (1, C, latent frames, h, w)
    of the frames padded to its grid."""
    if not isinstance(pixels, np.ndarray):
        pixels = Frames.of(pixels).pixels
    padded = np.stack([pad_to_multiple(frame, backbone.pixel_multiple) for frame in pixels])
    tensor = torch.from_numpy(np.ascontiguousarray(padded.transpose(3, 0, 1, 2)))[None]
    with torch.no_grad():
        return backbone.encode(tensor)


def latent_shape(f: bitstream.VovFile, backbone: Backbone, frames: int) -> tuple[int, ...]:
    """The latent shape (with its batch axis) of a clip of `frames` frames of file `f`."""
    m = backbone.pixel_multiple
    return (1, *backbone.latent_shape(frames, -(-f.height // m) * m, -(-f.width // m) * m))


class _ClipStore:
    """Finished clips of an interrupted compress, kept beside its checkpoint so a resume skips them."""

    def __init__(self, checkpoint: str | None, key: str):
        self.path = f"{checkpoint}.clips" if checkpoint else None
        self.key = key
        self.done: list[bytes] = []
        if self.path and os.path.exists(self.path):
            try:
                saved = json.loads(open(self.path).read())
                if saved.get("key") != key:
                    raise UsageError(f"{self.path} belongs to another compress; delete it to start afresh")
                self.done = [bytes.fromhex(s) for s in saved["segments"]]
                for raw in self.done:
                    bitstream.load_segment(raw)  # data, checked like any file
            except (ValueError, KeyError, TypeError, BitstreamError) as e:
                raise UsageError(f"{self.path} is not a usable record of finished clips ({e}); delete it") from None

    def add(self, segment: bitstream.Segment) -> None:
        self.done.append(bitstream.dump_segment(segment))
        if self.path and parallel.is_writer():  # under torchrun rank 0 keeps the record
            write_atomic(self.path, json.dumps({"key": self.key, "segments": [s.hex() for s in self.done]}).encode())

    def finish(self) -> None:
        if self.path and parallel.is_writer() and os.path.exists(self.path):
            os.remove(self.path)


def _media_key(frames: Frames, options: EncodeOptions) -> str:
    digest = hashlib.sha256(frames.pixels.tobytes())
    digest.update(repr(dataclasses.asdict(options)).encode())
    return digest.hexdigest()


def compress(media, options: EncodeOptions = EncodeOptions(), backbone: Backbone | None = None,
             on_progress: Callable[[Progress], None] | None = None, checkpoint: str | None = None,
             checkpoint_every: int = 50, limits: Limits = Limits()) -> EncodeReport:
    """Code a Picture or a Clip. `on_progress` sees every fitting and search step, with its clip."""
    start = time.perf_counter()
    options.validate()
    frames = Frames.of(media)
    backbone = backbone or get_backbone(options.backbone, options.model, options.device)
    the_plan = plan(frames, options, backbone, limits)
    spec = the_plan.spec
    condition = backbone.condition(options.caption)
    store = _ClipStore(checkpoint, _media_key(frames, options))
    adapter = AdaptedDenoiser(backbone, spec)
    segments, history, est_bits, payload_bits, index_bits = [], [], 0.0, 0, 0
    clips = len(the_plan.lengths)
    previous_theta = None
    first = 0
    for c, (length, fit_config) in enumerate(zip(the_plan.lengths, the_plan.fits)):
        pixels = frames.pixels[first: first + length]
        first += length
        if c < len(store.done):  # finished before an interruption
            segments.append(bitstream.load_segment(store.done[c]))
            continue

        def report(p: Progress, c=c) -> None:
            p = dataclasses.replace(p, clip=c + 1, clips=clips)
            history.append(p)
            if on_progress:
                on_progress(p)

        latents = latents_of(backbone, pixels)
        seed = clip_seed(options.noise_seed, c)
        clip_checkpoint = None if checkpoint is None else (checkpoint if clips == 1 else f"{checkpoint}.{c}")
        result = fit(adapter, latents, length * frames.height * frames.width, fit_config, on_progress=report,
                     checkpoint=clip_checkpoint, checkpoint_every=checkpoint_every, condition=condition,
                     channel_weights=backbone.distortion_weights(),
                     decode_noise=sampler.initial_noise(tuple(latents.shape), seed),
                     initial=previous_theta if options.warm_start else None)
        previous_theta = result.theta_hat
        qmax = int(np.abs(result.q).max()) if result.q.size else 0
        if qmax > 1 << 15 or qmax * result.step_size > bitstream.MAX_THETA:
            raise UsageError("the fitted vector's entries exceed the format's range; use a larger --lambda")
        payload = entropy.encode(result.q, result.prior, qmax)
        search = b""
        if options.scaling is not None:
            search = _search(adapter, backbone, latents, seed, options.scaling, condition, report)
            index_bits += 8 * len(search)
        segment = bitstream.Segment(length, result.step_size, result.prior.weights, result.prior.log2_scale_codes,
                                    qmax, payload, search)
        segments.append(segment)
        store.add(segment)
        est_bits += result.est_bits
        payload_bits += 8 * len(payload)
    f = _file(options, backbone, spec, adapter.d, frames, segments, limits)
    data = bitstream.dump(f)
    store.finish()
    return EncodeReport(data=data, pixels=frames.size, parts=bitstream.part_sizes(f), est_bits=est_bits,
                        payload_bits=payload_bits, d=adapter.d, seconds=time.perf_counter() - start, history=history,
                        clip_bytes=bitstream.segment_sizes(f), index_bits=index_bits)


def _search(adapter: AdaptedDenoiser, backbone: Backbone, latents: torch.Tensor, seed: int, scaling: ScalingOptions,
            condition: Condition, report: Callable[[Progress], None]) -> bytes:
    """Best-of-N over the fitted adapter toward the clip's latents: the coded indices of the chosen noises."""
    from vov.method import scaling as method

    schedule = backbone.schedule_for(tuple(latents.shape))
    config = scaling.config(schedule.id, float(np.float32(schedule.shift)))

    def on_step(i: int, n: int) -> None:
        cancel_point()
        report(Progress(i, n, 3, 0.0, 0.0, 0.0, 0.0))

    velocity = sampler.torch_velocity(adapter, condition)
    with adapter.frozen():
        weights = backbone.distortion_weights() if config.selection in method.WEIGHTED_SELECTIONS else None
        indices, _ = method.search(velocity, latents.float(), tuple(latents.shape), seed, config, on_step=on_step,
                                   weights=weights)
    return method.encode_indices(indices, config.candidates)


# ---------------------------------------------------------------------------------- decompress


def check_supported(f: bitstream.VovFile, backbone: Backbone | None = None) -> None:
    """Refuse what this decoder does not implement, rather than ignore it."""
    if f.guidance != 0:
        raise BitstreamError("classifier-free guidance is not implemented by this decoder (guidance must be 0)")
    if f.frames > 1 and (f.fps_num == 0 or f.fps_den == 0):
        raise BitstreamError("a clip must declare its frame rate")
    if f.frames == 1 and (f.fps_num, f.fps_den) != (0, 1):
        raise BitstreamError("an image file must declare no frame rate (fps 0/1)")
    if not f.targets:
        raise BitstreamError("the file names no adapted layers (targets is empty); a file names a preset id of "
                             "its backbone or exact layer names")
    if backbone is not None:
        if f.caption_z and not backbone.max_caption_tokens:
            raise BitstreamError(f"the file has a caption, and backbone {backbone.name!r} takes none")
        if f.frames > 1 and f.clip_frames > max(1, backbone.clip_frames):
            raise BitstreamError(f"clips of {f.clip_frames} frames exceed backbone {backbone.name!r}'s "
                                 f"{backbone.clip_frames}")


def parse(data: bytes | bitstream.VovFile, limits: Limits = Limits()) -> bitstream.VovFile:
    """Read a file's header (unless `data` is a file read already) and check it against what this
    decoder implements and allows, before any work."""
    f = data if isinstance(data, bitstream.VovFile) else bitstream.load(data)
    check_supported(f)
    limits.check(width=f.width, height=f.height, frames=f.frames, sampler_steps=f.sampler_steps, d=f.d, rank=f.rank,
                 clip_frames=f.clip_frames)
    check_size(f.width, f.height)
    return f


def adapter_for(f: bitstream.VovFile, backbone: Backbone, clip: int = 0) -> AdaptedDenoiser:
    """Rebuild the file's adapter with clip `clip`'s decoded vector: what every decoder path starts from."""
    if f.backbone != backbone.name or f.backbone_hash != backbone.content_hash:
        raise BackboneMismatch(
            f"file was made with backbone {f.backbone!r} ({f.backbone_hash.hex()}), "
            f"this decoder has {backbone.name!r} ({backbone.content_hash.hex()})"
        )
    spec = AdapterSpec.from_decoder_fields(vars(f))
    try:
        spec.validate()
        entries = lora_entry_count(backbone, spec)  # resolves the targets; builds nothing yet
    except UsageError as e:
        raise BitstreamError(f"adapter: {e}") from None
    if f.d > entries or (spec.kind == "lora" and f.d != entries):
        raise BitstreamError(f"adapter: file declares d = {f.d}; its targets at rank {f.rank} have {entries} LoRA "
                             f"entries, and d may not exceed them ({'must equal' if spec.kind == 'lora' else 'at most'})")
    adapter = AdaptedDenoiser(backbone, spec)
    set_clip(adapter, f, clip)
    return adapter


def clip_vector(f: bitstream.VovFile, clip: int) -> np.ndarray:
    """Clip `clip`'s quantised vector, entropy-decoded (BitstreamError unless its payload codes exactly
    `d` integers under its prior)."""
    s = f.segments[clip]
    try:
        return entropy.decode(s.payload, entropy.PriorParams(s.prior_weights, s.prior_scale_codes), s.qmax, f.d)
    except BitstreamError as e:
        raise BitstreamError(f"segment {clip}: {e}") from None


def set_clip(adapter: AdaptedDenoiser, f: bitstream.VovFile, clip: int) -> None:
    """Entropy-decode clip `clip`'s vector into `adapter` (whose spec is the file's)."""
    q = clip_vector(f, clip)
    step = f.segments[clip].step_size
    adapter.set_theta(torch.from_numpy(q.astype(np.float32)) * torch.tensor(step, dtype=torch.float32))


def check_clips(f: bitstream.VovFile) -> None:
    """Every clip decodes before any clip is sampled: each segment's prior and payload (entropy-decoded
    to exactly `d` integers) and its best-of-N indices. A file with a bad last clip is refused before
    its first clip costs anything."""
    check_indices(f)
    config = scaling_config(f)
    for c, segment in enumerate(f.segments):
        clip_vector(f, c)
        if config is not None:
            from vov.method.scaling import decode_indices

            try:
                decode_indices(segment.search, f.index_count, config.candidates)
            except BitstreamError as e:
                raise BitstreamError(f"segment {c}: {e}") from None


def condition_for(f: bitstream.VovFile, backbone: Backbone) -> Condition:
    try:
        return backbone.condition(f.caption)
    except UsageError as e:
        raise BitstreamError(f"caption: {e}") from None


def scaling_config(f: bitstream.VovFile):
    """The best-of-N replay a file asks for (its sampler fields), or None for an ODE decode."""
    if f.sampler == 0:
        return None
    from vov.method.scaling import ScalingConfig

    try:
        return ScalingConfig.from_decoder_fields(vars(f))
    except ValueError as e:
        raise BitstreamError(f"best-of-N fields: {e}") from None


def check_indices(f: bitstream.VovFile) -> None:
    """Every clip's search section holds exactly its coded indices (before any work)."""
    config = scaling_config(f)
    if config is None:
        return
    from vov.method.scaling import index_bytes

    expected = index_bytes(f.index_count, config.candidates)
    for i, s in enumerate(f.segments):
        if len(s.search) != expected:
            raise BitstreamError(f"segment {i}: {len(s.search)} bytes of best-of-N indices, {f.index_count} "
                                 f"indices of {f.search_bits} bits take {expected}")


def check_tile_grid(f: bitstream.VovFile, shape: tuple[int, ...]) -> None:
    """The file's tile grid is the one its tile side makes on the latents the backbone gives it."""
    config = scaling_config(f)
    if config is None or not config.tile:
        return
    fields = tile_grid(config, shape)
    if (fields["tile_rows"], fields["tile_cols"]) != (f.tile_rows, f.tile_cols):
        raise BitstreamError(f"best-of-N tiles: the file declares {f.tile_rows} x {f.tile_cols} tiles; tiles of "
                             f"{f.search_tile} cells make {fields['tile_rows']} x {fields['tile_cols']} on its latents")


@dataclass
class DecodedClip:
    index: int
    frames: np.ndarray  # (frames, height, width, 3) float32 in [0, 1]


@dataclass
class Decoded:
    frames: np.ndarray  # (frames, height, width, 3) float32 in [0, 1]
    grey: bool
    file: bitstream.VovFile

    @property
    def pixels(self) -> np.ndarray:
        """An image's pixels (height, width, 3); the first frame of a clip."""
        return self.frames[0]

    @property
    def fps(self) -> tuple[int, int]:
        return self.file.fps_num, self.file.fps_den


def decode_clips(data: bytes | bitstream.VovFile, *, backbone: Backbone | None = None, engine: Engine | None = None,
                 on_step: Callable[[int, int], None] | None = None, limits: Limits = Limits(),
                 model: str | None = None, device: str | None = None) -> Iterator[DecodedClip]:
    """Decode .vov bytes (or a file `parse` read) clip by clip, yielding each clip's frames as soon as
    they exist.

    `engine` runs each clip's sampler steps (one session per clip: `engine.open(adapter, condition)`)
    and the latent decoder (default: torch in this process, `TorchEngine`); the sampling loop and the
    cropping stay here. `on_step(step, total)` counts sampler steps over the whole file. Every clip
    is checked (`check_clips`, the tile grids, the adapter's fields) before the first is sampled.
    """
    f = parse(data, limits)
    check_clips(f)
    backbone = backbone or backbone_for(f, model, device)
    check_supported(f, backbone)
    for segment in f.segments:
        check_tile_grid(f, latent_shape(f, backbone, segment.frames))
    adapter = adapter_for(f, backbone, 0)  # the adapter's fields checked against the backbone, then built
    condition = condition_for(f, backbone)
    config = scaling_config(f)
    engine = engine or TorchEngine(backbone)
    total = f.sampler_steps * len(f.segments)
    done = 0
    for c, segment in enumerate(f.segments):
        if c:
            set_clip(adapter, f, c)
        shape = latent_shape(f, backbone, segment.frames)
        seed = clip_seed(f.noise_seed, c)

        def step_done(i: int, n: int) -> None:
            cancel_point()
            if on_step:
                on_step(done + i, total)

        with engine.open(adapter, condition) as velocity:
            if config is None:
                latents = sampler.sample(velocity, shape, seed, f.sampler_steps, f.schedule, step_done, f.shift)
            else:
                from vov.method.scaling import decode_indices, replay

                indices = decode_indices(segment.search, f.index_count, config.candidates)
                latents = replay(velocity, shape, seed, config, indices.reshape(config.index_shape(shape)),
                                 on_step=step_done)
        done += f.sampler_steps
        if not torch.isfinite(latents).all():
            raise BitstreamError("the file's adaptation drives the model to non-finite values; it cannot be decoded")
        pixels = engine.decode(latents)[0].float().clamp(0, 1).cpu().numpy()
        frames = pixels.transpose(1, 2, 3, 0)[: segment.frames, : f.height, : f.width]  # the padding is never shown
        yield DecodedClip(c, np.ascontiguousarray(frames))


def decompress(data: bytes | bitstream.VovFile, *, backbone: Backbone | None = None, engine: Engine | None = None,
               on_step: Callable[[int, int], None] | None = None, limits: Limits = Limits(),
               model: str | None = None, device: str | None = None) -> Decoded:
    """Decode .vov bytes (or a file `parse` read) to all their frames (`decode_clips` streams them instead)."""
    f = parse(data, limits)
    clips = [clip.frames for clip in decode_clips(f, backbone=backbone, engine=engine, on_step=on_step, limits=limits,
                                                  model=model, device=device)]
    return Decoded(np.concatenate(clips) if len(clips) > 1 else clips[0], grey=f.colour == 1, file=f)
