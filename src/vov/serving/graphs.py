"""A backbone's denoiser and latent decoder as ONNX graphs that serve every file.

The exporter knows no backbone's internals: it takes `backbone.export_signature()`,
`backbone.export_denoiser()`, `backbone.export_latent_decoder(latent_frames)` and, for a latent
decoder with a causal cache, `backbone.export_latent_decoder_chunk(first)` (the plain torch modules
of the backbone interface) and adds one thing, the adaptation as an input: the slot layers
(vov.serving.contract.LoraLayout) become `RowLoraLinear`s (vov.method.lora) that read their factors
from the input `lora`, one packed row per batch row. The exporter finds them in the export module by
the identity of their weights with the backbone's adaptable layers, so it needs no layer names of
its own.

Graphs whose weights pass 1 GiB are written with external data (`model.onnx.data` beside the graph):
protobuf, and so a single .onnx file, stops at 2 GB.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vov.errors import UsageError
from vov.limits import MAX_SIDE, max_padded_pixels
from vov.method.lora import RowContext, RowLoraLinear, find_layers, inject
from vov.serving.contract import ANY_FRAMES, LoraLayout, cache_inputs, cache_outputs
from vov.serving.engines.onnx import ort_session

OPSET = 20
EXTERNAL_DATA_BYTES = 1 << 30


# --------------------------------------------------------------------------------------------
# the exportable modules: the backbone's own, with the adaptation as an input


def lora_module(backbone, layout: LoraLayout) -> nn.Module:
    """`backbone.export_denoiser()` whose slot layers read their factors from a `lora` input."""
    module = backbone.export_denoiser()
    layers = backbone.adaptable_layers()
    places = find_layers(module, [layers[slot.name] for slot in layout.slots])
    if None in places:
        missing = layout.slots[places.index(None)].name
        raise UsageError(f"backbone {backbone.name!r}: its export module does not use layer {missing!r}")
    if any(p.dtype != torch.float32 for p in module.parameters()):
        module = copy.deepcopy(module).float()  # the backbone's own weights stay as they are
    context = RowContext()
    inject(module, places, lambda i, base: RowLoraLinear(base, layout.slots[i].offset, layout.max_rank, context))

    class LoraDenoiser(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def run(self, lora, *args):
            context.lora = lora
            try:
                return self.inner(*args).float()
            finally:
                context.lora = None

    class WithoutMask(LoraDenoiser):
        def forward(self, latents, t, embeddings, lora):
            return self.run(lora, latents, t, embeddings)

    class WithMask(LoraDenoiser):
        def forward(self, latents, t, embeddings, mask, lora):
            return self.run(lora, latents, t, embeddings, mask)

    return (WithMask if backbone.export_signature().takes_mask else WithoutMask)().eval()


# --------------------------------------------------------------------------------------------
# shapes


@dataclass(frozen=True)
class Axes:
    """What the exported graphs take: the bounds of every dynamic axis."""

    latent_channels: int
    text_tokens: int
    text_dim: int
    takes_mask: bool
    spatial_multiple: int  # latent sides are multiples of this (the transformer's patch)
    max_frames: int  # latent frames of one denoiser call
    max_side: int  # latent cells of a side
    max_cells: int  # latent cells of a frame

    @classmethod
    def of(cls, backbone) -> "Axes":
        signature = backbone.export_signature()
        f = signature.latent_factor
        multiple = max(1, backbone.pixel_multiple // f)
        frames = backbone.latent_frames(max(1, backbone.clip_frames))
        cells = max_padded_pixels(backbone.pixel_multiple) // f ** 2
        return cls(signature.latent_channels, signature.text_tokens, signature.text_dim, signature.takes_mask,
                   multiple, frames, -(-MAX_SIDE // f), cells)


def _dim(name: str, low: int, high: int, multiple: int = 1):
    from torch.export import Dim

    if multiple == 1:
        return Dim(name, min=low, max=high)
    return multiple * Dim(name, min=low, max=max(low + 1, high // multiple))


def denoiser_example(axes: Axes, layout: LoraLayout, device, frames: int):
    """Example inputs (a batch of 2, so that no size is 1 unless it must be) and their dynamic axes.

    The caption's tokens are not an axis: a graph takes exactly `text_tokens` of them, and where it
    takes a mask a shorter caption is padded with masked-out zeros (diffusers' Qwen-Image turns the
    caption length into a constant while tracing; padded, the output is the same)."""
    g = torch.Generator().manual_seed(0)
    m = axes.spatial_multiple
    tokens = axes.text_tokens
    latents = torch.randn(2, axes.latent_channels, frames, 4 * m, 6 * m, generator=g)
    t = torch.rand(2, generator=g)
    embeddings = torch.randn(2, tokens, axes.text_dim, generator=g)
    mask = torch.ones(2, tokens, dtype=torch.bool)
    mask[1, max(1, tokens // 2):] = False
    lora = torch.randn(2, layout.total, generator=g) * 0.01
    batch = _dim("batch", 1, 1024)
    latent_axes = {0: batch, 3: _dim("height", 2, axes.max_side, m), 4: _dim("width", 2, axes.max_side, m)}
    if frames > 1:
        latent_axes[2] = _dim("frames", 1, axes.max_frames)
    dynamic = {"latents": latent_axes, "t": {0: batch}, "embeddings": {0: batch}, "lora": {0: batch}}
    args = [latents, t, embeddings]
    if axes.takes_mask:
        dynamic["mask"] = {0: batch}
        args.append(mask)
    args.append(lora)
    return tuple(a.to(device) for a in args), dynamic


def denoiser_inputs(axes: Axes) -> list[str]:
    return ["latents", "t", "embeddings", *(["mask"] if axes.takes_mask else []), "lora"]


def _module_device(module):
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _weight_bytes(module) -> int:
    return sum(p.numel() * 4 for p in module.parameters()) + sum(b.numel() * 4 for b in module.buffers())


def _export(module, args, path: Path, input_names, output_names, dynamic_shapes) -> bool:
    """torch's dynamo exporter into `path`, atomically; True when the weights went to external data."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("torch.export").setLevel(logging.ERROR)
    external = _weight_bytes(module) > EXTERNAL_DATA_BYTES
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=path.parent))
    try:
        target = work / path.name
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            if external:
                torch.onnx.export(module, args, str(target), input_names=input_names, output_names=output_names,
                                  dynamic_shapes=dynamic_shapes, opset_version=OPSET, dynamo=True,
                                  external_data=True, verbose=False)
            else:
                buffer = io.BytesIO()
                torch.onnx.export(module, args, buffer, input_names=input_names, output_names=output_names,
                                  dynamic_shapes=dynamic_shapes, opset_version=OPSET, dynamo=True,
                                  external_data=False, verbose=False)
                target.write_bytes(buffer.getvalue())
        data = path.with_name(path.name + ".data")
        if (work / data.name).exists():
            os.replace(work / data.name, data)
        elif data.exists():
            data.unlink()
        os.replace(target, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return external


def export_denoiser(backbone, layout: LoraLayout, path: str | Path) -> None:
    """The adapted denoiser as ONNX, with a dynamic frames axis when the backbone codes clips."""
    _export_denoiser(backbone, layout, Path(path), None)


def _export_denoiser(backbone, layout: LoraLayout, path: Path, frames: int | None) -> None:
    axes = Axes.of(backbone)
    dynamic_frames = frames is None and axes.max_frames > 1
    module = lora_module(backbone, layout)
    args, dynamic = denoiser_example(axes, layout, _module_device(module), 2 if dynamic_frames else (frames or 1))
    _export(module, args, path, denoiser_inputs(axes), ["velocity"], dynamic)


def export_vae_decoder(backbone, latent_frames, path: str | Path) -> None:
    """The latent decoder for `latent_frames` frames (ANY_FRAMES: a dynamic frames axis) as ONNX."""
    axes = Axes.of(backbone)
    dynamic_frames = latent_frames == ANY_FRAMES
    module = backbone.export_latent_decoder(2 if dynamic_frames else int(latent_frames)).eval()
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, axes.latent_channels, 2 if dynamic_frames else int(latent_frames), 4, 6, generator=g)
    latent_axes = {0: _dim("batch", 1, 1024), 3: _dim("height", 2, axes.max_side), 4: _dim("width", 2, axes.max_side)}
    if dynamic_frames:
        latent_axes[2] = _dim("frames", 1, axes.max_frames)
    if any(p.dtype != torch.float32 for p in module.parameters()):
        module = copy.deepcopy(module).float()
    _export(module, (latents.to(_module_device(module)),), Path(path), ["latents"], ["pixels"],
            {"latents": latent_axes})


def chunk_caches(backbone) -> list[tuple[int, int]]:
    """(channels, scale) of every cache of the backbone's latent-decoder chunk, in order: the cache
    holds CACHE_FRAMES frames of `scale` times the latent height and width. Read from the first
    chunk on a small example."""
    from vov.backbones.wan_chunks import CACHE_FRAMES

    axes = Axes.of(backbone)
    module = backbone.export_latent_decoder_chunk(True)
    h, w = 4, 6
    with torch.no_grad():
        caches = module(torch.zeros(1, axes.latent_channels, 1, h, w, device=_module_device(module)))[1:]
    found = []
    for cache in caches:
        scale = cache.shape[3] // h
        if cache.shape[2] != CACHE_FRAMES or tuple(cache.shape[3:]) != (scale * h, scale * w) or scale < 1:
            raise UsageError(f"backbone {backbone.name!r}: a latent-decoder cache of shape {tuple(cache.shape)} "
                             f"is not {CACHE_FRAMES} frames at a multiple of the latent size")
        found.append((int(cache.shape[1]), int(scale)))
    return found


def export_decoder_chunk(backbone, first: bool, path: str | Path) -> list[tuple[int, int]]:
    """The latent decoder of one latent frame as ONNX (the clip's first, or a later one with the cache
    of the frames before as inputs `cache_i`), its cache as outputs `cache_i_next`: one graph for
    every clip length. Returns `chunk_caches(backbone)`."""
    from vov.backbones.wan_chunks import CACHE_FRAMES

    axes = Axes.of(backbone)
    caches = chunk_caches(backbone)
    module = backbone.export_latent_decoder_chunk(first)
    if any(p.dtype != torch.float32 for p in module.parameters()):
        module = copy.deepcopy(module).float()
    g = torch.Generator().manual_seed(1)
    h, w = 4, 6
    batch, height, width = _dim("batch", 1, 1024), _dim("height", 2, axes.max_side), _dim("width", 2, axes.max_side)
    args = [torch.randn(2, axes.latent_channels, 1, h, w, generator=g)]
    dynamic = {"latents": {0: batch, 3: height, 4: width}}
    if not first:
        args += [torch.randn(2, c, CACHE_FRAMES, s * h, s * w, generator=g) * 0.1 for c, s in caches]
        dynamic["cache"] = tuple({0: batch, 3: height if s == 1 else s * height, 4: width if s == 1 else s * width}
                                 for _, s in caches)
    device = _module_device(module)
    names = ["latents", *([] if first else cache_inputs(len(caches)))]
    _export(module, tuple(a.to(device) for a in args), Path(path), names, ["pixels", *cache_outputs(len(caches))],
            dynamic)
    return caches


def graph_facts(path: Path) -> dict:
    """What an exported graph takes, read from the file: its inputs, the latents' frames (a count, or
    ANY_FRAMES for a symbolic axis) and whether its weights are external data."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    latents = next(i for i in graph.input if i.name == "latents")
    dim = latents.type.tensor_type.shape.dim[2]
    frames = int(dim.dim_value) if dim.HasField("dim_value") else ANY_FRAMES
    return {"inputs": inputs, "frames": frames, "external_data": path.with_name(path.name + ".data").exists()}


def _probe(path: Path, feed: dict, expected: np.ndarray) -> bool:
    """Whether the graph at `path` reproduces `expected` on `feed` (finite, and within 1e-3 relative)."""
    got = ort_session(path).run(None, feed)[0]
    scale = 1.0 + float(np.abs(expected).max())
    return bool(np.isfinite(got).all() and np.abs(got - expected).max() <= 1e-3 * scale)


def _probe_one_frame_denoiser(backbone, layout: LoraLayout, path: Path) -> bool:
    """A graph with a symbolic frames axis must still be right for one frame (every image)."""
    axes = Axes.of(backbone)
    module = lora_module(backbone, layout)
    args, _ = denoiser_example(axes, layout, _module_device(module), 1)
    args = tuple(a[:1] for a in args)
    with torch.no_grad():
        expected = module(*args).cpu().numpy()
    return _probe(path, {n: a.cpu().numpy() for n, a in zip(denoiser_inputs(axes), args)}, expected)


def _probe_one_frame_decoder(backbone, path: Path) -> bool:
    axes = Axes.of(backbone)
    latents = torch.randn(1, axes.latent_channels, 1, 4, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = backbone.export_latent_decoder(1)(latents.to(backbone.device)).float().cpu().numpy()
    return _probe(path, {"latents": latents.numpy()}, expected)


def is_chunked(backbone) -> bool:
    """Whether the backbone's latent decoder is exported as one latent frame with its causal cache
    (`export_decoder_chunk`), looped over a clip by whoever serves it."""
    return backbone.export_latent_decoder_chunk(True) is not None


def latent_decoder_frames(backbone) -> list:
    """The latent-frame counts to export `export_latent_decoder` graphs for: [1] for an image
    backbone, else [ANY_FRAMES], one graph for every count: where the decoder maps frames one to one,
    or looped over the frames (`is_chunked`: that graph is the loop of the two chunk graphs)."""
    clip = backbone.latent_frames(max(1, backbone.clip_frames))
    if clip == 1:
        return [1]
    if backbone.temporal_factor != 1 and not is_chunked(backbone):
        raise UsageError(f"backbone {backbone.name!r}: its latent decoder neither maps frames one to one nor "
                         f"exports one latent frame with its cache")
    return [ANY_FRAMES]


def write_denoiser(backbone, layout: LoraLayout, path: Path, log) -> dict:
    """The adapted denoiser at `path`, with a symbolic frames axis where that is right for one frame
    too (else for one frame, said through `log`); its `graph_facts`."""
    export_denoiser(backbone, layout, path)
    if graph_facts(path)["frames"] == ANY_FRAMES and not _probe_one_frame_denoiser(backbone, layout, path):
        log(f"warning: backbone {backbone.name!r}'s denoiser is not right for one frame with a symbolic frame "
            f"count; exporting it for one frame (images) only")
        _export_denoiser(backbone, layout, path, 1)
    return graph_facts(path)


def write_latent_decoder(backbone, latent_frames, path: Path, log) -> dict:
    """The latent decoder for `latent_frames` at `path`, as `write_denoiser` does for the denoiser."""
    export_vae_decoder(backbone, latent_frames, path)
    facts = graph_facts(path)
    if facts["frames"] == ANY_FRAMES and not _probe_one_frame_decoder(backbone, path):
        log(f"warning: backbone {backbone.name!r}'s latent decoder is not right for one frame with a "
            f"symbolic frame count; exporting it for one frame only")
        export_vae_decoder(backbone, 1, path)
        facts = graph_facts(path)
    return facts
