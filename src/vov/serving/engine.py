"""One engine interface for every decode path: torch in this process, the exported graphs in ONNX
Runtime in this process (`OrtEngine`), and Triton (services/decoder/engines.py).

    session = engine.open(adapter, condition)  # the adaptation and the caption cross once, here
    with session:
        v = session.denoise(latents, t)        # each sampler step: latents and t only
    pixels = engine.decode(latents)            # (B, C, F, h, w) latents -> (B, 3, F', H, W) pixels

A session is also the sampler's velocity callable (`session(latents, t)`), and a context manager
that closes it, so `vov.codec.decompress(..., session=engine.open, decode=engine.decode)` runs the
codec's own sampling loop on any engine (`decompress` here). Tensors in and out are float32 torch
tensors on the CPU; an engine moves them where it computes.

Which decode is the reference, and what the others must meet: `TorchEngine` (the torch path that
`vov decompress` runs, in the backbone's own device, dtype and autocast) is the reference; every
other engine's pixels must be within `MAX_ABS_DIFF` of its pixels at every pixel and `MIN_PSNR`
over the image (docs/services.md, "Decoders that agree").
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from vov.errors import BackboneMismatch, UsageError, VovError
from vov.limits import Limits

REFERENCE = "torch"
# The reference multiplies in bf16 (autocast) and the exported graphs in fp32; fifty sampler steps
# carry the difference forward. Measured on the shipped embedded backbone at 768x512: 46.6-51.1 dB
# with 3.5-17.9 levels at the worst pixel (docs/services.md, "Decoders that agree").
MAX_ABS_DIFF = 32 / 255  # largest difference of one pixel channel from the reference decode
MIN_PSNR = 40.0  # dB between an engine's decode and the reference decode, over the whole image


class EngineUnavailable(VovError):
    """The process that runs the models (Triton) cannot be reached or failed; worth a retry."""


class Session(Protocol):
    def denoise(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Session": ...

    def __exit__(self, *exc) -> None: ...


class Engine(Protocol):
    def open(self, adapter, condition=None) -> Session: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> str: ...


class BaseSession:
    """A session's plumbing: callable as the sampler's velocity, closed once, a context manager."""

    closed = False

    def denoise(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.closed:
            raise UsageError("this decode session is closed")
        return self.denoise(latents, t)

    def _close(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# torch in this process: the reference


class TorchSession(BaseSession):
    """The adapter's factors expanded once; each step one forward under the sampler's autocast
    (exactly what vov.codec's own in-process decode does)."""

    def __init__(self, adapter, condition, autocast: bool):
        from vov.method import sampler

        self._frozen = adapter.frozen()
        self._frozen.__enter__()
        self._velocity = sampler.torch_velocity(adapter, condition, autocast)

    def denoise(self, latents, t):
        return self._velocity(latents, t)

    def _close(self) -> None:
        self._frozen.__exit__(None, None, None)


class TorchEngine:
    """The backbone itself. `autocast=False` runs in the weights' dtype (fp32 parity checks)."""

    def __init__(self, backbone, autocast: bool = True):
        self.backbone, self.autocast = backbone, autocast

    def open(self, adapter, condition=None) -> TorchSession:
        return TorchSession(adapter, condition, self.autocast)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.backbone.decode(latents).float()

    def describe(self) -> str:
        return f"torch ({self.backbone.device}, {str(self.backbone.dtype).replace('torch.', '')})"


# --------------------------------------------------------------------------------------------
# the exported graphs in ONNX Runtime, in this process


def providers_for(device: str | torch.device | None) -> list[str]:
    """ONNX Runtime's execution providers for a device: CUDA's when asked for and installed, with the
    CPU's behind it."""
    import onnxruntime as ort

    kind = torch.device(device).type if device else "cpu"
    if kind == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UsageError("ONNX Runtime here has no CUDA execution provider (install onnxruntime-gpu); "
                             "use the cpu device or Triton")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def ort_session(path: str | Path, threads: int = 0, providers: list[str] | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors for missing or bad files
        raise UsageError(f"{path}: cannot load the ONNX model ({str(e).splitlines()[0][:200]})") from None


def pad_condition(embeddings: np.ndarray, mask: np.ndarray, tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (1, L, D) and mask (1, L) padded to `tokens` with masked-out zeros (the same output
    where the graph takes a mask: no token attends to them)."""
    extra = tokens - embeddings.shape[1]
    if extra <= 0:
        return embeddings, mask
    return (np.concatenate([embeddings, np.zeros((1, extra, embeddings.shape[2]), np.float32)], 1),
            np.concatenate([mask, np.zeros((1, extra), bool)], 1))


def condition_arrays(condition, text_tokens: int, takes_mask: bool, pad: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A Condition as an exported graph takes it: embeddings (1, text_tokens, D) float32 and a mask
    (1, text_tokens) bool; where the graph takes a mask a shorter caption is padded (`pad`)."""
    embeddings = condition.embeddings.detach().float().cpu().numpy()
    mask = condition.mask.detach().cpu().numpy().astype(bool)
    if embeddings.ndim != 3 or embeddings.shape[0] != 1 or mask.shape != embeddings.shape[:2]:
        raise UsageError(f"a condition is (1, tokens, width) embeddings and a (1, tokens) mask, not "
                         f"{tuple(embeddings.shape)} and {tuple(mask.shape)}")
    tokens = embeddings.shape[1]
    if tokens > text_tokens or (not takes_mask and tokens != text_tokens):
        raise UsageError(f"the caption's {tokens} tokens do not fit the engine's {text_tokens}")
    if pad:
        embeddings, mask = pad_condition(embeddings, mask, text_tokens)
    return np.ascontiguousarray(embeddings), np.ascontiguousarray(mask)


def decoder_for(decoders: dict[str, str], frames: int) -> str:
    """The latent decoder model that takes `frames` latent frames, or BackboneMismatch."""
    from vov.serving.export import ANY_FRAMES

    if ANY_FRAMES in decoders:
        return decoders[ANY_FRAMES]
    if str(frames) in decoders:
        return decoders[str(frames)]
    served = ", ".join(sorted(decoders, key=lambda k: int(k)))
    raise BackboneMismatch(f"the served engine has no latent decoder for {frames} latent frames (it has {served}); "
                           f"export with --latent-frames {frames}")


class OrtSession(BaseSession):
    def __init__(self, engine: "OrtEngine", row: np.ndarray, embeddings: np.ndarray, mask: np.ndarray):
        self.engine, self.row, self.embeddings, self.mask = engine, row[None], embeddings, mask

    def denoise(self, latents, t):
        n = latents.shape[0]
        repeat = (lambda a: a) if n == 1 else (lambda a: np.repeat(a, n, axis=0))
        out = self.engine.run_denoiser(np.ascontiguousarray(latents.detach().float().cpu().numpy()),
                                       np.ascontiguousarray(t.detach().float().cpu().numpy().reshape(n)),
                                       repeat(self.embeddings), repeat(self.mask), repeat(self.row))
        return torch.from_numpy(out)


class OrtEngine:
    """The exported denoiser and latent decoders, run by ONNX Runtime in this process.

    `backbone` gives the null caption when a session is opened without a condition; `device` picks
    ONNX Runtime's execution provider (the CPU's by default)."""

    def __init__(self, repository: str | Path, threads: int | None = None, backbone=None, device=None):
        from vov.serving.export import LoraLayout, read_engine

        repo = Path(repository)
        info = read_engine(repo)
        if info is None:
            raise UsageError(f"{repo}: no exported engine here; run `vov export --repository {repo}`")
        self.info, self.backbone = info, backbone
        self.layout = LoraLayout.from_json(info["layout"])
        axes = info["axes"]
        self.text_tokens, self.takes_mask = int(axes["text_tokens"]), bool(axes["takes_mask"])
        self.text_dim, self.channels = int(axes["text_dim"]), int(axes["latent_channels"])
        self.inputs = list(info["denoiser"]["inputs"])
        threads = int(os.environ.get("VOV_ORT_THREADS", "0")) if threads is None else threads
        providers = providers_for(device if device is not None else getattr(backbone, "device", None))
        self._denoiser = ort_session(repo / info["denoiser"]["model"] / "1" / "model.onnx", threads, providers)
        self.decoders: dict[str, str] = dict(info["latent_decoders"])
        self._decoders = {name: ort_session(repo / name / "1" / "model.onnx", threads, providers)
                          for name in set(self.decoders.values())}

    # ---- the engine interface

    def open(self, adapter, condition=None) -> OrtSession:
        return self.open_compact(self.layout.compact(adapter), *self.condition(condition))

    def open_compact(self, compact, embeddings: np.ndarray, mask: np.ndarray) -> OrtSession:
        """A session from an adaptation's factors and a caption's arrays (shorter captions are padded)."""
        return OrtSession(self, self.layout.unpack(compact), *pad_condition(embeddings, mask, self.text_tokens))

    def condition(self, condition) -> tuple[np.ndarray, np.ndarray]:
        if condition is None:
            if self.backbone is None:
                raise UsageError("a session needs the caption's condition (or an engine made with its backbone)")
            condition = self.backbone.condition("")
        return condition_arrays(condition, self.text_tokens, self.takes_mask)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run_decoder(np.ascontiguousarray(latents.detach().float().cpu().numpy())))

    def describe(self) -> str:
        return "onnxruntime"

    # ---- whole batches, each row with its own adaptation and caption

    def run_denoiser(self, latents, t, embeddings, mask, lora) -> np.ndarray:
        self.check(latents, self.info["denoiser"].get("max_frames", 1))
        feed = {"latents": latents, "t": t, "embeddings": embeddings, "mask": mask, "lora": lora}
        return self._denoiser.run(None, {name: feed[name] for name in self.inputs})[0]

    def run_decoder(self, latents: np.ndarray) -> np.ndarray:
        model = decoder_for(self.decoders, latents.shape[2])
        self.check(latents, int(self.info["axes"]["max_frames"]))
        return self._decoders[model].run(None, {"latents": latents})[0]

    def check(self, latents: np.ndarray, max_frames: int) -> None:
        """The bounds the served models check (model_repository), for the graphs run here."""
        from vov.limits import LimitExceeded

        if latents.ndim != 5 or latents.shape[1] != self.channels:
            raise UsageError(f"latents must be (batch, {self.channels}, frames, height, width), not {latents.shape}")
        _, _, f, h, w = latents.shape
        if f > max_frames:
            raise LimitExceeded(f"latents have {f} frames, at most {max_frames} allowed by this engine")
        if h * w > int(self.info["axes"]["max_cells"]):
            raise LimitExceeded(f"latents of {h}x{w} cells a frame exceed {self.info['axes']['max_cells']}, "
                                f"this engine's bound")


def check_backbone(info: dict, backbone) -> None:
    """The engine must have been exported from exactly this backbone's weights."""
    if info.get("backbone") != backbone.name or info.get("content_hash") != backbone.content_hash.hex():
        raise BackboneMismatch(
            f"the served engine was exported from backbone {info.get('backbone')!r} ({info.get('content_hash')}), "
            f"this decoder has {backbone.name!r} ({backbone.content_hash.hex()})"
        )


# --------------------------------------------------------------------------------------------
# decoding through an engine, and how close engines are


def decompress(data: bytes, engine: Engine, layout=None, backbone=None, on_step=None, limits: Limits = Limits()):
    """vov.codec.decompress with every step and the latent decoder run by `engine`.

    (`layout` is accepted for older callers and unused: an engine knows its own.)"""
    from vov import codec

    return codec.decompress(data, backbone=backbone, session=engine.open, decode=engine.decode, on_step=on_step,
                            limits=limits)


def agreement(pixels: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Max abs difference (0..1 scale) and PSNR (dB, peak 1) of a decode against the reference decode."""
    a, b = np.asarray(pixels, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise UsageError(f"decodes of different shapes: {a.shape} and {b.shape}")
    diff = np.clip(a, 0, 1) - np.clip(b, 0, 1)
    mse = float(np.mean(diff ** 2))
    return {"max_abs": float(np.abs(diff).max()), "psnr": math.inf if mse == 0 else 10 * math.log10(1 / mse)}


def agrees(pixels: np.ndarray, reference: np.ndarray) -> bool:
    a = agreement(pixels, reference)
    return a["max_abs"] <= MAX_ABS_DIFF and a["psnr"] >= MIN_PSNR


def parity(backbone, repository: str | Path, rank: int = 4, d: int = 512, seed: int = 0) -> dict[str, float]:
    """Max abs difference between the ONNX graphs and torch (fp32, no autocast) on random inputs.

    Two different adaptations and captions ride in one batch, so row-wise independence is checked
    too; the denoiser at one frame and, where its frames axis is dynamic, at two; each latent
    decoder at its frame counts.
    """
    from vov.backbones import Condition
    from vov.method.adapters import AdaptedDenoiser, AdapterSpec, lora_entry_count
    from vov.serving.export import ANY_FRAMES

    engine = OrtEngine(repository, backbone=backbone, device="cpu")
    info = engine.info
    axes = info["axes"]
    g = torch.Generator().manual_seed(seed)
    m = axes["spatial_multiple"]
    c, tokens = axes["latent_channels"], axes["text_tokens"]
    d = min(d, lora_entry_count(backbone, AdapterSpec(rank=rank, d=d)))
    adapters, conditions, rows = [], [], []
    for i in range(2):
        adapter = AdaptedDenoiser(backbone, AdapterSpec(rank=rank, d=d, seed=seed + i))
        adapter.set_theta(torch.randn(adapter.d, generator=g) * 0.5)
        adapters.append(adapter)
        rows.append(engine.layout.pack_adapter(adapter))
        length = tokens if not axes["takes_mask"] else max(1, min(tokens, 6 - i))
        mask = torch.ones(1, length, dtype=torch.bool)
        if axes["takes_mask"] and i == 1:
            mask[:, -1] = False
        conditions.append(Condition(torch.randn(1, length, axes["text_dim"], generator=g), mask))
    arrays = [condition_arrays(x, tokens, axes["takes_mask"]) for x in conditions]
    embeddings = np.concatenate([e for e, _ in arrays])
    masks = np.concatenate([k for _, k in arrays])
    results = {}
    frame_counts = [1, 2] if info["denoiser"]["frames"] == ANY_FRAMES else [1]
    worst = 0.0
    for frames in frame_counts:
        latents = torch.randn(2, c, frames, 4 * m, 6 * m, generator=g)
        t = torch.rand(2, generator=g)
        with torch.no_grad():
            expected = torch.cat([adapters[i](latents[i: i + 1], t[i: i + 1], conditions[i]).float()
                                  for i in range(2)]).numpy()
        got = engine.run_denoiser(latents.numpy(), t.numpy(), embeddings, masks, np.stack(rows))
        worst = max(worst, float(np.abs(got - expected).max()))
    results["denoiser"] = worst
    for key, name in engine.decoders.items():
        counts = [1, 2] if key == ANY_FRAMES else [int(key)]
        worst = 0.0
        for frames in counts:
            latents = torch.randn(2, c, frames, 4, 6, generator=g)
            with torch.no_grad():
                expected = backbone.decode(latents).float().numpy()
            worst = max(worst, float(np.abs(engine.run_decoder(latents.numpy()) - expected).max()))
        results[name] = worst
    return results
