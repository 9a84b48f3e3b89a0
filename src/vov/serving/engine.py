"""Exported engines run in-process with ONNX Runtime, and the glue that turns any engine into the
`velocity` / `decode` callables that `vov.codec.decompress` takes.

An engine is anything with `denoise(latents, t, lora) -> velocity` and `decode(latents) -> pixels`
over float32 numpy arrays: `OrtEngine` here, or a Triton client (services/decoder). The file's
adaptation travels as one packed `lora` row (vov.serving.export.LoraLayout), so every engine serves every file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from vov.errors import BackboneMismatch, UsageError, VovError


class EngineUnavailable(VovError):
    """The process that runs the models (Triton) cannot be reached or failed; worth a retry."""


class Engine(Protocol):
    def denoise(self, latents: np.ndarray, t: np.ndarray, lora: np.ndarray) -> np.ndarray: ...

    def decode(self, latents: np.ndarray) -> np.ndarray: ...


def ort_session(path: str | Path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own untyped errors for missing or bad files
        raise UsageError(f"{path}: cannot load the ONNX model ({e})") from None


class OrtEngine:
    """The exported denoiser and latent decoder, run by ONNX Runtime in this process."""

    def __init__(self, repository: str | Path, threads: int | None = None):
        from vov.serving.export import LoraLayout, read_engine

        repo = Path(repository)
        info = read_engine(repo)
        if info is None:
            raise UsageError(f"{repo}: no exported engine here; run `vov export --repository {repo}`")
        self.info = info
        self.layout = LoraLayout.from_json(info["layout"])
        threads = int(os.environ.get("VOV_ORT_THREADS", "0")) if threads is None else threads
        self._denoiser = ort_session(repo / "denoiser" / "1" / "model.onnx", threads)
        self._decoder = ort_session(repo / "vae_decoder" / "1" / "model.onnx", threads)

    def denoise(self, latents, t, lora):
        return self._denoiser.run(None, {"latents": latents, "t": t, "lora": lora})[0]

    def decode(self, latents):
        return self._decoder.run(None, {"latents": latents})[0]


def check_backbone(info: dict, backbone) -> None:
    """The engine must have been exported from exactly this backbone's weights."""
    if info.get("backbone") != backbone.name or info.get("content_hash") != backbone.content_hash.hex():
        raise BackboneMismatch(
            f"the served engine was exported from backbone {info.get('backbone')!r} ({info.get('content_hash')}), "
            f"this decoder has {backbone.name!r} ({backbone.content_hash.hex()})"
        )


def callables(engine: Engine, lora_row: np.ndarray) -> tuple[Callable, Callable]:
    """(velocity, decode) for vov.codec.decompress, with one file's packed adaptation."""
    import torch

    lora = np.ascontiguousarray(lora_row, dtype=np.float32)[None]

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        rows = lora if batch == 1 else np.repeat(lora, batch, axis=0)
        out = engine.denoise(np.ascontiguousarray(x.numpy(), dtype=np.float32),
                             np.ascontiguousarray(t.numpy(), dtype=np.float32), rows)
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def decode(latents: torch.Tensor) -> torch.Tensor:
        out = engine.decode(np.ascontiguousarray(latents.numpy(), dtype=np.float32))
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    return velocity, decode


def decompress(data: bytes, engine: Engine, layout, backbone, on_step=None):
    """vov.codec.decompress with the denoiser and latent decoder run by `engine`."""
    from vov import codec

    f = codec.parse(data)
    adapter = codec.adapter_for(f, backbone)
    velocity, decode = callables(engine, layout.pack_adapter(adapter))
    return codec.decompress(data, backbone=backbone, velocity=velocity, decode=decode, on_step=on_step)


def parity(backbone, repository: str | Path, rank: int = 4, d: int = 512, seed: int = 0) -> dict[str, float]:
    """Max abs difference between the ONNX graphs and torch (fp32) on random inputs.

    Two different adaptations ride in one batch, so row-wise independence is checked too.
    """
    import torch

    from vov.method.adapters import AdaptedDenoiser, AdapterSpec

    engine = OrtEngine(repository)
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn((2, *backbone.latent_shape(1, 48, 80)), generator=g)
    t = torch.rand(2, generator=g)
    adapters, rows = [], []
    for i in range(2):
        adapter = AdaptedDenoiser(backbone, AdapterSpec(rank=rank, d=d, seed=seed + i))
        adapter.set_theta(torch.randn(adapter.d, generator=g) * 0.5)
        adapters.append(adapter)
        rows.append(engine.layout.pack_adapter(adapter))
    with torch.no_grad():
        expected = torch.cat([adapters[i](latents[i: i + 1], t[i: i + 1]) for i in range(2)]).numpy()
        expected_pixels = backbone.decode(latents).numpy()
    got = engine.denoise(latents.numpy(), t.numpy(), np.stack(rows))
    got_pixels = engine.decode(latents.numpy())
    return {"denoiser": float(np.abs(got - expected).max()), "vae_decoder": float(np.abs(got_pixels - expected_pixels).max())}
