"""The exported graphs in ONNX Runtime, in this process.

`OrtEngine` reads a repository that `vov export` wrote (its engine file, the denoiser and the latent
decoders) and runs the graphs on ONNX Runtime's CPU or CUDA execution provider; a chunked latent
decoder's two graphs it loops over the clip's latent frames (vov.serving.chunks). Each row of a batch
carries its own adaptation and caption (`run_denoiser`), as in Triton.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vov.errors import UsageError
from vov.limits import LimitExceeded
from vov.serving.chunks import decode_in_chunks
from vov.serving.contract import LoraLayout, condition_arrays, decoder_for, pad_condition, read_engine
from vov.serving.engines.base import BaseSession


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
        chunks = info.get("latent_decoder_chunks")
        graphs = [chunks["first"], chunks["next"]] if chunks else set(self.decoders.values())
        self._decoders = {name: ort_session(repo / name / "1" / "model.onnx", threads, providers) for name in graphs}
        self.chunks = chunks

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
        if self.chunks is None:
            return self._decoders[model].run(None, {"latents": latents})[0]
        first, later = self._decoders[self.chunks["first"]], self._decoders[self.chunks["next"]]

        def runner(session):
            return lambda feed, with_cache: session.run(None if with_cache else ["pixels"], feed)

        return decode_in_chunks(runner(first), runner(later), latents, len(self.chunks["caches"]))

    def check(self, latents: np.ndarray, max_frames: int) -> None:
        """The bounds the served models check (model_repository), for the graphs run here."""
        if latents.ndim != 5 or latents.shape[1] != self.channels:
            raise UsageError(f"latents must be (batch, {self.channels}, frames, height, width), not {latents.shape}")
        _, _, f, h, w = latents.shape
        if f > max_frames:
            raise LimitExceeded(f"latents have {f} frames, at most {max_frames} allowed by this engine")
        if h * w > int(self.info["axes"]["max_cells"]):
            raise LimitExceeded(f"latents of {h}x{w} cells a frame exceed {self.info['axes']['max_cells']}, "
                                f"this engine's bound")
