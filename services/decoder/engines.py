"""Where the decoder runs its denoiser and latent decoder: Triton over gRPC, or in-process.

Both serve vov.serving.engine's interface (`open(adapter, condition) -> session`, `session.denoise`,
`decode`) from the same exported graphs, so both give the same pixels for the same file
(tests/services check it). `make_engine` picks Triton when a URL is set.

Through Triton a decode is one sequence of the `denoiser_session` model: its first request carries
the adaptation (the file's own LoRA factors) and the caption, every later one latents and t only,
and closing the session releases it (docs/services.md, "One engine for every file").
"""

from __future__ import annotations

import json
import secrets
import threading
from pathlib import Path

import numpy as np
import torch

from vov.errors import BackboneMismatch, VovError
from vov.limits import LimitExceeded
from vov.serving import contract, export
from vov.serving.contract import check_backbone, condition_arrays, decoder_for
from vov.serving.engine import BaseSession, EngineUnavailable, OrtEngine

HELD = "no adaptation held"  # the session model's word for a decode it no longer holds
UNKNOWN_SEQUENCE = "must specify the START flag"  # Triton's, for a sequence it has forgotten


class _Restart(Exception):
    """The served model no longer holds this decode: send its constants again."""


def _constants(compact: contract.CompactAdapter, embeddings: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The first request's inputs (each with its batch axis of 1)."""
    return {"rank": np.array([[compact.rank]], dtype=np.int32), "slots": compact.slots.reshape(1, -1),
            "factors": compact.factors.reshape(1, -1), "embeddings": embeddings, "mask": mask}


class TritonSession(BaseSession):
    """One decode on Triton: a sequence whose correlation id is drawn at random (63 bits)."""

    def __init__(self, engine: "TritonEngine", constants: dict[str, np.ndarray]):
        self.engine, self.constants = engine, constants
        self.id = secrets.randbits(63) | 1
        self.started = False

    def denoise(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # the sequence batcher takes one row per request: rows of one decode go one after another
        x = np.ascontiguousarray(latents.detach().float().cpu().numpy())
        times = t.detach().float().cpu().numpy().reshape(-1, 1)
        return torch.from_numpy(np.concatenate([self._step(x[i: i + 1], times[i: i + 1]) for i in range(len(x))]))

    def _step(self, latents: np.ndarray, t: np.ndarray) -> np.ndarray:
        for attempt in range(2):
            start = not self.started
            inputs = {"latents": latents, "t": t, **(self.constants if start else {})}
            try:
                out = self.engine.infer(contract.SESSION_MODEL, inputs, "velocity", sequence=(self.id, start, False))
            except LimitExceeded:
                self.started = True  # Triton holds the sequence it was asked to start: closing releases it
                raise
            except _Restart:
                if start or attempt:
                    raise EngineUnavailable(f"the model server (Triton at {self.engine.url}) dropped a decode "
                                            f"it had just started; retry") from None
                self.started = False  # evicted or restarted: the next try starts the sequence again
                continue
            self.started = True
            return out
        raise AssertionError("unreachable")

    def _close(self) -> None:
        if not self.started:
            return
        self.started = False
        try:
            self.engine.infer(contract.SESSION_MODEL, {"t": np.zeros((1, 1), np.float32)}, "velocity",
                              sequence=(self.id, False, True))
        except (VovError, _Restart):
            pass  # the session model drops it after its idle time


class TritonEngine:
    """Triton's `denoiser_session` and latent decoder models through tritonclient's gRPC client.

    A client (one gRPC channel) is created on first use and dropped after a transport error, so
    that a restarted Triton is reached on the next call instead of after the channel's back-off.
    Each new client checks that the served models were exported from this decoder's backbone, with
    the same slot layout. `traffic()` counts what crossed to Triton (tensor bytes and requests).
    """

    def __init__(self, url: str, backbone, timeout: float = 120.0, tls: dict | None = None):
        self.url, self.backbone, self.timeout = url, backbone, timeout
        self.tls = tls or {}  # tritonclient's ssl options: root_certificates, private_key, certificate_chain
        self._client = None
        self._lock = threading.Lock()
        self.layout: contract.LoraLayout | None = None
        self.decoders: dict[str, str] = {}
        self.text_tokens, self.text_dim, self.takes_mask, self.channels = 0, 0, False, backbone.latent_channels
        self._bytes, self._requests = 0, 0

    # ---- connection

    def _connect(self):
        import tritonclient.grpc as tc
        from tritonclient.utils import InferenceServerException

        with self._lock:
            if self._client is not None:
                return self._client
            client = tc.InferenceServerClient(self.url, ssl=bool(self.tls), **self.tls)
            try:
                config = client.get_model_config(contract.SESSION_MODEL, as_json=True, client_timeout=10)["config"]
            except InferenceServerException as e:
                client.close()
                raise self._unavailable(e) from None
            params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
            try:
                check_backbone({"backbone": params.get("vov_backbone"), "content_hash": params.get("vov_content_hash")},
                               self.backbone)
                layout = contract.LoraLayout.for_backbone(self.backbone, int(params.get("vov_max_rank") or 0))
                if params.get("vov_layout_digest") != layout.digest():
                    raise BackboneMismatch(f"the served engine's LoRA slots differ from this decoder's backbone "
                                           f"{self.backbone.name!r}; export the models again with this vov")
                decoders = json.loads(params.get("vov_latent_decoders", "{}").replace("'", '"'))
                int(params["vov_text_tokens"]), int(params["vov_text_dim"])
            except (BackboneMismatch, ValueError, KeyError) as e:
                client.close()
                if isinstance(e, BackboneMismatch):
                    raise
                raise EngineUnavailable(f"Triton at {self.url} serves a {contract.SESSION_MODEL} model without vov's "
                                        f"parameters") from None
            self.layout, self.decoders = layout, decoders
            self.text_tokens, self.text_dim = int(params["vov_text_tokens"]), int(params["vov_text_dim"])
            self.takes_mask = params.get("vov_takes_mask") == "1"
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

    # ---- requests

    def infer(self, model: str, inputs: dict[str, np.ndarray], output: str,
              sequence: tuple[int, bool, bool] | None = None) -> np.ndarray:
        """One request; `sequence` is (correlation id, start, end) for the session model."""
        import tritonclient.grpc as tc
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        client = self._connect()
        tensors = []
        for name, value in inputs.items():
            tensor = tc.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
            tensor.set_data_from_numpy(value)
            tensors.append(tensor)
        options = {}
        if sequence is not None:
            options = {"sequence_id": sequence[0], "sequence_start": sequence[1], "sequence_end": sequence[2]}
        with self._lock:
            self._bytes += sum(int(v.nbytes) for v in inputs.values())
            self._requests += 1
        try:
            result = client.infer(model, tensors, outputs=[tc.InferRequestedOutput(output)],
                                  client_timeout=self.timeout, **options)
        except InferenceServerException as e:
            text = (e.message() or str(e)) if hasattr(e, "message") else str(e)
            if HELD in text or UNKNOWN_SEQUENCE in text:
                raise _Restart() from None
            if text.startswith("vov:") or "INVALID_ARGUMENT" in str(e.status() if hasattr(e, "status") else ""):
                text = text[4:] if text.startswith("vov:") else text.split("] ", 1)[-1]
                raise LimitExceeded(f"the model server refused the request: {text.strip()[:300]}") from None
            self._drop(client)
            raise self._unavailable(e) from None
        return result.as_numpy(output)

    def traffic(self) -> dict[str, int]:
        with self._lock:
            return {"bytes": self._bytes, "requests": self._requests}

    # ---- the engine interface

    def open(self, adapter, condition=None) -> TritonSession:
        self._connect()
        condition = condition if condition is not None else self.backbone.condition("")
        return self.open_compact(self.layout.compact(adapter),
                                 *condition_arrays(condition, self.text_tokens, self.takes_mask, pad=False))

    def open_compact(self, compact: contract.CompactAdapter, embeddings: np.ndarray, mask: np.ndarray) -> TritonSession:
        return TritonSession(self, _constants(compact, embeddings, mask))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self._connect()
        model = decoder_for(self.decoders, latents.shape[2])
        x = np.ascontiguousarray(latents.detach().float().cpu().numpy())
        return torch.from_numpy(np.array(self.infer(model, {"latents": x}, "pixels")))

    def current_layout(self) -> contract.LoraLayout:
        self._connect()
        return self.layout

    def probe(self, canary: bool) -> None:
        """Raise EngineUnavailable unless Triton and its models are ready (and, with `canary`, infer)."""
        from tritonclient.utils import InferenceServerException

        client = self._connect()
        try:
            for model in (contract.SESSION_MODEL, contract.DENOISER_MODEL, *sorted(set(self.decoders.values()))):
                if not client.is_model_ready(model, client_timeout=2):
                    raise EngineUnavailable(f"Triton at {self.url}: model {model} is not ready")
        except InferenceServerException as e:
            self._drop(client)
            raise self._unavailable(e) from None
        if canary:
            run_canary(self)

    def describe(self) -> str:
        return f"triton {self.url}"


class LocalEngine:
    """The exported graphs run by ONNX Runtime in the decoder's process."""

    def __init__(self, repository: str | Path, backbone, threads: int | None = None):
        info = contract.read_engine(repository)
        max_rank = info["layout"]["max_rank"] if info else contract.DEFAULT_MAX_RANK
        if not export.is_current(repository, backbone, max_rank):  # missing, or made from other weights
            export.export_repository(backbone, repository, max_rank, log=lambda m: None)
        self.ort = OrtEngine(repository, threads, backbone=backbone)
        check_backbone(self.ort.info, backbone)
        self.layout = self.ort.layout
        self.text_tokens, self.text_dim, self.takes_mask = self.ort.text_tokens, self.ort.text_dim, self.ort.takes_mask
        self.channels = self.ort.channels

    def open(self, adapter, condition=None):
        return self.ort.open(adapter, condition)

    def open_compact(self, compact, embeddings, mask):
        return self.ort.open_compact(compact, embeddings, mask)

    def decode(self, latents):
        return self.ort.decode(latents)

    def current_layout(self) -> contract.LoraLayout:
        return self.layout

    def probe(self, canary: bool) -> None:
        if canary:
            run_canary(self)

    def describe(self) -> str:
        return "onnxruntime"


def run_canary(engine) -> None:
    """One tiny decode step and latent decode through the engine; EngineUnavailable if it fails or
    gives non-finite values. The adaptation is rank 1 and zero on the first slot layer."""
    layout = engine.current_layout()
    first = layout.slots[0]
    compact = contract.CompactAdapter(1, np.zeros(1, np.int32), np.zeros(first.in_features + first.out_features, np.float32))
    embeddings = np.zeros((1, 1 if engine.takes_mask else engine.text_tokens, engine.text_dim), np.float32)
    mask = np.ones(embeddings.shape[:2], bool)
    latents = torch.zeros(1, engine.channels, 1, 4, 4)
    with engine.open_compact(compact, embeddings, mask) as session:
        velocity = session.denoise(latents, torch.full((1,), 0.5))
    pixels = engine.decode(latents)
    if not (torch.isfinite(velocity).all() and torch.isfinite(pixels).all()):
        raise EngineUnavailable("the canary inference gave non-finite values")


def make_engine(backbone, triton_url: str | None, repository: str | Path | None, threads: int | None = None,
                triton_tls: dict | None = None):
    if triton_url:
        return TritonEngine(triton_url, backbone, tls=triton_tls)
    repo = Path(repository) if repository else export.default_repository(backbone.name)
    return LocalEngine(repo, backbone, threads)
