"""The exported graphs served by Triton, reached over gRPC (tritonclient).

A decode is one sequence of the `denoiser_session` model: its first request carries the adaptation
(the file's own LoRA factors) and the caption, every later one latents and t only, and closing the
session releases it (docs/services.md, "One engine for every file"). The latent decoders are
stateless models of their own.

Several Triton replicas: with a URL `dns:///NAME:PORT` (a headless Service, whose name lists the
ready Triton pods) the engine resolves NAME again every few seconds and keeps a client per address.
Each decode's sequence starts on the replica holding the fewest open decodes and stays on it to its
end; a replica that leaves the name (its readiness went off: it drains) gets no new sequence while
the ones it holds finish there, and one added is used from the next lookup. A decode whose replica
lost it starts again on a replica the name lists then.

Observers (`observe`) hear of every request (model, seconds, whether it succeeded) and of every
restarted sequence: the decoder service counts them in its metrics.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from typing import Callable

import numpy as np
import torch

from vov.errors import BackboneMismatch, VovError
from vov.limits import LimitExceeded
from vov.serving.contract import (DENOISER_MODEL, SESSION_MODEL, CompactAdapter, LoraLayout, check_backbone,
                                  condition_arrays, decoder_for)
from vov.serving.engines.base import BaseSession, EngineUnavailable, run_canary

HELD = "no adaptation held"  # the session model's word for a decode it no longer holds
UNKNOWN_SEQUENCE = "must specify the START flag"  # Triton's, for a sequence it has forgotten


DNS = "dns:///"
_observers: list[Callable[..., None]] = []


def observe(callback: Callable[..., None]) -> None:
    """Call `callback("request", model, seconds, ok)` after every request to Triton and
    `callback("restart")` whenever a decode's sequence is started again."""
    _observers.append(callback)


def _notify(*event) -> None:
    for callback in _observers:
        try:
            callback(*event)
        except Exception:  # an observer never breaks a decode
            pass


def lookup(host: str, port: str) -> list[str]:
    """The addresses `host` resolves to, as HOST:PORT strings (IPv6 in brackets), in a stable order."""
    found = set()
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = sockaddr[0]
        found.add(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
    return sorted(found)


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
        self.address: str | None = None  # the replica that holds the sequence, from its start

    def denoise(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # the sequence batcher takes one row per request: rows of one decode go one after another
        x = np.ascontiguousarray(latents.detach().float().cpu().numpy())
        times = t.detach().float().cpu().numpy().reshape(-1, 1)
        return torch.from_numpy(np.concatenate([self._step(x[i: i + 1], times[i: i + 1]) for i in range(len(x))]))

    def _step(self, latents: np.ndarray, t: np.ndarray) -> np.ndarray:
        for attempt in range(2):
            start = not self.started
            if start and self.address is None:
                self.address = self.engine.place()
            inputs = {"latents": latents, "t": t, **(self.constants if start else {})}
            try:
                out = self.engine.infer(SESSION_MODEL, inputs, "velocity", sequence=(self.id, start, False),
                                        address=self.address)
            except LimitExceeded:
                self.started = True  # Triton holds the sequence it was asked to start: closing releases it
                raise
            except _Restart:
                if start or attempt:
                    raise EngineUnavailable(f"the model server (Triton at {self.address}) dropped a decode "
                                            f"it had just started; retry") from None
                _notify("restart")
                self.started = False  # evicted or restarted: start again, on a replica listed now
                self._release()
                continue
            self.started = True
            return out
        raise AssertionError("unreachable")

    def _release(self) -> None:
        if self.address is not None:
            self.engine.unplace(self.address)
            self.address = None

    def _close(self) -> None:
        if not self.started:
            self._release()
            return
        self.started = False
        try:
            self.engine.infer(SESSION_MODEL, {"t": np.zeros((1, 1), np.float32)}, "velocity",
                              sequence=(self.id, False, True), address=self.address)
        except (VovError, _Restart):
            pass  # the session model drops it after its idle time
        finally:
            self._release()


class TritonEngine:
    """Triton's `denoiser_session` and latent decoder models through tritonclient's gRPC client.

    `url`: HOST:PORT, or dns:///NAME:PORT for every address NAME lists (module docstring); `resolve`
    replaces the lookup (a callable returning HOST:PORT strings). A client (one gRPC channel) per
    address is created on first use and dropped after a transport error, so that a restarted Triton
    is reached on the next call instead of after the channel's back-off. Each new client checks that
    the served models were exported from this decoder's backbone, with the same slot layout.
    `traffic()` counts what crossed to Triton (tensor bytes and requests).
    """

    def __init__(self, url: str, backbone, timeout: float = 120.0, tls: dict | None = None,
                 resolve_every: float = 5.0, resolve: Callable[[], list[str]] | None = None):
        self.url, self.backbone, self.timeout = url, backbone, timeout
        self.tls = tls or {}  # tritonclient's ssl options: root_certificates, private_key, certificate_chain
        self.resolve_every = resolve_every
        self._name = None  # the name a TLS certificate must carry when clients dial addresses
        if resolve is None and url.startswith(DNS):
            host, _, port = url[len(DNS):].rpartition(":")
            if not host or not port.isdigit():
                raise EngineUnavailable(f"{url}: expected dns:///NAME:PORT")
            self._name = host

            def resolve() -> list[str]:
                return lookup(host, port)
        self._resolve = resolve or (lambda: [url])
        self._addresses: list[str] = []
        self._resolved_at = float("-inf")
        self._clients: dict[str, object] = {}
        self._open: dict[str, int] = {}
        self._turn = 0
        self._lock = threading.Lock()
        self.layout: LoraLayout | None = None
        self.decoders: dict[str, str] = {}
        self.text_tokens, self.text_dim, self.takes_mask, self.channels = 0, 0, False, backbone.latent_channels
        self._bytes, self._requests = 0, 0

    # ---- replicas

    def addresses(self) -> list[str]:
        """The replicas' addresses, looked up again when the last lookup is older than resolve_every
        (a failed lookup keeps the last answer)."""
        with self._lock:
            now = time.monotonic()
            if now - self._resolved_at >= self.resolve_every or not self._addresses:
                try:
                    found = list(dict.fromkeys(self._resolve()))
                except OSError:
                    found = []
                if found:
                    self._addresses = found
                self._resolved_at = now
            if not self._addresses:
                raise EngineUnavailable(f"the model server ({self.url}) has no address: no Triton is ready; retry")
            return list(self._addresses)

    def place(self) -> str:
        """The replica for a new sequence: the fewest open decodes, taken in turn among equals."""
        addresses = self.addresses()
        with self._lock:
            self._turn += 1
            n = len(addresses)
            chosen = min(range(n), key=lambda i: (self._open.get(addresses[i], 0), (i - self._turn) % n))
            address = addresses[chosen]
            self._open[address] = self._open.get(address, 0) + 1
            return address

    def unplace(self, address: str) -> None:
        with self._lock:
            left = self._open.get(address, 0) - 1
            if left > 0:
                self._open[address] = left
            else:
                self._open.pop(address, None)

    def open_decodes(self) -> dict[str, int]:
        """Open sequences per replica address."""
        with self._lock:
            return dict(self._open)

    # ---- connection

    def _connect(self, address: str | None = None):
        import tritonclient.grpc as tc
        from tritonclient.utils import InferenceServerException

        address = address or self.addresses()[0]
        with self._lock:
            if address in self._clients:
                return self._clients[address]
            options = {"channel_args": [("grpc.ssl_target_name_override", self._name)]} if self.tls and self._name else {}
            client = tc.InferenceServerClient(address, ssl=bool(self.tls), **self.tls, **options)
            try:
                config = client.get_model_config(SESSION_MODEL, as_json=True, client_timeout=10)["config"]
            except InferenceServerException as e:
                client.close()
                raise self._unavailable(e, address) from None
            params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
            try:
                check_backbone({"backbone": params.get("vov_backbone"), "content_hash": params.get("vov_content_hash")},
                               self.backbone)
                layout = LoraLayout.for_backbone(self.backbone, int(params.get("vov_max_rank") or 0))
                if params.get("vov_layout_digest") != layout.digest():
                    raise BackboneMismatch(f"the served engine's LoRA slots differ from this decoder's backbone "
                                           f"{self.backbone.name!r}; export the models again with this vov")
                if self.layout is not None and layout.max_rank != self.layout.max_rank:
                    raise BackboneMismatch(f"Triton at {address} serves rank {layout.max_rank}, another replica "
                                           f"{self.layout.max_rank}: every replica must serve one export")
                decoders = json.loads(params.get("vov_latent_decoders", "{}").replace("'", '"'))
                int(params["vov_text_tokens"]), int(params["vov_text_dim"])
            except (BackboneMismatch, ValueError, KeyError) as e:
                client.close()
                if isinstance(e, BackboneMismatch):
                    raise
                raise EngineUnavailable(f"Triton at {address} serves a {SESSION_MODEL} model without vov's "
                                        f"parameters") from None
            self.layout, self.decoders = layout, decoders
            self.text_tokens, self.text_dim = int(params["vov_text_tokens"]), int(params["vov_text_dim"])
            self.takes_mask = params.get("vov_takes_mask") == "1"
            self._clients[address] = client
            return client

    def _unavailable(self, e, address: str) -> EngineUnavailable:
        text = (e.message() if hasattr(e, "message") else str(e)) or str(e)
        return EngineUnavailable(f"the model server (Triton at {address}) is unavailable: "
                                 f"{text.splitlines()[0][:200]}; retry when it is back")

    def _drop(self, address: str, client) -> None:
        with self._lock:
            if self._clients.get(address) is client:
                del self._clients[address]
        try:
            client.close()
        except Exception:
            pass

    # ---- requests

    def infer(self, model: str, inputs: dict[str, np.ndarray], output: str,
              sequence: tuple[int, bool, bool] | None = None, address: str | None = None) -> np.ndarray:
        """One request to the replica at `address` (default: the first listed); `sequence` is
        (correlation id, start, end) for the session model."""
        import tritonclient.grpc as tc
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        address = address or self.addresses()[0]
        client = self._connect(address)
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
        began = time.perf_counter()
        try:
            result = client.infer(model, tensors, outputs=[tc.InferRequestedOutput(output)],
                                  client_timeout=self.timeout, **options)
        except InferenceServerException as e:
            _notify("request", model, time.perf_counter() - began, False)
            text = (e.message() or str(e)) if hasattr(e, "message") else str(e)
            if HELD in text or UNKNOWN_SEQUENCE in text:
                raise _Restart() from None
            if text.startswith("vov:") or "INVALID_ARGUMENT" in str(e.status() if hasattr(e, "status") else ""):
                text = text[4:] if text.startswith("vov:") else text.split("] ", 1)[-1]
                raise LimitExceeded(f"the model server refused the request: {text.strip()[:300]}") from None
            self._drop(address, client)
            raise self._unavailable(e, address) from None
        _notify("request", model, time.perf_counter() - began, True)
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
        address = self.place()  # a stateless call: the least busy replica
        try:
            self._connect(address)
            model = decoder_for(self.decoders, latents.shape[2])
            x = np.ascontiguousarray(latents.detach().float().cpu().numpy())
            return torch.from_numpy(np.array(self.infer(model, {"latents": x}, "pixels", address=address)))
        finally:
            self.unplace(address)

    def current_layout(self) -> LoraLayout:
        self._connect()
        return self.layout

    def probe(self, canary: bool) -> None:
        """Raise EngineUnavailable unless a Triton replica and its models are ready (and, with
        `canary`, infer)."""
        from tritonclient.utils import InferenceServerException

        failures = []
        for address in self.addresses():
            try:
                client = self._connect(address)
            except EngineUnavailable as e:
                failures.append(str(e))
                continue
            try:
                for model in (SESSION_MODEL, DENOISER_MODEL, *sorted(set(self.decoders.values()))):
                    if not client.is_model_ready(model, client_timeout=2):
                        raise EngineUnavailable(f"Triton at {address}: model {model} is not ready")
            except InferenceServerException as e:
                self._drop(address, client)
                failures.append(str(self._unavailable(e, address)))
                continue
            except EngineUnavailable as e:
                failures.append(str(e))
                continue
            if canary:
                run_canary(self)
            return
        raise EngineUnavailable(failures[0] if len(failures) == 1 else
                                f"no Triton replica of {self.url} is ready: " + "; ".join(failures)[:600])

    def describe(self) -> str:
        return f"triton {self.url}"
