"""The exported graphs served by Triton, reached over gRPC (tritonclient).

A decode is one sequence of the `denoiser_session` model: its first request carries the adaptation
(the file's own LoRA factors) and the caption, every later one latents and t only, and closing the
session releases it (docs/services.md, "One engine for every file"). The latent decoders are
stateless models of their own.
"""

from __future__ import annotations

import json
import secrets
import threading

import numpy as np
import torch

from vov.errors import BackboneMismatch, VovError
from vov.limits import LimitExceeded
from vov.serving.contract import (DENOISER_MODEL, SESSION_MODEL, CompactAdapter, LoraLayout, check_backbone,
                                  condition_arrays, decoder_for)
from vov.serving.engines.base import BaseSession, EngineUnavailable, run_canary

HELD = "no adaptation held"  # the session model's word for a decode it no longer holds
UNKNOWN_SEQUENCE = "must specify the START flag"  # Triton's, for a sequence it has forgotten


class _Restart(Exception):
    """The served model no longer holds this decode: send its constants again."""


def _constants(compact: CompactAdapter, embeddings: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
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
                out = self.engine.infer(SESSION_MODEL, inputs, "velocity", sequence=(self.id, start, False))
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
            self.engine.infer(SESSION_MODEL, {"t": np.zeros((1, 1), np.float32)}, "velocity",
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
        self.layout: LoraLayout | None = None
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
                config = client.get_model_config(SESSION_MODEL, as_json=True, client_timeout=10)["config"]
            except InferenceServerException as e:
                client.close()
                raise self._unavailable(e) from None
            params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
            try:
                check_backbone({"backbone": params.get("vov_backbone"), "content_hash": params.get("vov_content_hash")},
                               self.backbone)
                layout = LoraLayout.for_backbone(self.backbone, int(params.get("vov_max_rank") or 0))
                if params.get("vov_layout_digest") != layout.digest():
                    raise BackboneMismatch(f"the served engine's LoRA slots differ from this decoder's backbone "
                                           f"{self.backbone.name!r}; export the models again with this vov")
                decoders = json.loads(params.get("vov_latent_decoders", "{}").replace("'", '"'))
                int(params["vov_text_tokens"]), int(params["vov_text_dim"])
            except (BackboneMismatch, ValueError, KeyError) as e:
                client.close()
                if isinstance(e, BackboneMismatch):
                    raise
                raise EngineUnavailable(f"Triton at {self.url} serves a {SESSION_MODEL} model without vov's "
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

    def open_compact(self, compact: CompactAdapter, embeddings: np.ndarray, mask: np.ndarray) -> TritonSession:
        return TritonSession(self, _constants(compact, embeddings, mask))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self._connect()
        model = decoder_for(self.decoders, latents.shape[2])
        x = np.ascontiguousarray(latents.detach().float().cpu().numpy())
        return torch.from_numpy(np.array(self.infer(model, {"latents": x}, "pixels")))

    def current_layout(self) -> LoraLayout:
        self._connect()
        return self.layout

    def probe(self, canary: bool) -> None:
        """Raise EngineUnavailable unless Triton and its models are ready (and, with `canary`, infer)."""
        from tritonclient.utils import InferenceServerException

        client = self._connect()
        try:
            for model in (SESSION_MODEL, DENOISER_MODEL, *sorted(set(self.decoders.values()))):
                if not client.is_model_ready(model, client_timeout=2):
                    raise EngineUnavailable(f"Triton at {self.url}: model {model} is not ready")
        except InferenceServerException as e:
            self._drop(client)
            raise self._unavailable(e) from None
        if canary:
            run_canary(self)

    def describe(self) -> str:
        return f"triton {self.url}"
