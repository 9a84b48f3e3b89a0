"""Backbones: the frozen foundation models that vov adapts.

`load(name, model=None, device=None, dtype=None)` gives one by name; `REGISTRY` says, for each name,
what it is, what it needs and its defaults; `listing()` is what `vov backbones` prints.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass

from vov.backbones.base import Backbone
from vov.backbones.condition import Condition
from vov.backbones.defaults import AdapterDefaults, FitDefaults
from vov.backbones.schedule import Schedule
from vov.errors import UsageError

DEFAULT_BACKBONE = "embedded"  # vov's own backbone: what a compress, a service or a benchmark uses unless told


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    summary: str
    factory: str  # "module:function(model, device, dtype)"
    default_model: str | None  # hub id or None
    takes_model: bool  # whether --model means anything
    needs: str  # what has to be present to load it
    hardware: str  # where it runs, and what it takes
    adapter: AdapterDefaults
    fit: FitDefaults
    captions: bool
    media: str
    presets: tuple[str, ...] = ()  # adapter target presets (`targets` is one of them or exact layer names)


def _embedded_defaults():
    from vov.backbones.embedded import LatentFlowBackbone

    backbone = LatentFlowBackbone
    return backbone.adapter_defaults, backbone.fit_defaults, tuple(backbone.target_presets)


def registry_name_for(name: str, content_hash: bytes) -> str:
    """The registry entry that decodes a file naming backbone `name` with weights of `content_hash`.

    Every generation of the embedded backbone is "embedded" in the files it makes; the hash picks the
    shipped generation (an unknown hash stays "embedded", whose newest weights then refuse the file).
    """
    if name != DEFAULT_BACKBONE:
        return name
    from vov.backbones.embedded import generation_for_hash

    found = generation_for_hash(content_hash)
    return found.registry_name if found else name


def _make_registry() -> dict[str, BackboneInfo]:
    # class attributes only: nothing heavy is imported to list the backbones
    from vov.backbones import image, wan

    embedded_adapter, embedded_fit, embedded_presets = _embedded_defaults()
    return {
        "embedded": BackboneInfo(
            "embedded", "vov's own latent flow model (the first generation: a patch-PCA latent and a 2.7M-parameter "
                        "Wan-class transformer trained on 49 photos); files of either generation decode on theirs",
            "vov.backbones.embedded:from_registry", None, True,
            "nothing: its weights ship with vov (--model may name another file made by `vov train-base`)",
            "2 CPU cores; bf16 autocast on CPU", embedded_adapter, embedded_fit, False, "images and 17-frame clips",
            embedded_presets),
        "embedded-1": BackboneInfo(
            "embedded-1", "the first generation of the embedded model, by name (what `embedded` loads today)",
            "vov.backbones.embedded:first_generation_from_registry", None, False,
            "nothing: its weights ship with vov", "2 CPU cores; bf16 autocast on CPU", embedded_adapter, embedded_fit,
            False, "images and 17-frame clips", embedded_presets),
        "embedded-2": BackboneInfo(
            "embedded-2", "the second generation of the embedded model (the pretrained TAEF2 autoencoder and a "
                          "5.9M-parameter transformer trained 1.1 CPU-hours on 886 photos): no block edges, but "
                          "about 3 dB below the first at 0.05 bpp until it is trained longer",
            "vov.backbones.embedded:second_generation_from_registry", None, False,
            "nothing: its weights ship with vov", "2 CPU cores; bf16 autocast on CPU", embedded_adapter, embedded_fit,
            False, "images and 17-frame clips", embedded_presets),
        "tiny": BackboneInfo(
            "tiny", "a randomly initialised, smaller embedded model for tests (seeded, portable)",
            "vov.backbones.embedded:tiny_from_registry", None, False, "nothing", "CPU, milliseconds",
            embedded_adapter, embedded_fit, False, "images and 17-frame clips", embedded_presets),
        "wan": BackboneInfo(
            "wan", "Wan2.1 text-to-video, 1.3B or 14B (the paper's video model), through diffusers",
            "vov.backbones.wan:WanBackbone", wan.DEFAULT_MODEL, True,
            f"a diffusers-layout Wan2.1 T2V model: {wan.DEFAULT_MODEL} (or {wan.LARGE_MODEL}) from the hub "
            f"cache or a download, or a folder with transformer/, vae/, text_encoder/, tokenizer/, scheduler/ "
            f"in safetensors",
            "a CUDA GPU (bf16 weights: 2.8 GB for 1.3B, 28 GB for 14B, plus 11 GB for the UMT5 encoder); "
            "CPU only for tests and small crops (one 480x832 fitting step takes minutes)",
            wan.WanBackbone.adapter_defaults, wan.WanBackbone.fit_defaults, True,
            "clips of 1 + 4k frames (81 by default) and images", tuple(wan.PRESETS)),
        "image": BackboneInfo(
            "image", "Qwen-Image (the paper's image model), through diffusers",
            "vov.backbones.image:QwenImageBackbone", image.DEFAULT_MODEL, True,
            f"a diffusers-layout Qwen-Image model: {image.DEFAULT_MODEL} from the hub cache or a download, or a "
            f"folder with transformer/, vae/, text_encoder/, tokenizer/, scheduler/ in safetensors",
            "a CUDA GPU with 80 GB (bf16 weights: 41 GB transformer, 17 GB Qwen2.5-VL encoder)",
            image.QwenImageBackbone.adapter_defaults, image.QwenImageBackbone.fit_defaults, True, "images",
            tuple(image.PRESETS)),
    }


REGISTRY: dict[str, BackboneInfo] = _make_registry()
NAMES: tuple[str, ...] = tuple(REGISTRY)


def info(name: str) -> BackboneInfo:
    if name not in REGISTRY:
        raise UsageError(f"unknown backbone {str(name)[:40]!r}; known: {', '.join(NAMES)}")
    return REGISTRY[name]


def load(name: str = DEFAULT_BACKBONE, model: str | None = None, device=None, dtype=None) -> Backbone:
    """The backbone `name`, from `model` (a folder or hub id; its default when None), on `device`.

    Every problem a person can fix (unknown name, missing or pickle-only weights, offline without a
    cached copy, a GPU asked for where there is none) is one UsageError.
    """
    entry = info(name)
    if model and not entry.takes_model:
        raise UsageError(f"backbone {name!r} takes no --model")
    module_name, _, attribute = entry.factory.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    return factory(model or entry.default_model, device=device, dtype=dtype)


def listing() -> list[dict]:
    """One dict per backbone: name, summary, default model, needs, hardware, defaults (no loading)."""
    rows = []
    for entry in REGISTRY.values():
        rows.append({"name": entry.name, "summary": entry.summary, "default_model": entry.default_model,
                     "takes_model": entry.takes_model, "captions": entry.captions, "media": entry.media,
                     "needs": entry.needs, "hardware": entry.hardware, "adapter": asdict(entry.adapter),
                     "presets": list(entry.presets),
                     "fit": {k: v for k, v in asdict(entry.fit).items() if k != "note"}})
    return rows


def format_listing() -> str:
    """`vov backbones` as text: a paragraph per backbone."""
    lines = []
    for row in listing():
        a, f = row["adapter"], row["fit"]
        lines += [f"{row['name']}: {row['summary']}",
                  f"  media     {row['media']}; captions: {'yes' if row['captions'] else 'no'}",
                  f"  model     {row['default_model'] or '-'}{' (--model PATH_OR_HUB_ID)' if row['takes_model'] else ''}",
                  f"  needs     {row['needs']}",
                  f"  runs on   {row['hardware']}",
                  f"  adapter   rank {a['rank']}, d {a['d']}, targets {a['targets']} "
                  f"(presets: {', '.join(row['presets'])}), hash seed {a['seed']}",
                  f"  fitting   lr {f['lr_stage1']:g} for {f['stage1_steps']} steps, then {f['lr_stage2']:g} for "
                  f"{f['stage2_steps']}{', gradient checkpointing' if f['gradient_checkpointing'] else ''}",
                  ""]
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["Backbone", "BackboneInfo", "Condition", "NAMES", "REGISTRY", "Schedule", "format_listing", "info",
           "listing", "load"]
