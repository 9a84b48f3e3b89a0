"""The exported graphs served by Triton, reached over gRPC (tritonclient).

A decode is one sequence of the `denoiser_session` model: its first request carries the adaptation
(the file's own LoRA factors) and the caption, every later one latents and t only, and closing the
session releases it (docs/services.md, "One engine for every file"). The latent decoders are
stateless models of their own.

Connections. Every decode has its own connection (a tritonclient, one gRPC channel) from its
first request to its release; a latent decode, a health probe and the canary each open their own
and close it. A failure (Triton restarted, a channel closed, a refused reply) ends nothing but the
call that met it. Every error of tritonclient or gRPC comes out typed: LimitExceeded for a request
Triton refuses (its message starts with "vov:"), EngineUnavailable (worth a retry) for the rest.

Restarts. The session model holds nothing of a decode but its constants (the adaptation and the
caption); each step's velocity is a function of those, the step's latents and t. So when Triton
loses a decode (killed, stopped, restarted, or it dropped the sequence), the decode waits until a
Triton serves again, starts its sequence again there (a START request with the constants and the
step that failed) and goes on: the same velocities, so the same pixels as an undisturbed decode,
and nothing already computed or sent is computed or sent again. The wait is bounded
(`retry_seconds` from the failure) and so are the attempts (`max_attempts` a decode); after
either, the decode fails with EngineUnavailable.

Several Triton replicas: with a URL `dns:///NAME:PORT` (a headless Service, whose name lists the
ready Triton pods) the engine resolves NAME again every few seconds. Each decode's sequence starts
on the replica holding the fewest open decodes and stays on it to its end; a replica that leaves the
name (its readiness went off: it drains) gets no new sequence while the ones it holds finish there,
and one added is used from the next lookup. A decode whose replica lost it starts again on a replica
the name lists then.

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

from vov.cancel import checkpoint
from vov.errors import BackboneMismatch
from vov.limits import LimitExceeded
from vov.serving.contract import (DENOISER_MODEL, SESSION_MODEL, CompactAdapter, LoraLayout, check_backbone,
                                  condition_arrays, decoder_for)
from vov.serving.engines.base import BaseSession, EngineUnavailable, run_canary

HELD = "no adaptation held"  # the session model's word for a decode it no longer holds
UNKNOWN_SEQUENCE = "must specify the START flag"  # Triton's, for a sequence it has forgotten
REFUSED = "vov:"  # the start of the message of a request a vov model refuses: never sent again

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


class SequenceLost(Exception):
    """The served model no longer holds this decode: start its sequence again."""


def _message(error) -> str:
    text = error.message() if hasattr(error, "message") else ""
    if not text and hasattr(error, "details"):
        text = error.details() or ""
    return text or str(error) or type(error).__name__


def classify(error: BaseException, address: str) -> Exception:
    """The typed error for anything tritonclient or gRPC raised on a request to `address`."""
    text = _message(error)
    if HELD in text or UNKNOWN_SEQUENCE in text:
        return SequenceLost(text)
    status = str(error.status()) if hasattr(error, "status") and callable(error.status) else ""
    if text.startswith(REFUSED) or "INVALID_ARGUMENT" in status:
        text = text[len(REFUSED):] if text.startswith(REFUSED) else text.split("] ", 1)[-1]
        return LimitExceeded(f"the model server refused the request: {text.strip()[:300]}")
    return EngineUnavailable(f"the model server (Triton at {address}) is unavailable: "
                             f"{text.splitlines()[0][:200]}; retry when it is back")


def _constants(compact: CompactAdapter, embeddings: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The first request's inputs (each with its batch axis of 1)."""
    return {"rank": np.array([[compact.rank]], dtype=np.int32), "slots": compact.slots.reshape(1, -1),
            "factors": compact.factors.reshape(1, -1), "embeddings": embeddings, "mask": mask}


class TritonSession(BaseSession):
    """One decode on Triton: a sequence whose correlation id is drawn at random (63 bits), over a
    connection of its own. `patient` (every decode): wait for Triton and start again when it loses
    the sequence (module docstring); the canary is not patient, so health sees a failure at once."""

    def __init__(self, engine: "TritonEngine", constants: dict[str, np.ndarray], patient: bool = True):
        self.engine, self.constants, self.patient = engine, constants, patient
        self.id = secrets.randbits(63) | 1
        self.started = False
        self.address: str | None = None  # the replica that holds the sequence, from its start
        self.client = None  # this decode's own connection to that replica
        self.attempts = 0

    def denoise(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # the sequence batcher takes one row per request: rows of one decode go one after another
        x = np.ascontiguousarray(latents.detach().float().cpu().numpy())
        times = t.detach().float().cpu().numpy().reshape(-1, 1)
        return torch.from_numpy(np.concatenate([self._step(x[i: i + 1], times[i: i + 1]) for i in range(len(x))]))

    def _step(self, latents: np.ndarray, t: np.ndarray) -> np.ndarray:
        failed_at = None
        while True:
            start = not self.started
            try:
                if self.client is None:
                    self.address = self.engine.place()
                    self.client = self.engine.connect(self.address)
                inputs = {"latents": latents, "t": t, **(self.constants if start else {})}
                out = self.engine.infer(SESSION_MODEL, inputs, "velocity", sequence=(self.id, start, False),
                                        client=self.client, address=self.address)
            except LimitExceeded:
                self.started = True  # Triton holds the sequence it was asked to start: closing releases it
                raise
            except (SequenceLost, EngineUnavailable) as e:
                failed_at = failed_at or time.monotonic()
                self._detach()
                if self.started:
                    _notify("restart")
                self.started = False
                self.attempts += 1
                if not self.patient:
                    raise e if isinstance(e, EngineUnavailable) else EngineUnavailable(
                        f"the model server dropped a decode it had just started: {e}; retry") from None
                self.engine.wait_until_serving(failed_at, self.attempts, e)
                continue
            self.started = True
            return out

    def _detach(self) -> None:
        """Let go of the connection and the replica (the sequence, if any, is Triton's to drop)."""
        client, self.client = self.client, None
        if client is not None:
            self.engine.disconnect(client)
        if self.address is not None:
            self.engine.unplace(self.address)
            self.address = None

    def _close(self) -> None:
        try:
            if self.started and self.client is not None:
                self.engine.infer(SESSION_MODEL, {"t": np.zeros((1, 1), np.float32)}, "velocity",
                                  sequence=(self.id, False, True), client=self.client, address=self.address)
        except (EngineUnavailable, LimitExceeded, SequenceLost):
            pass  # the session model drops it after its idle time
        finally:
            self.started = False
            self._detach()


class TritonEngine:
    """Triton's `denoiser_session` and latent decoder models through tritonclient's gRPC client.

    `url`: HOST:PORT, or dns:///NAME:PORT for every address NAME lists (module docstring); `resolve`
    replaces the lookup (a callable returning HOST:PORT strings). The served models' configuration
    is checked once per replica (again after that replica failed): exported from this decoder's
    backbone, with the same slot layout. `retry_seconds` and `max_attempts` bound a decode's waits
    for Triton; `on_unavailable` is told whenever a call finds Triton unavailable (the decoder's
    health checks at once). `traffic()` counts what crossed to Triton (tensor bytes and requests).
    """

    def __init__(self, url: str, backbone, timeout: float = 120.0, tls: dict | None = None,
                 resolve_every: float = 5.0, resolve: Callable[[], list[str]] | None = None,
                 retry_seconds: float = 120.0, max_attempts: int = 20, on_unavailable: Callable[[], None] | None = None):
        self.url, self.backbone, self.timeout = url, backbone, timeout
        self.tls = tls or {}  # tritonclient's ssl options: root_certificates, private_key, certificate_chain
        self.resolve_every = resolve_every
        self.retry_seconds, self.max_attempts = retry_seconds, max_attempts
        self.on_unavailable = on_unavailable
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
        self._checked: set[str] = set()  # replicas whose models' configuration was checked
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

    # ---- connections

    def connect(self, address: str):
        """A new connection to the replica at `address`, whose models are checked on first use."""
        import tritonclient.grpc as tc

        options = {"channel_args": [("grpc.ssl_target_name_override", self._name)]} if self.tls and self._name else {}
        try:
            client = tc.InferenceServerClient(address, ssl=bool(self.tls), **self.tls, **options)
        except Exception as e:  # unreadable TLS files, a malformed address
            raise self._failed(classify(e, address), address) from None
        try:
            with self._lock:
                checked = address in self._checked
            if not checked:
                self._check(address, client)
        except BaseException:
            self.disconnect(client)
            raise
        return client

    @staticmethod
    def disconnect(client) -> None:
        try:
            client.close()
        except Exception:
            pass

    def _check(self, address: str, client) -> None:
        """The served session model was exported from this decoder's backbone, with its slot layout."""
        try:
            config = client.get_model_config(SESSION_MODEL, as_json=True, client_timeout=10)["config"]
        except Exception as e:
            raise self._failed(classify(e, address), address) from None
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        try:
            check_backbone({"backbone": params.get("vov_backbone"), "content_hash": params.get("vov_content_hash")},
                           self.backbone)
            layout = LoraLayout.for_backbone(self.backbone, int(params.get("vov_max_rank") or 0))
            if params.get("vov_layout_digest") != layout.digest():
                raise BackboneMismatch(f"the served engine's LoRA slots differ from this decoder's backbone "
                                       f"{self.backbone.name!r}; export the models again with this vov")
            decoders = json.loads(params.get("vov_latent_decoders", "{}").replace("'", '"'))
            tokens, dim = int(params["vov_text_tokens"]), int(params["vov_text_dim"])
        except (ValueError, KeyError):
            raise EngineUnavailable(f"Triton at {address} serves a {SESSION_MODEL} model without vov's "
                                    f"parameters") from None
        with self._lock:
            if self.layout is not None and layout.max_rank != self.layout.max_rank:
                raise BackboneMismatch(f"Triton at {address} serves rank {layout.max_rank}, another replica "
                                       f"{self.layout.max_rank}: every replica must serve one export")
            self.layout, self.decoders = layout, decoders
            self.text_tokens, self.text_dim = tokens, dim
            self.takes_mask = params.get("vov_takes_mask") == "1"
            self._checked.add(address)

    def _failed(self, error: Exception, address: str) -> Exception:
        """Note that `address` failed (its models are checked again on the next connection)."""
        if isinstance(error, EngineUnavailable):
            with self._lock:
                self._checked.discard(address)
            if self.on_unavailable is not None:
                try:
                    self.on_unavailable()
                except Exception:
                    pass
        return error

    def serving(self) -> str | None:
        """The first replica whose server and session model say they are ready, or None."""
        try:
            addresses = self.addresses()
        except EngineUnavailable:
            return None
        for address in addresses:
            client = None
            try:
                client = self.connect(address)
                if client.is_server_ready(client_timeout=2) and client.is_model_ready(SESSION_MODEL, client_timeout=2):
                    return address
            except (EngineUnavailable, BackboneMismatch):
                pass
            except Exception:  # tritonclient's own errors: not ready
                pass
            finally:
                if client is not None:
                    self.disconnect(client)
        return None

    def wait_until_serving(self, failed_at: float, attempts: int, error: Exception) -> None:
        """After a decode's `attempts`-th failure (the first at `failed_at`): return once a replica
        serves and a short back-off has passed, or raise EngineUnavailable when the bounds are
        reached. A cancelled call stops waiting at once (vov.cancel)."""
        backoff = min(4.0, 0.25 * 2 ** min(attempts - 1, 8))
        deadline = failed_at + self.retry_seconds
        resume = time.monotonic() + backoff
        while True:
            checkpoint()
            now = time.monotonic()
            if attempts > self.max_attempts or now >= deadline:
                why = (f"gave up after {attempts} attempts" if attempts > self.max_attempts else
                       f"not back within {self.retry_seconds:g} s")
                raise EngineUnavailable(f"the model server ({self.url}) {why}: {_message(error)[:200]}; retry") from None
            if now >= resume and self.serving() is not None:
                return
            time.sleep(min(0.25, max(0.0, deadline - now)))

    # ---- requests

    def infer(self, model: str, inputs: dict[str, np.ndarray], output: str,
              sequence: tuple[int, bool, bool] | None = None, client=None, address: str | None = None) -> np.ndarray:
        """One request; `sequence` is (correlation id, start, end) for the session model. Over
        `client` (a decode's own connection to `address`), or over a connection made for this
        request alone (to `address`, default the first replica listed)."""
        import tritonclient.grpc as tc
        from tritonclient.utils import np_to_triton_dtype

        address = address or self.addresses()[0]
        own = client is None
        if own:
            client = self.connect(address)
        try:
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
                array = result.as_numpy(output)
            except Exception as e:  # every tritonclient and gRPC error, typed
                _notify("request", model, time.perf_counter() - began, False)
                raise self._failed(classify(e, address), address) from None
            _notify("request", model, time.perf_counter() - began, True)
            return array
        finally:
            if own:
                self.disconnect(client)

    def traffic(self) -> dict[str, int]:
        with self._lock:
            return {"bytes": self._bytes, "requests": self._requests}

    # ---- the engine interface

    def open(self, adapter, condition=None) -> TritonSession:
        layout = self.current_layout(patient=True)
        condition = condition if condition is not None else self.backbone.condition("")
        return self.open_compact(layout.compact(adapter),
                                 *condition_arrays(condition, self.text_tokens, self.takes_mask, pad=False))

    def open_compact(self, compact: CompactAdapter, embeddings: np.ndarray, mask: np.ndarray,
                     patient: bool = True) -> TritonSession:
        return TritonSession(self, _constants(compact, embeddings, mask), patient)

    def decode(self, latents: torch.Tensor, patient: bool = True) -> torch.Tensor:
        x = np.ascontiguousarray(latents.detach().float().cpu().numpy())
        failed_at, attempts = None, 0
        while True:
            address = None
            try:
                self.current_layout()  # the latent decoders' names come with the served configuration
                model = decoder_for(self.decoders, latents.shape[2])
                address = self.place()  # a stateless call: the least busy replica
                return torch.from_numpy(np.array(self.infer(model, {"latents": x}, "pixels", address=address)))
            except EngineUnavailable as e:
                if not patient:
                    raise
                failed_at, attempts = failed_at or time.monotonic(), attempts + 1
                self.wait_until_serving(failed_at, attempts, e)
            finally:
                if address is not None:
                    self.unplace(address)

    def current_layout(self, patient: bool = False) -> LoraLayout:
        """The served slot layout (checked on a replica's first connection); `patient`: wait for a
        Triton to serve first if none was reached yet."""
        failed_at, attempts = None, 0
        while self.layout is None:
            try:
                self.disconnect(self.connect(self.addresses()[0]))
            except EngineUnavailable as e:
                if not patient:
                    raise
                failed_at, attempts = failed_at or time.monotonic(), attempts + 1
                self.wait_until_serving(failed_at, attempts, e)
        return self.layout

    def probe(self, canary: bool) -> None:
        """Raise EngineUnavailable unless a Triton replica and its models are ready (and, with
        `canary`, infer), each check over a connection of its own and without waiting."""
        failures = []
        for address in self.addresses():
            client = None
            try:
                client = self.connect(address)
                for model in (SESSION_MODEL, DENOISER_MODEL, *sorted(set(self.decoders.values()))):
                    try:
                        ready = client.is_model_ready(model, client_timeout=2)
                    except Exception as e:
                        raise self._failed(classify(e, address), address) from None
                    if not ready:
                        raise EngineUnavailable(f"Triton at {address}: model {model} is not ready")
            except EngineUnavailable as e:
                failures.append(str(e))
                continue
            finally:
                if client is not None:
                    self.disconnect(client)
            if canary:
                run_canary(self, open_compact=lambda *a: self.open_compact(*a, patient=False),
                           decode=lambda latents: self.decode(latents, patient=False))
            return
        raise EngineUnavailable(failures[0] if len(failures) == 1 else
                                f"no Triton replica of {self.url} is ready: " + "; ".join(failures)[:600])

    def describe(self) -> str:
        return f"triton {self.url}"
