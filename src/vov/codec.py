"""Media in, .vov bytes out, and back: the data flow of the codec, top to bottom.

compress:   frames -> clips of the backbone's length -> pad -> latents -> fit theta (one per clip)
            -> quantise -> entropy-code [-> best-of-N search: the chosen noises' indices] -> container
decompress: container -> per clip: entropy-decode -> theta_hat -> adapter -> sampler (replaying the
            chosen noises) -> latents -> frames, yielded clip by clip (`decode_clips`)

An image is a one-frame clip. Every clip is fitted and coded on its own (its own vector, prior and
indices), so each decodes on its own and a decoder can stream a video clip after clip. What a
compress will run (the clips, the rate, each clip's fit) is decided first, in `vov.plan`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
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
from vov.media import check_size, pad_to_multiple
from vov.method import parallel, sampler
from vov.method.adapters import AdaptedDenoiser, AdapterSpec, lora_entry_count
from vov.method.fit import Progress, fit
from vov.options import EncodeOptions, ScalingOptions
from vov.plan import (MAX_AUTO_D, Frames, Plan, choose_d, clip_length, default_rate,  # noqa: F401 (the codec's names)
                      file_for, plan, tile_grid)
from vov.serving.engines.base import Engine
from vov.serving.engines.torch import TorchEngine



# ---------------------------------------------------------------------------------- the media


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


# ---------------------------------------------------------------------------------- compress


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
             checkpoint_every: int = 50, limits: Limits = Limits(), planned: Plan | None = None) -> EncodeReport:
    """Code a Picture or a Clip. `on_progress` sees every fitting and search step, with its clip.

    `planned` is the `plan` of this media, options and backbone when the caller made it (to tell a
    person what it decided before the first step); its options, with their rate resolved, are coded."""
    start = time.perf_counter()
    frames = Frames.of(media)
    backbone = backbone or get_backbone(options.backbone, options.model, options.device)
    the_plan = planned or plan(frames, options, backbone, limits)
    options = the_plan.options
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
    f = file_for(options, backbone, spec, adapter.d, frames, segments, limits)
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
