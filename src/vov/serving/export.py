"""`vov export`: the denoiser and the latent decoder as ONNX graphs that serve every file.

The adaptation is an INPUT of the exported denoiser, so one engine serves every file made for its
backbone. The decoder side expands a file's theta into the LoRA factors of each adapted layer
(`AdaptedDenoiser.lora_factors()`), zero-pads them to the engine's maximum rank R_max, and packs them
into one flat row `lora` (see `LoraLayout`); the graph slices that row per layer and computes
`W x + B (A x)` for every slot layer. Zero padding is exact: padded rows of A and columns of B add
nothing. The batch axis is dynamic and each row of a batch carries its own adaptation.

Slots are the layers that any of the backbone's target presets names (attention q/k/v/out and the
feed-forward projections of every block), in module order. A file whose targets fall outside the
slots, or whose rank exceeds R_max, cannot use the engine (`LoraLayout.pack` says so).

Outputs, in a Triton model repository laid out from the templates in `model_repository/cpu`:
    REPO/denoiser/1/model.onnx      inputs latents (B,C,F,h,w) f32, t (B,) f32, lora (B,total) f32
    REPO/vae_decoder/1/model.onnx   input latents (B,C,F,h,w) f32 -> pixels (B,3,F,8h,8w) f32
    REPO/vov_engine.json            backbone name + content hash, R_max, the slot layout
The same ONNX files are the input of the TensorRT plan build for GPU nodes (docs/services.md).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vov.errors import BackboneMismatch, UsageError

ENGINE_FILE = "vov_engine.json"
EXPORT_VERSION = 2  # raised whenever the repository's files change meaning; older exports are redone
PLAN_SCRIPT = "build_plans.sh"
DEFAULT_MAX_RANK = 8
MAX_BATCH = 16  # Triton's max_batch_size: requests x best-of-N candidates batched per model call
OPSET = 20
MODELS = ("denoiser", "vae_decoder")
VARIANTS = ("cpu", "gpu")


# --------------------------------------------------------------------------------------------
# the packed-LoRA layout shared by the exporter and every decoder path


@dataclass(frozen=True)
class Slot:
    name: str
    in_features: int
    out_features: int
    offset: int  # start of this layer's A (R_max x in, row-major), then its B (out x R_max)

    def size(self, max_rank: int) -> int:
        return max_rank * (self.in_features + self.out_features)


@dataclass(frozen=True)
class LoraLayout:
    max_rank: int
    slots: tuple[Slot, ...]

    @property
    def total(self) -> int:
        return sum(s.size(self.max_rank) for s in self.slots)

    @classmethod
    def for_backbone(cls, backbone, max_rank: int = DEFAULT_MAX_RANK) -> "LoraLayout":
        layers = backbone.adaptable_layers()
        union = {n for preset in backbone.target_presets for n in backbone.target_layers(preset)}
        slots, offset = [], 0
        for name, m in ((n, m) for n, m in layers.items() if n in union):
            slots.append(Slot(name, m.in_features, m.out_features, offset))
            offset += max_rank * (m.in_features + m.out_features)
        return cls(max_rank, tuple(slots))

    def to_json(self) -> dict:
        return {"max_rank": self.max_rank, "slots": [asdict(s) for s in self.slots]}

    @classmethod
    def from_json(cls, data: dict) -> "LoraLayout":
        return cls(int(data["max_rank"]), tuple(Slot(**s) for s in data["slots"]))

    def pack(self, factors: dict) -> np.ndarray:
        """name -> (A (r x in), B (out x r)) -> one row (total,) float32, zero-padded to R_max."""
        by_name = {s.name: s for s in self.slots}
        row = np.zeros(self.total, dtype=np.float32)
        for name, (a, b) in factors.items():
            slot = by_name.get(name)
            if slot is None:
                raise BackboneMismatch(f"the served engine has no LoRA slot for layer {name!r}; "
                                       f"it serves the backbone's target presets only")
            a = np.asarray(a.detach().float() if hasattr(a, "detach") else a, dtype=np.float32)
            b = np.asarray(b.detach().float() if hasattr(b, "detach") else b, dtype=np.float32)
            r = a.shape[0]
            if r > self.max_rank:
                raise BackboneMismatch(f"the file's rank {r} exceeds the served engine's maximum rank "
                                       f"{self.max_rank}; re-export with --max-rank {r} or more")
            r_max, n_in, n_out = self.max_rank, slot.in_features, slot.out_features
            a_part = np.zeros((r_max, n_in), dtype=np.float32)
            a_part[:r] = a
            b_part = np.zeros((n_out, r_max), dtype=np.float32)
            b_part[:, :r] = b
            row[slot.offset: slot.offset + r_max * n_in] = a_part.reshape(-1)
            row[slot.offset + r_max * n_in: slot.offset + slot.size(r_max)] = b_part.reshape(-1)
        return row

    def pack_adapter(self, adapter) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.pack(adapter.lora_factors())


# --------------------------------------------------------------------------------------------
# the exportable modules


def _axis(n):
    """torch.linspace(-1, 1, n) (0 when n == 1), written with arange so that n may stay symbolic."""
    import torch

    i = torch.arange(n, dtype=torch.float32)
    if isinstance(n, int) and n == 1:
        return torch.zeros(1)
    step = 2.0 / (n - 1)
    # linspace fills the first half from the start and the second half from the end
    return torch.where(i < n / 2, -1.0 + i * step, 1.0 - (n - 1 - i) * step)


def _coordinate_grid(frames, height, width):
    import torch

    return torch.stack(torch.meshgrid(_axis(frames), _axis(height), _axis(width), indexing="ij"))


def _packed_denoiser(backbone, layout: LoraLayout):
    """A copy of the backbone's denoiser whose slot layers read their LoRA factors from `lora`."""
    import copy

    import torch
    from torch import nn

    class Context:
        lora: torch.Tensor | None = None

    class PackedLoraLinear(nn.Module):
        def __init__(self, base: nn.Linear, slot: Slot, max_rank: int, context: Context):
            super().__init__()
            self.base = base
            self.context = context
            self.r = max_rank
            self.a_range = (slot.offset, slot.offset + max_rank * slot.in_features)
            self.b_range = (self.a_range[1], slot.offset + slot.size(max_rank))
            self.n_in, self.n_out = slot.in_features, slot.out_features

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.base(x)
            lora = self.context.lora
            batch = x.shape[0]
            a = lora[:, self.a_range[0]: self.a_range[1]].reshape(batch, self.r, self.n_in)
            b = lora[:, self.b_range[0]: self.b_range[1]].reshape(batch, self.n_out, self.r)
            flat = x.reshape(batch, -1, self.n_in)
            delta = torch.bmm(torch.bmm(flat, a.transpose(1, 2)), b.transpose(1, 2))
            return y + delta.reshape(y.shape)

    class PackedDenoiser(nn.Module):
        def __init__(self):
            super().__init__()
            self.context = Context()
            self.denoiser = copy.deepcopy(backbone.denoiser).float().eval()
            for slot in layout.slots:
                parent_name, _, child = slot.name.rpartition(".")
                parent = self.denoiser.get_submodule(parent_name)
                setattr(parent, child, PackedLoraLinear(getattr(parent, child), slot, layout.max_rank, self.context))

        def forward(self, latents: torch.Tensor, t: torch.Tensor, lora: torch.Tensor) -> torch.Tensor:
            # FlowDenoiser.forward, with a coordinate grid that keeps height and width symbolic
            from vov.backbones.embedded import TIME_SCALE

            self.context.lora = lora
            try:
                b, _, f, h, w = latents.shape
                coords = _coordinate_grid(f, h, w).to(latents).expand(b, -1, -1, -1, -1)
                condition = torch.zeros(b, 1, self.denoiser.config.text_dim, dtype=latents.dtype)
                x = torch.cat([latents, coords], dim=1)
                out = self.denoiser.transformer(x, t * TIME_SCALE, condition, return_dict=False)[0]
                return out.to(latents.dtype)
            finally:
                self.context.lora = None

    return PackedDenoiser().eval()


def _latent_decoder(backbone):
    from torch import nn

    class LatentDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.autoencoder = backbone.autoencoder

        def forward(self, latents):
            return self.autoencoder.decode(latents)

    return LatentDecoder().eval()


def _example(backbone, batch: int = 2, height: int = 64, width: int = 96):
    import torch

    g = torch.Generator().manual_seed(0)
    shape = (batch, *backbone.latent_shape(1, height, width))
    return torch.randn(shape, generator=g), torch.rand(batch, generator=g)


def _dims():
    """Dynamic batch, latent height and width. Latent sides of 2 or 3 (images under 32 pixels a
    side) are specialised away by the tracer's size-1 rules, so the range starts at 4; the ONNX
    graph still computes those sizes (the parity test checks it)."""
    from torch.export import Dim

    return Dim("batch", min=1, max=1024), Dim("height", min=4, max=1024), Dim("width", min=4, max=1024)


def _export(module, args, path: Path, input_names, output_names, dynamic_shapes) -> None:
    import io
    import warnings

    import torch

    import contextlib
    import logging

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("torch.export").setLevel(logging.ERROR)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, input_names=input_names, output_names=output_names,
                          dynamic_shapes=dynamic_shapes, opset_version=OPSET, dynamo=True, external_data=False, verbose=False)
    tmp = path.with_suffix(".onnx.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


def export_denoiser(backbone, layout: LoraLayout, path: str | Path) -> None:
    import torch

    module = _packed_denoiser(backbone, layout)
    latents, t = _example(backbone)
    lora = torch.randn(latents.shape[0], layout.total) * 0.01
    batch, height, width = _dims()
    _export(module, (latents, t, lora), Path(path), ["latents", "t", "lora"], ["velocity"],
            {"latents": {0: batch, 3: height, 4: width}, "t": {0: batch}, "lora": {0: batch}})


def export_vae_decoder(backbone, path: str | Path) -> None:
    latents, _ = _example(backbone)
    batch, height, width = _dims()
    _export(_latent_decoder(backbone), (latents,), Path(path), ["latents"], ["pixels"],
            {"latents": {0: batch, 3: height, 4: width}})


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
        if (c / "denoiser" / "config.pbtxt").exists():
            return c
    raise UsageError("the Triton model templates (model_repository/) were not found; set VOV_MODEL_TEMPLATES")


def read_engine(repository: str | Path) -> dict | None:
    path = Path(repository) / ENGINE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_current(repository: str | Path, backbone, max_rank: int, variant: str = "cpu") -> bool:
    info = read_engine(repository)
    repo = Path(repository)
    return bool(
        info and info.get("export_version") == EXPORT_VERSION and info.get("backbone") == backbone.name and info.get("content_hash") == backbone.content_hash.hex()
        and info.get("layout", {}).get("max_rank") == max_rank and info.get("variant", "cpu") == variant
        and all((repo / m / "1" / "model.onnx").exists() for m in MODELS)
    )


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    return template


def export_repository(backbone, repository: str | Path, max_rank: int = DEFAULT_MAX_RANK,
                      variant: str = "cpu", threads: int = 0, log=print) -> dict:
    """Lay out a Triton repository at `repository` and build its ONNX files for `backbone`.

    config.pbtxt comes from the templates with this installation's values filled in: the import
    path of the environment that holds ONNX Runtime (the Python backend's stub ignores
    PYTHONPATH), the thread count, and the backbone identity the decoder checks before use.
    """
    import site

    repo = Path(repository)
    source = templates_dir(variant)
    if source.resolve() == repo.resolve():
        raise UsageError(f"{repo} holds the templates; export into another directory")
    layout = LoraLayout.for_backbone(backbone, max_rank)
    from vov.limits import max_padded_pixels

    cells = max_padded_pixels(backbone.pixel_multiple) // backbone.latent_factor ** 2
    values = {"PYTHON_PATH": os.pathsep.join(site.getsitepackages()), "INTRA_OP_THREADS": str(threads),
              "BACKBONE": backbone.name, "CONTENT_HASH": backbone.content_hash.hex(), "MAX_RANK": str(max_rank),
              "MAX_BATCH": str(MAX_BATCH), "LATENT_CHANNELS": str(backbone.latent_channels),
              "LORA_TOTAL": str(layout.total), "MAX_LATENT_FRAMES": "1", "MAX_LATENT_CELLS": str(cells)}
    for model in MODELS:
        (repo / model / "1").mkdir(parents=True, exist_ok=True)
        config = _fill((source / model / "config.pbtxt").read_text(), values)
        (repo / model / "config.pbtxt").write_text(config)
        if (source / model / "1" / "model.py").exists():
            shutil.copyfile(source / model / "1" / "model.py", repo / model / "1" / "model.py")
    log(f"exporting denoiser ({len(layout.slots)} LoRA slots, R_max {max_rank}, lora row {layout.total} floats)")
    export_denoiser(backbone, layout, repo / "denoiser" / "1" / "model.onnx")
    log("exporting vae_decoder")
    export_vae_decoder(backbone, repo / "vae_decoder" / "1" / "model.onnx")
    info = {"export_version": EXPORT_VERSION, "backbone": backbone.name, "content_hash": backbone.content_hash.hex(),
            "opset": OPSET,
            "variant": variant, "layout": layout.to_json()}
    (repo / ENGINE_FILE).write_text(json.dumps(info, indent=1))
    if variant == "gpu":
        script = repo / PLAN_SCRIPT
        script.write_text(plan_script(backbone.latent_channels, layout.total))
        script.chmod(0o755)
        log(f"TensorRT plans are built on a GPU node by {script} (trtexec, from the same ONNX files)")
    return info


def plan_script(latent_channels: int, lora_total: int, max_frames: int = 21, max_height: int = 136,
                max_width: int = 240) -> str:
    """A shell script that turns the exported ONNX graphs into TensorRT plans with trtexec.

    It runs on a GPU node with TensorRT (the official Triton container has trtexec); plans are
    specific to the GPU and TensorRT version, so they are built where they are served. The shape
    profile spans one to MAX_BATCH rows, one frame up to `max_frames` latent frames, and latent
    sides from 4 up to 1080p (136 x 240); the optimum is a batch of 8 Kodak-sized images.
    """
    c = latent_channels

    def shapes(batch: int, frames: int, h: int, w: int, with_lora: bool) -> str:
        text = f"latents:{batch}x{c}x{frames}x{h}x{w}"
        return text + (f",t:{batch},lora:{batch}x{lora_total}" if with_lora else "")

    lines = ["#!/bin/sh", "# Build the TensorRT plans of this repository from its ONNX graphs (generated by vov export).",
             "set -eu", 'cd "$(dirname "$0")"', 'TRTEXEC="${TRTEXEC:-trtexec}"']
    for model, with_lora in (("denoiser", True), ("vae_decoder", False)):
        lines.append(
            f'"$TRTEXEC" --onnx={model}/1/model.onnx --saveEngine={model}/1/model.plan --fp16 '
            f"--minShapes={shapes(1, 1, 4, 4, with_lora)} --optShapes={shapes(8, 1, 64, 96, with_lora)} "
            f"--maxShapes={shapes(MAX_BATCH, max_frames, max_height, max_width, with_lora)}")
    return "\n".join(lines) + "\n"


def default_repository(backbone_name: str) -> Path:
    """~/.cache/vov/triton/BACKBONE-ENV: one per Python environment, because the configs name the
    environment's site-packages (the Python backend's stub ignores PYTHONPATH), so a repository
    exported from one checkout's environment must not be served from another's."""
    import hashlib

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    env = hashlib.sha256(os.path.realpath(sys.prefix).encode()).hexdigest()[:10]
    return Path(base) / "vov" / "triton" / f"{backbone_name}-{env}"


def add_arguments(parser) -> None:
    parser.add_argument("--backbone", default="embedded", help="foundation model (default: embedded)")
    parser.add_argument("--repository", help="Triton model repository to write (default: ~/.cache/vov/triton/BACKBONE-ENV, one per Python environment)")
    parser.add_argument("--max-rank", type=int, default=DEFAULT_MAX_RANK,
                        help=f"largest adapter rank the engine serves (default {DEFAULT_MAX_RANK})")
    parser.add_argument("--variant", choices=VARIANTS, default="cpu",
                        help="cpu: Python backend + ONNX Runtime; gpu: TensorRT plans, built on the GPU node by "
                             f"the {PLAN_SCRIPT} written into the repository (default cpu)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads per Triton instance (0: auto)")
    parser.add_argument("--check", action="store_true", help="compare the ONNX graphs with torch on random inputs")
    parser.add_argument("--force", action="store_true", help="export even if the repository is current")


def run(args) -> None:
    from vov import backbones

    if not 1 <= args.max_rank <= 64:
        raise UsageError(f"--max-rank must be between 1 and 64, not {args.max_rank}")
    backbone = backbones.load(args.backbone)
    repo = Path(args.repository) if args.repository else default_repository(backbone.name)
    if args.force or not is_current(repo, backbone, args.max_rank, args.variant):
        try:
            export_repository(backbone, repo, args.max_rank, variant=args.variant, threads=args.threads,
                              log=lambda m: print(f"vov: {m}", file=sys.stderr))
        except OSError as e:
            raise UsageError(f"{repo}: cannot write ({e.strerror or e})") from None
    print(f"{repo}: denoiser + vae_decoder for {backbone.name} ({backbone.content_hash.hex()})")
    if args.check:
        from vov.serving.engine import parity

        for name, diff in parity(backbone, repo).items():
            print(f"{name}: max |onnx - torch| = {diff:.2e}")
