"""Decoding .vov files edited through their adaptations (`vov edit`, docs/editing.md).

    vov edit IN.vov --caption "a panda" -o OUT          decode the same vector with another caption
    vov edit A.vov B.vov --merge --weights 0.6,0.4 -o OUT   dW = 0.6 B_A A_A + 0.4 B_B A_B
    vov edit IN.vov --strength 0.5 -o OUT               dW = 0.5 B A (1: the plain decode, 0: the base model)

The options combine. A merge decodes at the first file's size, noise, sampler grid and caption
(unless --caption names another); clip i of every file is merged with clip i of the others, so the
files must have the same frames and clip layout. Files of a best-of-N decode are edited with the
plain ODE on their own grid: their chosen noises were picked for the original adaptation (and
carry the original image's detail), so `replay` keeps them only on request, for one file.

Every path decodes through `vov.codec.decode_clips` with an edited engine: the codec rebuilds the
first file's adapter clip by clip, and the engine's `open` replaces it by the `EditedAdapter` of all
files' clip (and the caption's condition) before handing it to the engine underneath, so the CLI,
the decoder service and Triton run the same loop and the same engines as a plain decode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from vov import backbones, codec
from vov.backbones.base import MAX_CAPTION_BYTES, Backbone
from vov.errors import BackboneMismatch, UsageError, VovError
from vov.format import bitstream
from vov.limits import Limits
from vov.method.edit import MAX_PARTS, STRENGTH_RANGE, EditedAdapter, check_number, check_rank, check_weights
from vov.serving.engines.base import Engine
from vov.serving.engines.torch import TorchEngine

MAX_FILES = MAX_PARTS


@dataclass(frozen=True)
class EditOptions:
    """What to change. `caption` None keeps the first file's; `weights` None gives each file 1/n."""

    caption: str | None = None
    weights: tuple[float, ...] | None = None
    strength: float = 1.0
    replay: bool = False  # one best-of-N file: replay its chosen noises instead of the ODE


@dataclass
class EditPlan:
    """An edit checked against its files, before any model is loaded."""

    files: list[bitstream.VovFile]
    header: bitstream.VovFile  # what the decode loop runs: the first file, made an ODE decode where it was
    # best-of-N (the output's size, frames, rate and colour)
    weights: tuple[float, ...]
    strength: float
    caption: str | None
    rank: int  # of the edited adaptation: the sum of the files' ranks
    ode_instead: bool  # a best-of-N file decoded with the plain ODE

    def notes(self) -> list[str]:
        """What the edit decides that a person might not expect."""
        out = []
        if self.ode_instead:
            out.append(f"the file's best-of-N noises belong to its own adaptation: the edit decodes with the plain "
                       f"ODE on the same {self.header.sampler_steps}-step grid (replay keeps them, for one file)")
        if len(self.files) > 1:
            first = self.files[0]
            if self.caption is None and any(f.caption != first.caption for f in self.files[1:]):
                out.append("the files were fitted with different captions; decoding with the first file's")
            if any((f.width, f.height, f.noise_seed) != (first.width, first.height, first.noise_seed)
                   for f in self.files[1:]):
                out.append(f"decoding at the first file's size ({first.width}x{first.height}) from its noise")
        return out


def _prefixed(e: VovError, i: int, count: int) -> VovError:
    return e if count == 1 else type(e)(f"file {i + 1}: {e}")


def ode_file(f: bitstream.VovFile) -> bitstream.VovFile:
    """File `f` with its best-of-N replay replaced by the plain ODE on the same grid and noise."""
    segments = [dataclasses.replace(s, search=b"") for s in f.segments]
    return dataclasses.replace(f, **bitstream.ODE_FIELDS, segments=segments)


def plan(datas: Sequence[bytes], options: EditOptions = EditOptions(), limits: Limits = Limits(),
         max_rank: int | None = None) -> EditPlan:
    """Every check that needs no model: the files (each against `limits`), that they merge, the
    weights, strength and caption, and the edited rank against `limits` and an engine's `max_rank`.

    BitstreamError for a bad file, BackboneMismatch for files of other backbones (or an engine too
    small for the edit), LimitExceeded past `limits`, UsageError for the rest.
    """
    count = len(datas)
    if not 1 <= count <= MAX_FILES:
        raise UsageError(f"an edit takes 1 to {MAX_FILES} files, not {count}")
    files = []
    for i, data in enumerate(datas):
        try:
            files.append(codec.parse(data, limits))
            codec.check_clips(files[-1])  # every clip of every file, before any is sampled
        except VovError as e:
            raise _prefixed(e, i, count) from None
    first = files[0]
    for i, f in enumerate(files[1:], 1):
        if (f.backbone, f.backbone_hash) != (first.backbone, first.backbone_hash):
            raise BackboneMismatch(f"file {i + 1} was made with backbone {f.backbone!r} ({f.backbone_hash.hex()}), "
                                   f"file 1 with {first.backbone!r} ({first.backbone_hash.hex()}): only files of one "
                                   f"backbone's weights merge")
        if f.frames != first.frames or [s.frames for s in f.segments] != [s.frames for s in first.segments]:
            raise UsageError(f"file {i + 1} has {f.frames} frames in {len(f.segments)} clips, file 1 {first.frames} "
                             f"in {len(first.segments)}: a merge pairs clip i with clip i, so the frames and clips "
                             f"must match")
    weights = (1.0 / count,) * count if options.weights is None else check_weights(options.weights, count)
    strength = check_number("strength", options.strength, STRENGTH_RANGE)
    caption = options.caption
    if caption is not None:
        if not isinstance(caption, str):
            raise UsageError("the caption must be text")
        try:
            size = len(caption.encode("utf-8"))
        except UnicodeEncodeError:
            raise UsageError("the caption is not valid UTF-8 text") from None
        if size > MAX_CAPTION_BYTES:
            raise UsageError(f"the caption is longer than {MAX_CAPTION_BYTES} bytes")
        if caption and first.backbone in backbones.REGISTRY and not backbones.REGISTRY[first.backbone].captions:
            raise UsageError(_no_captions(first.backbone))
    rank = sum(f.rank for f in files)
    check_rank(rank, limits.max_rank, "this decoder (VOV_MAX_RANK / --max-rank)")
    if max_rank:
        check_rank(rank, max_rank, "the served engine", BackboneMismatch)
    ode_instead = first.sampler == 1 and not options.replay
    if options.replay and count > 1:
        raise UsageError("replaying best-of-N noises decodes one file; a merge decodes with the ODE")
    header = ode_file(first) if ode_instead else first
    return EditPlan(files, header, weights, strength, caption, rank, ode_instead)


def _no_captions(name: str) -> str:
    return (f"backbone {name!r} is trained with the null caption only, so a caption edit means nothing on it "
            f"(merges and --strength work); caption edits need a text-conditioned backbone (wan, image)")


def check_backbone(the_plan: EditPlan, backbone: Backbone):
    """The edit's condition on this backbone (None: the file's own), after the checks that need it."""
    first = the_plan.files[0]
    if first.backbone != backbone.name or first.backbone_hash != backbone.content_hash:
        raise BackboneMismatch(f"the files were made with backbone {first.backbone!r} ({first.backbone_hash.hex()}), "
                               f"this decoder has {backbone.name!r} ({backbone.content_hash.hex()})")
    targets = [backbone.target_layers(f.targets) for f in the_plan.files]
    for i, layers in enumerate(targets[1:], 1):
        if layers != targets[0]:
            raise UsageError(f"file {i + 1} adapts other layers ({the_plan.files[i].targets}) than file 1 "
                             f"({first.targets}): only files with the same target layers merge")
    if the_plan.caption is None:
        return None
    if the_plan.caption and not backbone.max_caption_tokens:
        raise UsageError(_no_captions(backbone.name))
    return backbone.condition(the_plan.caption)


class EditedEngine:
    """`engine` with each clip's adapter replaced by the edit of the plan's files' clip: the codec's
    loop opens one session per clip, in order, with the first file's adapter set to that clip."""

    def __init__(self, the_plan: EditPlan, backbone: Backbone, engine: Engine):
        self.plan, self.backbone, self.engine = the_plan, backbone, engine
        self.condition = check_backbone(the_plan, backbone)
        self.others = []
        for i, f in enumerate(the_plan.files[1:], 1):
            try:
                self.others.append(codec.adapter_for(f, backbone, 0))
            except VovError as e:
                raise _prefixed(e, i, len(the_plan.files)) from None
        self.clip, self.edited = 0, None

    def open(self, adapter, condition=None):
        c = self.clip
        if c >= len(self.plan.header.segments):
            raise AssertionError("the decode loop opened more sessions than the file has clips")
        self.clip = c + 1
        if c:
            for f, other in zip(self.plan.files[1:], self.others):
                codec.set_clip(other, f, c)
        if self.edited is None:
            parts = [(adapter, self.plan.weights[0]), *zip(self.others, self.plan.weights[1:])]
            self.edited = EditedAdapter(self.backbone, parts, self.plan.strength)
        return self.engine.open(self.edited, condition if self.condition is None else self.condition)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.engine.decode(latents)

    def describe(self) -> str:
        return self.engine.describe()


def decode_plan(the_plan: EditPlan, backbone: Backbone, *, engine: Engine | None = None,
                on_step: Callable[[int, int], None] | None = None,
                limits: Limits = Limits()) -> Iterator[codec.DecodedClip]:
    """Decode a planned edit clip by clip through `engine` (default: torch in this process), exactly
    as `vov.codec.decode_clips` decodes a plain file."""
    edited = EditedEngine(the_plan, backbone, engine or TorchEngine(backbone))
    yield from codec.decode_clips(the_plan.header, backbone=backbone, engine=edited, on_step=on_step, limits=limits)


def edit_clips(datas: Sequence[bytes], options: EditOptions = EditOptions(), *, backbone: Backbone | None = None,
               engine: Engine | None = None, on_step: Callable[[int, int], None] | None = None,
               limits: Limits = Limits(), model: str | None = None, device: str | None = None,
               max_rank: int | None = None) -> Iterator[codec.DecodedClip]:
    """Plan and decode an edit of `datas` (.vov bytes), yielding each clip's frames as soon as they exist."""
    the_plan = plan(datas, options, limits, max_rank)
    backbone = backbone or codec.backbone_for(the_plan.header, model, device)
    yield from decode_plan(the_plan, backbone, engine=engine, on_step=on_step, limits=limits)


def edit(datas: Sequence[bytes], options: EditOptions = EditOptions(), *, backbone: Backbone | None = None,
         engine: Engine | None = None, on_step: Callable[[int, int], None] | None = None, limits: Limits = Limits(),
         model: str | None = None, device: str | None = None, max_rank: int | None = None) -> codec.Decoded:
    """All the edited frames at once (`edit_clips` streams them)."""
    import numpy as np

    the_plan = plan(datas, options, limits, max_rank)
    backbone = backbone or codec.backbone_for(the_plan.header, model, device)
    clips = [c.frames for c in decode_plan(the_plan, backbone, engine=engine, on_step=on_step, limits=limits)]
    return codec.Decoded(np.concatenate(clips) if len(clips) > 1 else clips[0], grey=the_plan.header.colour == 1,
                         file=the_plan.header)
