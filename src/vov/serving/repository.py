"""The Triton model repository that `vov export` lays out, from the templates in `model_repository/<variant>`:

    REPO/denoiser_session/   what the decoder talks to: Triton's sequence batcher keeps each decode's
                             adaptation and caption from its first request (Python backend, numpy
                             only) and calls `denoiser` for every step (docs/services.md)
    REPO/denoiser/1/model.onnx       latents (B,C,F,h,w), t (B,), embeddings (B,L,D) [, mask (B,L)],
                                     lora (B,total) -> velocity; ONNX Runtime on CPU, a TensorRT plan on GPU
    REPO/vae_decoder/1/model.onnx    latents -> pixels in [0, 1]: images, and every frame count when
                                     the latent decoder maps frames one to one
    REPO/vae_decoder/1/model.py      where the VAE keeps a causal cache between latent frames (Wan):
                                     every frame count, by looping the two graphs below (Python backend)
    REPO/vae_decoder_first/1/model.onnx   the clip's first latent frame -> pixels and the cache
    REPO/vae_decoder_next/1/model.onnx    a later latent frame and the cache -> pixels and the cache
    REPO/vov_engine.json             backbone identity, signature, slot layout, graphs and their axes
    REPO/build_plans.sh              (gpu) trtexec shape profiles for every graph

The graphs come from vov.serving.graphs; the names and the layout every decoder path relies on
from vov.serving.contract.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from vov.errors import UsageError
from vov.serving.contract import (ANY_FRAMES, DECODER_FIRST_MODEL, DECODER_MODEL, DECODER_NEXT_MODEL,
                                  DEFAULT_MAX_RANK, DENOISER_MODEL, ENGINE_FILE, LAYOUT_FILE, SESSION_MODEL,
                                  LoraLayout, cache_inputs, cache_outputs, read_engine)
from vov.serving.graphs import (OPSET, Axes, export_decoder_chunk, graph_facts, is_chunked, latent_decoder_frames,
                                write_denoiser, write_latent_decoder)

EXPORT_VERSION = 4  # raised whenever the repository's files change meaning; older exports are redone
LOOP_TEMPLATE = "vae_decoder_loop"  # the template of a chunked latent decoder's `vae_decoder` (a Python loop)
CHUNK_TEMPLATE = "vae_decoder_chunk"  # and of its two graphs
PLAN_SCRIPT = "build_plans.sh"
TENSORS_MODULE = "vov_triton_tensors.py"  # beside every Python-backend script (model_repository/cpu/)
MAX_BATCH = 16  # Triton's max_batch_size: rows of concurrent decodes batched per model call
DEFAULT_MAX_SEQUENCES = 32  # decodes whose adaptation Triton holds at once (per session-model instance)
DEFAULT_IDLE_SECONDS = 60  # a held adaptation whose decode sends nothing for this long is dropped
VARIANTS = ("cpu", "gpu")


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
    chunks = info.get("latent_decoder_chunks")
    decoders = [chunks["first"], chunks["next"]] if chunks else list(info.get("latent_decoders", {}).values())
    loop = [f"{DECODER_MODEL}/1/model.py"] if chunks else []
    return ([f"{m}/1/model.onnx" for m in [DENOISER_MODEL, *decoders]] + loop
            + [f"{SESSION_MODEL}/1/model.py", f"{SESSION_MODEL}/1/{LAYOUT_FILE}"])


def scripts_current(repository: str | Path, variant: str = "cpu") -> bool:
    """Whether every Python-backend script of the repository (and the tensor module beside it) is the
    one this vov ships: an export made with older scripts is not current, so a fixed script reaches
    it at its next use."""
    repo = Path(repository)
    source = templates_dir(variant)
    for model in sorted(p.parent.parent.name for p in repo.glob("*/1/model.py")):
        script = _python_model(source, _template_of(repo, model))
        if script is None:
            return False
        for copy, original in ((repo / model / "1" / "model.py", script),
                               (repo / model / "1" / TENSORS_MODULE, source.parent / "cpu" / TENSORS_MODULE)):
            if not copy.exists() or copy.read_bytes() != original.read_bytes():
                return False
    return True


def is_current(repository: str | Path, backbone, max_rank: int, variant: str = "cpu") -> bool:
    info = read_engine(repository)
    repo = Path(repository)
    return bool(
        info and info.get("export_version") == EXPORT_VERSION and info.get("backbone") == backbone.name
        and info.get("content_hash") == backbone.content_hash.hex()
        and info.get("layout", {}).get("max_rank") == max_rank and info.get("variant", "cpu") == variant
        and all((repo / f).exists() for f in graph_files(info))
        and scripts_current(repo, variant)
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
    if model in (SESSION_MODEL, LOOP_TEMPLATE):
        return cpu / model / "1" / "model.py"
    if variant_dir.name == "cpu":
        return cpu / DENOISER_MODEL / "1" / "model.py"
    return None


def _template_of(repo: Path, model: str) -> str:
    """The template a repository's model was made from."""
    if model in (DECODER_FIRST_MODEL, DECODER_NEXT_MODEL):
        return CHUNK_TEMPLATE
    if model == DECODER_MODEL and (repo / DECODER_FIRST_MODEL).exists():
        return LOOP_TEMPLATE
    return model


def _copy_script(source: Path, template: str, version_dir: Path) -> None:
    """The Python-backend script of `template`, if it has one, and the tensor module beside it."""
    script = _python_model(source, template)
    if script is not None:
        shutil.copyfile(script, version_dir / "model.py")
        shutil.copyfile(source.parent / "cpu" / TENSORS_MODULE, version_dir / TENSORS_MODULE)


def _write_model(source: Path, repo: Path, template: str, name: str, values: dict[str, str]) -> None:
    """config.pbtxt of `template` (as model `name`) and its Python-backend script, if it has one."""
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    config = _fill((source / template / "config.pbtxt").read_text(), {**values, "MODEL_NAME": name})
    (repo / name / "config.pbtxt").write_text(config)
    _copy_script(source, template, repo / name / "1")


def export_repository(backbone, repository: str | Path, max_rank: int = DEFAULT_MAX_RANK,
                      variant: str = "cpu", threads: int = 0, log=print, max_batch: int = MAX_BATCH,
                      max_sequences: int = DEFAULT_MAX_SEQUENCES, idle_seconds: int = DEFAULT_IDLE_SECONDS,
                      plan_shapes: dict | None = None) -> dict:
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
    counts = latent_decoder_frames(backbone)
    chunked = is_chunked(backbone)
    if (repo / ENGINE_FILE).exists():
        (repo / ENGINE_FILE).unlink()  # not current until every graph is written
    for stale in [*repo.glob(f"{DECODER_MODEL}_f*"), repo / DECODER_FIRST_MODEL, repo / DECODER_NEXT_MODEL,
                  repo / DECODER_MODEL]:
        shutil.rmtree(stale, ignore_errors=True)  # the latent decoder's models are made anew below

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
    denoiser = write_denoiser(backbone, layout, path, log)
    denoiser_frames = axes.max_frames if denoiser["frames"] == ANY_FRAMES else denoiser["frames"]
    _write_model(source, repo, DENOISER_MODEL, DENOISER_MODEL, {
        **values, "MAX_LATENT_FRAMES": str(denoiser_frames),
        "FRAMES": "-1" if denoiser["frames"] == ANY_FRAMES else str(denoiser["frames"])})

    chunks = None
    if chunked:
        chunks = _export_chunks(backbone, source, repo, values, log)
        graphs = {name: graph_facts(repo / name / "1" / "model.onnx") for name in (chunks["first"], chunks["next"])}
        decoders = {ANY_FRAMES: DECODER_MODEL}
    else:
        (k,) = counts
        path = repo / DECODER_MODEL / "1" / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"exporting the latent decoder ({'any number of latent frames' if k == ANY_FRAMES else 'one latent frame'})")
        facts = write_latent_decoder(backbone, k, path, log)
        key = ANY_FRAMES if facts["frames"] == ANY_FRAMES else str(facts["frames"])
        _write_model(source, repo, DECODER_MODEL, DECODER_MODEL, {
            **values, "FRAMES": "-1" if key == ANY_FRAMES else key,
            "MAX_LATENT_FRAMES": str(axes.max_frames if key == ANY_FRAMES else key)})
        graphs, decoders = {DECODER_MODEL: facts}, {key: DECODER_MODEL}
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
            "latent_decoder_graphs": graphs,
            "latent_decoder_note": ("two graphs of one latent frame each, the VAE's causal cache as their inputs "
                                    "and outputs, looped over the clip's frames" if chunks else
                                    "one graph serves every latent-frame count" if ANY_FRAMES in decoders else
                                    "one frame (images)"),
            "max_batch": max_batch}
    if chunks:
        info["latent_decoder_chunks"] = chunks
    if variant == "gpu":
        script = repo / PLAN_SCRIPT
        script.write_text(plan_script(info, **(plan_shapes or {})))
        script.chmod(0o755)
        info["plans"] = PLAN_SCRIPT
        log(f"TensorRT plans are built on a GPU node by {script} (trtexec, from the same ONNX files)")
    (repo / ENGINE_FILE).write_text(json.dumps(info, indent=1))
    return info


def _export_chunks(backbone, source: Path, repo: Path, values: dict[str, str], log) -> dict:
    """A chunked latent decoder: its two graphs, their models, and `vae_decoder` that loops them; what
    the engine file records of them (`latent_decoder_chunks`)."""
    log("exporting the latent decoder (one latent frame with its causal cache: the first frame, then any later one)")
    caches = []
    for name, first in ((DECODER_FIRST_MODEL, True), (DECODER_NEXT_MODEL, False)):
        path = repo / name / "1" / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        caches = export_decoder_chunk(backbone, first, path)

        def declare(names: list[str]) -> str:
            return "".join(f',\n  {{ name: "{n}" data_type: TYPE_FP32 dims: [ {c}, 2, -1, -1 ] }}'
                           for n, (c, _) in zip(names, caches))

        _write_model(source, repo, CHUNK_TEMPLATE, name, {
            **values, "CACHE_INPUTS": "" if first else declare(cache_inputs(len(caches))),
            "CACHE_OUTPUTS": declare(cache_outputs(len(caches)))})
    _write_model(source, repo, LOOP_TEMPLATE, DECODER_MODEL, {
        **values, "FIRST_MODEL": DECODER_FIRST_MODEL, "NEXT_MODEL": DECODER_NEXT_MODEL, "CACHES": str(len(caches))})
    return {"first": DECODER_FIRST_MODEL, "next": DECODER_NEXT_MODEL, "caches": [list(c) for c in caches]}


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
    chunks = info.get("latent_decoder_chunks")
    if chunks:
        def chunk(batch: int, h: int, w: int, with_cache: bool) -> str:
            shapes = [decoder(batch, 1, h, w)]
            if with_cache:
                shapes += [f"{name}:{batch}x{c}x2x{s * h}x{s * w}"
                           for name, (c, s) in zip(cache_inputs(len(chunks["caches"])), chunks["caches"])]
            return ",".join(shapes)

        for model, with_cache in ((chunks["first"], False), (chunks["next"], True)):
            build(model, chunk(1, 2, 2, with_cache), chunk(opt_batch, *opt_size, with_cache),
                  chunk(max_batch, max_h, max_w, with_cache))
    for key, model in ({} if chunks else info["latent_decoders"]).items():
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
