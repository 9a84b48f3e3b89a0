"""`vov export`: a backbone's denoiser and latent decoder as ONNX graphs that serve every file.

The exporter knows no backbone's internals: it takes `backbone.export_signature()`,
`backbone.export_denoiser()` and `backbone.export_latent_decoder(latent_frames)` (the plain torch
modules of the backbone interface) and adds one thing, the adaptation as an input.

The adaptation is the input `lora` of the exported denoiser, so one engine serves every file made for
its backbone. A file's adapter is expanded into the LoRA factors of its layers (`LoraLayout.compact`:
each adapted layer's A (r x in) and B (out x r) at the file's own rank), and those are zero-padded
into one flat row (`LoraLayout.unpack`) with a place for every slot layer at the engine's maximum
rank R_max. The graph slices the row per layer and computes `W x + B (A x)`; zero padding is exact.
The batch axis is dynamic and each row of a batch carries its own adaptation and caption.

Slots are the layers that any of the backbone's target presets names, in module order. The exporter
finds them in the export module by identity of their weights with the backbone's adaptable layers,
so it needs no layer names of its own. A file whose targets fall outside the slots, or whose rank
exceeds R_max, cannot use the engine (`LoraLayout.compact` says so).

The Triton model repository, laid out from the templates in `model_repository/<variant>`:

    REPO/denoiser_session/   what the decoder talks to: Triton's sequence batcher keeps each decode's
                             adaptation and caption from its first request (Python backend, numpy
                             only) and calls `denoiser` for every step (docs/services.md)
    REPO/denoiser/1/model.onnx       latents (B,C,F,h,w), t (B,), embeddings (B,L,D) [, mask (B,L)],
                                     lora (B,total) -> velocity; ONNX Runtime on CPU, a TensorRT plan on GPU
    REPO/vae_decoder/1/model.onnx    latents -> pixels in [0, 1]: images, and every frame count when
                                     the latent decoder maps frames one to one
    REPO/vae_decoder_fK/1/model.onnx one per latent-frame count K where the VAE bakes the count (Wan)
    REPO/vov_engine.json             backbone identity, signature, slot layout, graphs and their axes
    REPO/build_plans.sh              (gpu) trtexec shape profiles for every graph

Graphs whose weights pass 1 GiB are written with external data (`model.onnx.data` beside the graph):
protobuf, and so a single .onnx file, stops at 2 GB.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vov.errors import UsageError
from vov.serving.contract import (ANY_FRAMES, DECODER_MODEL, DEFAULT_MAX_RANK, DENOISER_MODEL, ENGINE_FILE, LAYOUT_FILE,
                                  SESSION_MODEL, LoraLayout, decoder_model, read_engine)

EXPORT_VERSION = 3  # raised whenever the repository's files change meaning; older exports are redone
PLAN_SCRIPT = "build_plans.sh"
MAX_BATCH = 16  # Triton's max_batch_size: rows of concurrent decodes batched per model call
DEFAULT_MAX_SEQUENCES = 32  # decodes whose adaptation Triton holds at once (per session-model instance)
DEFAULT_IDLE_SECONDS = 60  # a held adaptation whose decode sends nothing for this long is dropped
OPSET = 20
EXTERNAL_DATA_BYTES = 1 << 30
VARIANTS = ("cpu", "gpu")


# --------------------------------------------------------------------------------------------
# the exportable modules: the backbone's own, with the adaptation as an input


def _lora_module(backbone, layout: LoraLayout):
    """`backbone.export_denoiser()` whose slot layers read their factors from a `lora` input."""
    import torch
    from torch import nn

    from vov.method.lora import RowContext, RowLoraLinear, find_layers, inject

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
        from vov.limits import MAX_SIDE, max_padded_pixels

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


def _denoiser_example(axes: Axes, layout: LoraLayout, device, frames: int):
    """Example inputs (a batch of 2, so that no size is 1 unless it must be) and their dynamic axes.

    The caption's tokens are not an axis: a graph takes exactly `text_tokens` of them, and where it
    takes a mask a shorter caption is padded with masked-out zeros (diffusers' Qwen-Image turns the
    caption length into a constant while tracing; padded, the output is the same)."""
    import torch

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
    import torch

    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _weight_bytes(module) -> int:
    return sum(p.numel() * 4 for p in module.parameters()) + sum(b.numel() * 4 for b in module.buffers())


def _export(module, args, path: Path, input_names, output_names, dynamic_shapes) -> bool:
    """torch's dynamo exporter into `path`, atomically; True when the weights went to external data."""
    import torch

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
    module = _lora_module(backbone, layout)
    args, dynamic = _denoiser_example(axes, layout, _module_device(module), 2 if dynamic_frames else (frames or 1))
    _export(module, args, path, denoiser_inputs(axes), ["velocity"], dynamic)


def export_vae_decoder(backbone, latent_frames, path: str | Path) -> None:
    """The latent decoder for `latent_frames` frames (ANY_FRAMES: a dynamic frames axis) as ONNX."""
    import torch

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
    from vov.serving.engines.onnx import ort_session

    got = ort_session(path).run(None, feed)[0]
    scale = 1.0 + float(np.abs(expected).max())
    return bool(np.isfinite(got).all() and np.abs(got - expected).max() <= 1e-3 * scale)


def _probe_one_frame_denoiser(backbone, layout: LoraLayout, path: Path) -> bool:
    """A graph with a symbolic frames axis must still be right for one frame (every image)."""
    import torch

    axes = Axes.of(backbone)
    module = _lora_module(backbone, layout)
    args, _ = _denoiser_example(axes, layout, _module_device(module), 1)
    args = tuple(a[:1] for a in args)
    with torch.no_grad():
        expected = module(*args).cpu().numpy()
    return _probe(path, {n: a.cpu().numpy() for n, a in zip(denoiser_inputs(axes), args)}, expected)


def _probe_one_frame_decoder(backbone, path: Path) -> bool:
    import torch

    axes = Axes.of(backbone)
    latents = torch.randn(1, axes.latent_channels, 1, 4, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = backbone.export_latent_decoder(1)(latents.to(backbone.device)).float().cpu().numpy()
    return _probe(path, {"latents": latents.numpy()}, expected)


def latent_decoder_frames(backbone, requested: list[int] | None = None) -> list:
    """The latent-frame counts to export decoders for: [ANY_FRAMES] when one graph serves every count
    (the decoder maps frames one to one), [1] for an image backbone, else one graph per count
    (the VAE's causal cache bakes the count into a traced graph): images and a full clip by default."""
    clip = backbone.latent_frames(max(1, backbone.clip_frames))
    if clip == 1:
        return [1]
    if backbone.temporal_factor == 1:
        return [ANY_FRAMES]
    counts = sorted({1, clip} if not requested else set(requested) | {1})
    for k in counts:
        if not 1 <= k <= clip:
            raise UsageError(f"latent frame counts run from 1 to {clip} on backbone {backbone.name!r}, not {k}")
    return counts


# --------------------------------------------------------------------------------------------
# the model repository


def templates_dir(variant: str = "cpu") -> Path:
    """The checked-in repository templates (config.pbtxt, model.py) for `variant`."""
    env = os.environ.get("VOV_MODEL_TEMPLATES")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "model_repository" / variant)
    try:
        import vov_model_repository  # the templates as shipped in an installed distribution

        candidates.append(Path(vov_model_repository.__file__).parent / variant)
    except ImportError:
        pass
    for c in candidates:
        if (c / DENOISER_MODEL / "config.pbtxt").exists():
            return c
    raise UsageError("the Triton model templates (model_repository/) were not found; set VOV_MODEL_TEMPLATES")


def graph_files(info: dict) -> list[str]:
    """The files an engine file's repository must hold, relative to it: its graphs and the session model."""
    models = [DENOISER_MODEL, *info.get("latent_decoders", {}).values()]
    return [f"{m}/1/model.onnx" for m in models] + [f"{SESSION_MODEL}/1/model.py", f"{SESSION_MODEL}/1/{LAYOUT_FILE}"]


def is_current(repository: str | Path, backbone, max_rank: int, variant: str = "cpu") -> bool:
    info = read_engine(repository)
    repo = Path(repository)
    return bool(
        info and info.get("export_version") == EXPORT_VERSION and info.get("backbone") == backbone.name
        and info.get("content_hash") == backbone.content_hash.hex()
        and info.get("layout", {}).get("max_rank") == max_rank and info.get("variant", "cpu") == variant
        and all((repo / f).exists() for f in graph_files(info))
    )


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    return template


def _python_model(variant_dir: Path, model: str) -> Path | None:
    """The Python-backend script of `model` in this variant: the session model is the same on CPU and
    GPU nodes (its template lives with the cpu variant's), and on CPU every graph runs in the ONNX
    Runtime runner (`denoiser/1/model.py`)."""
    cpu = variant_dir.parent / "cpu"
    if model == SESSION_MODEL:
        return cpu / SESSION_MODEL / "1" / "model.py"
    if variant_dir.name == "cpu":
        return cpu / DENOISER_MODEL / "1" / "model.py"
    return None


def _write_model(source: Path, repo: Path, template: str, name: str, values: dict[str, str]) -> None:
    """config.pbtxt of `template` (as model `name`) and its Python-backend script, if it has one."""
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    config = _fill((source / template / "config.pbtxt").read_text(), {**values, "MODEL_NAME": name})
    (repo / name / "config.pbtxt").write_text(config)
    script = _python_model(source, template)
    if script is not None:
        shutil.copyfile(script, repo / name / "1" / "model.py")


def export_repository(backbone, repository: str | Path, max_rank: int = DEFAULT_MAX_RANK,
                      variant: str = "cpu", threads: int = 0, log=print, max_batch: int = MAX_BATCH,
                      max_sequences: int = DEFAULT_MAX_SEQUENCES, idle_seconds: int = DEFAULT_IDLE_SECONDS,
                      latent_frames: list[int] | None = None, plan_shapes: dict | None = None) -> dict:
    """Lay out a Triton repository at `repository` and build its ONNX graphs for `backbone`.

    config.pbtxt comes from the templates with this installation's values filled in: the import
    path of the environment that holds ONNX Runtime (the Python backend's stub ignores
    PYTHONPATH), the thread count, the bounds of every input, and the backbone identity the decoder
    checks before use.
    """
    import site

    if variant not in VARIANTS:
        raise UsageError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    if not 1 <= max_batch <= 256:
        raise UsageError(f"the maximum batch must be between 1 and 256, not {max_batch}")
    if not 1 <= max_sequences <= 4096:
        raise UsageError(f"the number of held sequences must be between 1 and 4096, not {max_sequences}")
    repo = Path(repository)
    source = templates_dir(variant)
    if source.resolve() == repo.resolve():
        raise UsageError(f"{repo} holds the templates; export into another directory")
    layout = LoraLayout.for_backbone(backbone, max_rank)
    axes = Axes.of(backbone)
    counts = latent_decoder_frames(backbone, latent_frames)
    decoders = {str(k): decoder_model(k) for k in counts}
    if (repo / ENGINE_FILE).exists():
        (repo / ENGINE_FILE).unlink()  # not current until every graph is written
    for stale in repo.glob(f"{DECODER_MODEL}_f*"):
        if stale.name not in decoders.values():
            shutil.rmtree(stale, ignore_errors=True)

    values = {"PYTHON_PATH": os.pathsep.join(site.getsitepackages()), "INTRA_OP_THREADS": str(threads),
              "BACKBONE": backbone.name, "CONTENT_HASH": backbone.content_hash.hex(), "MAX_RANK": str(max_rank),
              "MAX_BATCH": str(max_batch), "LATENT_CHANNELS": str(axes.latent_channels),
              "TEXT_TOKENS": str(axes.text_tokens), "TEXT_DIM": str(axes.text_dim),
              "TAKES_MASK": "1" if axes.takes_mask else "0", "LORA_TOTAL": str(layout.total),
              "LAYOUT_DIGEST": layout.digest(), "MAX_LATENT_FRAMES": str(axes.max_frames),
              "MAX_LATENT_CELLS": str(axes.max_cells), "MAX_SEQUENCES": str(max_sequences),
              "IDLE_MICROSECONDS": str(idle_seconds * 1_000_000), "IDLE_SECONDS": str(idle_seconds),
              "DENOISER_MODEL": DENOISER_MODEL,
              "MASK_INPUT": (',\n  { name: "mask" data_type: TYPE_BOOL dims: [ -1 ] }' if axes.takes_mask else "")}

    log(f"exporting the denoiser ({len(layout.slots)} LoRA slots, R_max {max_rank}, lora row {layout.total} floats)")
    path = repo / DENOISER_MODEL / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    export_denoiser(backbone, layout, path)
    if graph_facts(path)["frames"] == ANY_FRAMES and not _probe_one_frame_denoiser(backbone, layout, path):
        log(f"warning: backbone {backbone.name!r}'s denoiser is not right for one frame with a symbolic frame "
            f"count; exporting it for one frame (images) only")
        _export_denoiser(backbone, layout, path, 1)
    denoiser = graph_facts(path)
    denoiser_frames = axes.max_frames if denoiser["frames"] == ANY_FRAMES else denoiser["frames"]
    _write_model(source, repo, DENOISER_MODEL, DENOISER_MODEL, {
        **values, "MAX_LATENT_FRAMES": str(denoiser_frames),
        "FRAMES": "-1" if denoiser["frames"] == ANY_FRAMES else str(denoiser["frames"])})

    graphs = {}
    for k in counts:
        name = decoder_model(k)
        path = repo / name / "1" / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"exporting the latent decoder ({'any number of' if k == ANY_FRAMES else k} latent frame"
            f"{'' if k == 1 else 's'})")
        export_vae_decoder(backbone, k, path)
        facts = graph_facts(path)
        if facts["frames"] == ANY_FRAMES and not _probe_one_frame_decoder(backbone, path):
            log(f"warning: backbone {backbone.name!r}'s latent decoder is not right for one frame with a "
                f"symbolic frame count; exporting it for one frame only")
            export_vae_decoder(backbone, 1, path)
            facts = graph_facts(path)
        key = ANY_FRAMES if facts["frames"] == ANY_FRAMES else str(facts["frames"])
        graphs[key] = facts
        _write_model(source, repo, DECODER_MODEL, name, {
            **values, "FRAMES": "-1" if key == ANY_FRAMES else key,
            "MAX_LATENT_FRAMES": str(axes.max_frames if key == ANY_FRAMES else key)})
    decoders = {k: decoder_model(ANY_FRAMES if k == ANY_FRAMES else int(k)) for k in graphs}
    _write_model(source, repo, SESSION_MODEL, SESSION_MODEL, {
        **values, "MAX_LATENT_FRAMES": str(denoiser_frames), "LATENT_DECODERS": json.dumps(decoders).replace('"', "'")})
    (repo / SESSION_MODEL / "1" / LAYOUT_FILE).write_text(json.dumps(layout.to_json()))

    session_bytes = 4 * layout.total + 4 * axes.text_tokens * axes.text_dim + axes.text_tokens
    info = {"export_version": EXPORT_VERSION, "backbone": backbone.name, "content_hash": backbone.content_hash.hex(),
            "opset": OPSET, "variant": variant,
            "signature": asdict(backbone.export_signature()), "axes": asdict(axes),
            "layout": layout.to_json(), "layout_digest": layout.digest(),
            "session": {"model": SESSION_MODEL, "max_sequences": max_sequences, "idle_seconds": idle_seconds,
                        "bytes_per_sequence": session_bytes, "max_bytes_per_instance": session_bytes * max_sequences},
            "denoiser": {"model": DENOISER_MODEL, **denoiser, "max_frames": denoiser_frames},
            "latent_decoders": decoders,
            "latent_decoder_graphs": {decoders[k]: g for k, g in graphs.items()},
            "latent_decoder_note": ("one graph serves every latent-frame count" if ANY_FRAMES in decoders else
                                    "one graph per latent-frame count: the VAE's causal cache bakes the count "
                                    "into a traced graph" if axes.max_frames > 1 else "one frame (images)"),
            "max_batch": max_batch}
    if variant == "gpu":
        script = repo / PLAN_SCRIPT
        script.write_text(plan_script(info, **(plan_shapes or {})))
        script.chmod(0o755)
        info["plans"] = PLAN_SCRIPT
        log(f"TensorRT plans are built on a GPU node by {script} (trtexec, from the same ONNX files)")
    (repo / ENGINE_FILE).write_text(json.dumps(info, indent=1))
    return info


def plan_script(info: dict, opt_batch: int | None = None, opt_frames: int = 1, opt_size: tuple[int, int] = (64, 96),
                max_size: tuple[int, int] | None = None) -> str:
    """A shell script that turns the exported ONNX graphs into TensorRT plans with trtexec.

    It runs on a GPU node with TensorRT (the official Triton container has trtexec); plans are
    specific to the GPU and TensorRT version, so they are built where they are served. Each graph's
    profile spans one row to the repository's max batch, its frames (one, every count up to a clip,
    or its own count), and latent sides from the smallest the transformer takes up to the decode
    limits' longest side on both axes (portrait and landscape); the optimum is `opt_batch` rows of
    `opt_frames` latent frames of `opt_size` latent cells (default: 8 Kodak-sized images).
    """
    axes = info["axes"]
    c, m = axes["latent_channels"], axes["spatial_multiple"]
    total = LoraLayout.from_json(info["layout"]).total
    max_batch = info["max_batch"]
    opt_batch = min(max_batch, opt_batch or 8)
    side = -(-axes["max_side"] // m) * m
    max_h, max_w = max_size or (side, side)
    low = 2 * m
    tokens = axes["text_tokens"]

    def denoiser(batch: int, frames: int, h: int, w: int, text: int) -> str:
        shapes = [f"latents:{batch}x{c}x{frames}x{h}x{w}", f"t:{batch}",
                  f"embeddings:{batch}x{text}x{axes['text_dim']}"]
        if axes["takes_mask"]:
            shapes.append(f"mask:{batch}x{text}")
        return ",".join(shapes + [f"lora:{batch}x{total}"])

    def decoder(batch: int, frames: int, h: int, w: int) -> str:
        return f"latents:{batch}x{c}x{frames}x{h}x{w}"

    den = info["denoiser"]
    frames_max = den.get("max_frames", 1)
    lines = ["#!/bin/sh",
             "# Build the TensorRT plans of this repository from its ONNX graphs (generated by vov export).",
             "# Each profile: --minShapes one row of the smallest input, --optShapes the expected load,",
             "# --maxShapes the most a request may send (the bounds Triton's configs and the session model check).",
             "set -eu", 'cd "$(dirname "$0")"', 'TRTEXEC="${TRTEXEC:-trtexec}"']

    def build(model: str, lo: str, opt: str, hi: str) -> None:
        lines.append(f'"$TRTEXEC" --onnx={model}/1/model.onnx --saveEngine={model}/1/model.plan --fp16 '
                     f"--minShapes={lo} --optShapes={opt} --maxShapes={hi}")

    build(DENOISER_MODEL, denoiser(1, 1, low, low, tokens),
          denoiser(opt_batch, min(opt_frames, frames_max), *opt_size, tokens),
          denoiser(max_batch, frames_max, max_h, max_w, tokens))
    for key, model in info["latent_decoders"].items():
        frames = axes["max_frames"] if key == ANY_FRAMES else int(key)
        first = 1 if key == ANY_FRAMES else frames
        build(model, decoder(1, first, 2, 2), decoder(opt_batch, first if key != ANY_FRAMES else 1, *opt_size),
              decoder(max_batch, frames, max_h, max_w))
    return "\n".join(lines) + "\n"


def default_repository(backbone_name: str) -> Path:
    """~/.cache/vov/triton/BACKBONE-ENV: one per Python environment, because the configs name the
    environment's site-packages (the Python backend's stub ignores PYTHONPATH), so a repository
    exported from one checkout's environment must not be served from another's."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    env = hashlib.sha256(os.path.realpath(sys.prefix).encode()).hexdigest()[:10]
    return Path(base) / "vov" / "triton" / f"{backbone_name}-{env}"


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"a size is WIDTHxHEIGHT in pixels, not {text!r}") from None
    return w, h


def add_arguments(parser) -> None:
    parser.add_argument("--backbone", default="embedded", help="foundation model (default: embedded)")
    parser.add_argument("--model", help="the backbone's weights: a folder or hub id (default: the backbone's own)")
    parser.add_argument("--device", help="where the backbone is loaded for the export (cpu, cuda, cuda:N)")
    parser.add_argument("--repository", help="Triton model repository to write (default: "
                                             "~/.cache/vov/triton/BACKBONE-ENV, one per Python environment)")
    parser.add_argument("--max-rank", type=int, default=DEFAULT_MAX_RANK,
                        help=f"largest adapter rank the engine serves (default {DEFAULT_MAX_RANK})")
    parser.add_argument("--variant", choices=VARIANTS, default="cpu",
                        help="cpu: Python backend + ONNX Runtime; gpu: TensorRT plans, built on the GPU node by "
                             f"the {PLAN_SCRIPT} written into the repository (default cpu)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per Triton instance (0: auto)")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH,
                        help=f"rows of one model call: Triton's max_batch_size and the plans' largest batch "
                             f"(default {MAX_BATCH})")
    parser.add_argument("--max-sequences", type=int, default=DEFAULT_MAX_SEQUENCES,
                        help=f"decodes whose adaptation Triton holds at once (default {DEFAULT_MAX_SEQUENCES})")
    parser.add_argument("--latent-frames", help="latent-frame counts to export latent decoders for, comma-separated, "
                                                "where the VAE bakes the count (default: 1 and a full clip's)")
    parser.add_argument("--plan-opt", metavar="BATCHxFRAMESxWIDTHxHEIGHT",
                        help="the TensorRT profiles' optimum in pixels (default 8x1x768x512; Wan: 1x81x832x480)")
    parser.add_argument("--check", action="store_true", help="compare the ONNX graphs with torch on random inputs")
    parser.add_argument("--force", action="store_true", help="export even if the repository is current")


def _plan_shapes(text: str | None, backbone) -> dict:
    if not text:
        return {}
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"--plan-opt is BATCHxFRAMESxWIDTHxHEIGHT, not {text!r}")
    batch, frames, w, h = (int(p) for p in parts)
    f = backbone.latent_factor
    m = max(1, backbone.pixel_multiple // f)
    cells = lambda n: max(2 * m, -(-n // backbone.pixel_multiple) * m)  # noqa: E731
    return {"opt_batch": batch, "opt_frames": backbone.latent_frames(frames), "opt_size": (cells(h), cells(w))}


def run(args) -> None:
    from vov import backbones

    if not 1 <= args.max_rank <= 64:
        raise UsageError(f"--max-rank must be between 1 and 64, not {args.max_rank}")
    frames = None
    if args.latent_frames:
        try:
            frames = [int(v) for v in args.latent_frames.split(",")]
        except ValueError:
            raise UsageError(f"--latent-frames is a comma-separated list of counts, "
                             f"not {args.latent_frames!r}") from None
    backbone = backbones.load(args.backbone, args.model, device=args.device)
    repo = Path(args.repository) if args.repository else default_repository(backbone.name)
    info = read_engine(repo) or {}
    asked = {"max_batch": args.max_batch, "max_sequences": args.max_sequences,
             "decoders": sorted(map(str, latent_decoder_frames(backbone, frames)))}
    held = {"max_batch": info.get("max_batch"), "max_sequences": info.get("session", {}).get("max_sequences"),
            "decoders": sorted(info.get("latent_decoders", {}))}
    if args.force or held != asked or not is_current(repo, backbone, args.max_rank, args.variant):
        try:
            export_repository(backbone, repo, args.max_rank, variant=args.variant, threads=args.threads,
                              log=lambda m: print(f"vov: {m}", file=sys.stderr), max_batch=args.max_batch,
                              max_sequences=args.max_sequences, latent_frames=frames,
                              plan_shapes=_plan_shapes(args.plan_opt, backbone))
        except OSError as e:
            raise UsageError(f"{repo}: cannot write ({e.strerror or e})") from None
    info = read_engine(repo)
    models = ", ".join([SESSION_MODEL, DENOISER_MODEL, *info["latent_decoders"].values()])
    print(f"{repo}: {models} for {backbone.name} ({backbone.content_hash.hex()})")
    if args.check:
        from vov.serving.parity import parity

        for name, diff in parity(backbone, repo).items():
            print(f"{name}: max |onnx - torch| = {diff:.2e}")
