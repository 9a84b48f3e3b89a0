"""Where the decoder runs its denoiser and latent decoder: Triton over gRPC, or in-process.

Both take the same exported ONNX graphs and the same packed adaptation row, so both give the same
pixels for the same file (tests/services check it). `make_engine` picks Triton when a URL is set.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from vov.serving import export
from vov.serving.engine import EngineUnavailable, OrtEngine, check_backbone


class TritonEngine:
    """Triton's `denoiser` and `vae_decoder` models through tritonclient's gRPC client.

    A client (one gRPC channel) is created on first use and dropped after a transport error, so
    that a restarted Triton is reached on the next call instead of after the channel's back-off.
    Each new client checks that the served models were exported from this decoder's backbone.
    """

    def __init__(self, url: str, backbone, timeout: float = 120.0, tls: dict | None = None):
        self.url, self.backbone, self.timeout = url, backbone, timeout
        self.tls = tls or {}  # tritonclient's ssl options: root_certificates, private_key, certificate_chain
        self._client = None
        self._lock = threading.Lock()
        self.layout: export.LoraLayout | None = None

    def _connect(self):
        import tritonclient.grpc as tc
        from tritonclient.utils import InferenceServerException

        with self._lock:
            if self._client is not None:
                return self._client
            client = tc.InferenceServerClient(self.url, ssl=bool(self.tls), **self.tls)
            try:
                config = client.get_model_config("denoiser", as_json=True, client_timeout=10)["config"]
                client.get_model_config("vae_decoder", as_json=True, client_timeout=10)
            except InferenceServerException as e:
                client.close()
                raise self._unavailable(e) from None
            params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
            check_backbone({"backbone": params.get("vov_backbone"), "content_hash": params.get("vov_content_hash")},
                           self.backbone)
            max_rank = int(params.get("vov_max_rank") or export.DEFAULT_MAX_RANK)
            self.layout = export.LoraLayout.for_backbone(self.backbone, max_rank)
            self._client = client
            return client

    def _unavailable(self, e) -> EngineUnavailable:
        text = (e.message() if hasattr(e, "message") else str(e)) or str(e)
        return EngineUnavailable(f"the model server (Triton at {self.url}) is unavailable: {text.splitlines()[0][:200]}; "
                                 f"retry when it is back")

    def _drop(self, client) -> None:
        with self._lock:
            if self._client is client:
                self._client = None
        try:
            client.close()
        except Exception:
            pass

    def _infer(self, model: str, inputs: dict[str, np.ndarray], output: str) -> np.ndarray:
        import tritonclient.grpc as tc
        from tritonclient.utils import InferenceServerException

        client = self._connect()
        tensors = []
        for name, value in inputs.items():
            tensor = tc.InferInput(name, list(value.shape), "FP32")
            tensor.set_data_from_numpy(value)
            tensors.append(tensor)
        try:
            result = client.infer(model, tensors, outputs=[tc.InferRequestedOutput(output)], client_timeout=self.timeout)
        except InferenceServerException as e:
            self._drop(client)
            raise self._unavailable(e) from None
        return result.as_numpy(output)

    def denoise(self, latents, t, lora):
        return self._infer("denoiser", {"latents": latents, "t": t.reshape(-1, 1), "lora": lora}, "velocity")

    def decode(self, latents):
        return self._infer("vae_decoder", {"latents": latents}, "pixels")

    def current_layout(self) -> export.LoraLayout:
        self._connect()
        return self.layout

    def probe(self, canary: bool) -> None:
        """Raise EngineUnavailable unless Triton and both models are ready (and, with `canary`, infer)."""
        from tritonclient.utils import InferenceServerException

        client = self._connect()
        try:
            for model in ("denoiser", "vae_decoder"):
                if not client.is_model_ready(model, client_timeout=2):
                    raise EngineUnavailable(f"Triton at {self.url}: model {model} is not ready")
        except InferenceServerException as e:
            self._drop(client)
            raise self._unavailable(e) from None
        if canary:
            run_canary(self, self.layout, self.backbone.latent_channels)

    def describe(self) -> str:
        return f"triton {self.url}"


class LocalEngine:
    """The exported graphs run by ONNX Runtime in the decoder's process."""

    def __init__(self, repository: str | Path, backbone, threads: int | None = None):
        info = export.read_engine(repository)
        max_rank = info["layout"]["max_rank"] if info else export.DEFAULT_MAX_RANK
        if not export.is_current(repository, backbone, max_rank):  # missing, or made from other weights
            export.export_repository(backbone, repository, max_rank, log=lambda m: None)
        self.ort = OrtEngine(repository, threads)
        check_backbone(self.ort.info, backbone)
        self.layout = self.ort.layout
        self.backbone_channels = backbone.latent_channels

    def denoise(self, latents, t, lora):
        return self.ort.denoise(latents, t, lora)

    def decode(self, latents):
        return self.ort.decode(latents)

    def current_layout(self) -> export.LoraLayout:
        return self.layout

    def probe(self, canary: bool) -> None:
        if canary:
            run_canary(self, self.layout, self.backbone_channels)

    def describe(self) -> str:
        return "onnxruntime"


def run_canary(engine, layout: export.LoraLayout, channels: int) -> None:
    """One tiny inference through both models; EngineUnavailable if it fails or gives non-finite values."""
    latents = np.zeros((1, channels, 1, 4, 4), dtype=np.float32)
    velocity = engine.denoise(latents, np.full(1, 0.5, dtype=np.float32), np.zeros((1, layout.total), dtype=np.float32))
    pixels = engine.decode(latents)
    if not (np.isfinite(velocity).all() and np.isfinite(pixels).all()):
        raise EngineUnavailable("the canary inference gave non-finite values")


def make_engine(backbone, triton_url: str | None, repository: str | Path | None, threads: int | None = None,
                triton_tls: dict | None = None):
    if triton_url:
        return TritonEngine(triton_url, backbone, tls=triton_tls)
    repo = Path(repository) if repository else export.default_repository(backbone.name)
    return LocalEngine(repo, backbone, threads)
