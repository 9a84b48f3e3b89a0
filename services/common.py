"""What both services share: flags with environment defaults, JSON-line logs, status codes,
health and reflection, streaming a worker's events, and graceful shutdown."""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from concurrent import futures
from typing import Callable, Iterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vov import cancel
from vov.cli import flags
from vov.cancel import Cancelled
from vov.errors import BackboneMismatch, BitstreamError, MediaError, UsageError, VovError
from vov.files import read_bytes
from vov.limits import LimitExceeded
from vov.serving.engines.base import EngineUnavailable

from . import metrics
from .admission import RESERVED_THREADS, RETRY_PUSHBACK, Admission
from .admission import Interceptor as AdmissionInterceptor
from .environment import env_default

MIB = 1 << 20
CHUNK = MIB  # payloads travel in chunks of at most this size
MESSAGE_SLACK = MIB  # gRPC's per-message limit is the upload limit plus this


class TooLarge(VovError):
    """An upload is larger than the server's limit."""


# ------------------------------------------------------------------------------------ config


def common_arguments(parser: argparse.ArgumentParser, prefix: str, port: int) -> None:
    """--host, --port, --backbone, --workers, --grace, --torch-threads; each with an env default."""
    parser.add_argument("--host", default=env_default(f"{prefix}_HOST", "127.0.0.1"),
                        help=f"address to listen on (env {prefix}_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=env_default(f"{prefix}_PORT", port, int),
                        help=f"port (env {prefix}_PORT, default {port}; 0 picks a free one)")
    parser.add_argument("--backbone", default=env_default("VOV_BACKBONE", "embedded"),
                        help="foundation model served (env VOV_BACKBONE, default embedded; `vov backbones`)")
    parser.add_argument("--model", default=env_default("VOV_MODEL", ""),
                        help="the backbone's weights: a folder in the diffusers layout or a hub id (env VOV_MODEL; "
                             "default: the backbone's own)")
    parser.add_argument("--device", default=env_default("VOV_DEVICE", ""),
                        help="cpu, cuda or cuda:N (env VOV_DEVICE; default: the backbone's)")
    parser.add_argument("--workers", type=int, default=env_default(f"{prefix}_WORKERS", 8, int),
                        help=f"work calls served at once (env {prefix}_WORKERS, default 8)")
    parser.add_argument("--max-queued", type=int, default=env_default(f"{prefix}_MAX_QUEUED", -1, int),
                        help=f"work calls that may wait for a worker; more are refused with UNAVAILABLE "
                             f"(env {prefix}_MAX_QUEUED, default 3 x --workers)")
    parser.add_argument("--grace", type=float, default=env_default("VOV_GRACE_SECONDS", 30.0, float),
                        help="seconds in-flight calls get to finish on shutdown (env VOV_GRACE_SECONDS, default 30)")
    parser.add_argument("--torch-threads", type=int, default=env_default("VOV_TORCH_THREADS", 0, int),
                        help="torch CPU threads (env VOV_TORCH_THREADS; 0: torch decides)")
    parser.add_argument("--tls-cert", default=env_default("VOV_TLS_CERT", ""),
                        help="server certificate chain (PEM) for TLS (env VOV_TLS_CERT; empty: plaintext)")
    parser.add_argument("--tls-key", default=env_default("VOV_TLS_KEY", ""),
                        help="private key (PEM) of the certificate (env VOV_TLS_KEY)")
    parser.add_argument("--tls-client-ca", default=env_default("VOV_TLS_CLIENT_CA", ""),
                        help="CA (PEM) whose client certificates are required: mutual TLS (env VOV_TLS_CLIENT_CA)")
    metrics.add_arguments(parser)
    flags.add_limits(parser)


def server_credentials(args: argparse.Namespace):
    """gRPC server credentials from --tls-cert/--tls-key(/--tls-client-ca), or None for plaintext.

    The files are read again when one of them changes (a renewed certificate in a mounted Secret):
    every new connection's handshake asks, so a renewal takes effect without a restart, and the
    connections already open keep the certificate they began with. Files that cannot be read or used
    at that moment (half-replaced) leave the current certificate in place until the next handshake.
    """
    if not (args.tls_cert or args.tls_key or args.tls_client_ca):
        return None
    if not (args.tls_cert and args.tls_key):
        raise UsageError("TLS needs both --tls-cert and --tls-key (VOV_TLS_CERT, VOV_TLS_KEY)")
    files = [args.tls_key, args.tls_cert, *([args.tls_client_ca] if args.tls_client_ca else [])]

    def stamp() -> tuple:
        return tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in map(os.stat, files))

    def configuration():
        pair = (read_bytes(args.tls_key), read_bytes(args.tls_cert))
        client_ca = read_bytes(args.tls_client_ca) if args.tls_client_ca else None
        # grpc raises plain errors for malformed PEM here, not at the handshake
        grpc.ssl_server_credentials([pair], root_certificates=client_ca, require_client_auth=client_ca is not None)
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=client_ca)

    try:
        current = {"stamp": stamp(), "configuration": configuration()}
    except Exception as e:
        raise UsageError(f"TLS: cannot use the certificate or key ({e})") from None

    def fetch():
        try:
            seen = stamp()
            if seen == current["stamp"]:
                return None
            current.update(stamp=seen, configuration=configuration())
        except Exception:
            return None
        return current["configuration"]

    return grpc.dynamic_ssl_server_credentials(current["configuration"], fetch,
                                               require_client_authentication=bool(args.tls_client_ca))


def load_backbone(args: argparse.Namespace, log: logging.Logger):
    """The backbone a service serves (`--backbone`), after applying `--torch-threads`."""
    import torch

    from vov import codec

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    backbone = codec.get_backbone(args.backbone, args.model or None, args.device or None)
    event(log, "backbone loaded", backbone=backbone.name, model=backbone.model or None, device=str(backbone.device),
          content_hash=backbone.content_hash.hex())
    return backbone


# ------------------------------------------------------------------------------------ logs


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(), "service": self.service,
                 "msg": record.getMessage()}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["error"] = "".join(traceback.format_exception(*record.exc_info)).strip()
        return json.dumps(entry, default=str)


def logger(service: str) -> logging.Logger:
    log = logging.getLogger(f"vov.services.{service}")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter(service))
        log.addHandler(handler)
        log.setLevel(env_default("VOV_LOG_LEVEL", "INFO").upper())
        log.propagate = False
    return log


def event(log: logging.Logger, msg: str, level: int = logging.INFO, **fields) -> None:
    log.log(level, msg, extra={"fields": fields})


# ------------------------------------------------------------------------------------ status codes


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, Cancelled):
        return grpc.StatusCode.CANCELLED, "the client cancelled the call"
    if isinstance(error, (TooLarge, LimitExceeded)):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)
    if isinstance(error, EngineUnavailable):
        return grpc.StatusCode.UNAVAILABLE, str(error)
    if isinstance(error, BackboneMismatch):
        return grpc.StatusCode.FAILED_PRECONDITION, str(error)
    if isinstance(error, (BitstreamError, MediaError, UsageError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    return grpc.StatusCode.INTERNAL, "internal error in the vov service (logged with its details)"


def abort_with(context: grpc.ServicerContext, log: logging.Logger, rpc: str, error: BaseException, **fields):
    """End the call with `error`'s status; UNAVAILABLE carries gRPC's retry hint (retry pushback)."""
    code, message = status_for(error)
    internal = code == grpc.StatusCode.INTERNAL
    log.log(logging.ERROR if internal else logging.INFO, f"{rpc} failed",
            exc_info=error if internal else None,
            extra={"fields": {"rpc": rpc, "code": code.name, "detail": message, **fields}})
    if code == grpc.StatusCode.UNAVAILABLE:
        context.set_trailing_metadata(RETRY_PUSHBACK)
    context.abort(code, message)


# ------------------------------------------------------------------------------------ streaming


def stream_worker(work: Callable[[Callable[[object], None]], object], context: grpc.ServicerContext,
                  poll: float = 0.1) -> Iterator[tuple[str, object]]:
    """Run `work(emit)` in a thread; yield ("event", x) for each emit(x), then ("result", value).

    The worker's exception is re-raised here. The work runs inside a `vov.cancel` scope: once the
    client cancels or its deadline passes, the work's next checkpoint (every fitting or sampler step,
    every round of the quantiser-step search) raises Cancelled, so it stops within a step and frees
    its memory and its fit slot.
    """
    events: queue.Queue = queue.Queue()
    done = object()
    outcome: dict = {}

    def emit(item) -> None:
        cancel.checkpoint()
        events.put(item)

    def target() -> None:
        try:
            with cancel.scope(lambda: not context.is_active()):
                outcome["value"] = work(emit)
        except BaseException as e:  # handed to the RPC thread, which maps it to a status
            outcome["error"] = e
        finally:
            events.put(done)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    while True:
        try:
            item = events.get(timeout=poll)
        except queue.Empty:
            if not context.is_active():
                thread.join(0)
            continue
        if item is done:
            break
        yield "event", item
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    yield "result", outcome.get("value")


class Throttle:
    """True at most every `interval` seconds, and always for the first and last step."""

    def __init__(self, interval: float = 0.25):
        self.interval, self.last = interval, 0.0

    def __call__(self, step: int, total: int) -> bool:
        now = time.monotonic()
        if step <= 1 or step >= total or now - self.last >= self.interval:
            self.last = now
            return True
        return False


# ------------------------------------------------------------------------------------ server


def connection_age_options() -> list[tuple[str, int]]:
    """gRPC options that make clients reconnect after VOV_MAX_CONNECTION_AGE_SECONDS (unset or 0: never).

    A client balancing over several replicas (DNS of a headless Service, round_robin) resolves the
    addresses again when a connection ends, so a bounded age lets it find replicas added since. The
    server ends an old connection with GOAWAY; calls in flight on it finish (no age grace limit).
    """
    age = env_default("VOV_MAX_CONNECTION_AGE_SECONDS", 0.0, float)
    return [("grpc.max_connection_age_ms", int(age * 1000))] if age > 0 else []


class Server:
    """A gRPC server with health checking, reflection and graceful shutdown.

    The methods `capped` (names of the services' methods, e.g. "Decompress") are work calls: at most
    `workers` run at once and `max_queued` (default 3 x workers) wait, in arrival order; more are
    refused with UNAVAILABLE (services/admission.py). The thread pool holds a thread for each of
    those and RESERVED_THREADS more, so health checks never wait behind work. Beyond all of them,
    gRPC itself refuses calls (a flood's backstop).
    """

    def __init__(self, service_names: list[str], add_servicers: Callable[[grpc.Server], None], host: str, port: int,
                 workers: int, max_message: int, log: logging.Logger, credentials=None, capped: tuple[str, ...] = (),
                 max_queued: int | None = None):
        if workers < 1:
            raise UsageError(f"--workers must be at least 1, not {workers}")
        max_queued = 3 * workers if max_queued is None or max_queued < 0 else max_queued
        options = [("grpc.max_receive_message_length", max_message), ("grpc.max_send_message_length", max_message),
                   ("grpc.so_reuseport", 0), *connection_age_options()]
        methods = {f"/{name}/{method}" for name in service_names for method in capped}
        threads = workers + max_queued + RESERVED_THREADS
        interceptors = [metrics.Interceptor(workers, max_queued, methods),
                        AdmissionInterceptor(Admission(workers, max_queued), methods)]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
                                  options=options, maximum_concurrent_rpcs=4 * threads, interceptors=interceptors)
        add_servicers(self.server)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.names = service_names
        reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        if credentials is None:
            self.port = self.server.add_insecure_port(f"{host}:{port}")
        else:
            self.port = self.server.add_secure_port(f"{host}:{port}", credentials)
        self.tls = credentials is not None
        if self.port == 0:
            raise SystemExit(f"cannot listen on {host}:{port}")
        self.address = f"{host}:{self.port}"
        self.log = log
        self._stopped = threading.Event()

    def start(self, serving: bool = True) -> "Server":
        """Start answering; health says SERVING, or NOT_SERVING until `set_serving` when `serving` is False."""
        self.server.start()
        self.set_serving(serving)
        return self

    def set_serving(self, serving: bool) -> None:
        """Health for the whole server and each service; ignored once shutdown has begun."""
        if self._stopped.is_set():
            return
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in [*self.names, ""]:
            self.health.set(name, status)

    def stop(self, grace: float) -> None:
        """Refuse new calls at once; in-flight calls get `grace` seconds to finish."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        event(self.log, "shutting down", grace_s=grace)
        self.server.stop(grace).wait()
        event(self.log, "stopped")

    def run_until_signal(self, grace: float) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully."""
        def handler(signum, _frame):
            threading.Thread(target=self.stop, args=(grace,), daemon=True).start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        while not self._stopped.is_set():
            self._stopped.wait(0.5)
        self.server.wait_for_termination()


def main(service: str, add_arguments: Callable[[argparse.ArgumentParser], None],
         serve: Callable[[argparse.Namespace], Server], argv: list[str] | None = None) -> int:
    """A service's entry point: parse flags, start, serve until a signal. Exit status 2 if it cannot start."""
    parser = argparse.ArgumentParser(prog=f"vov-{service}", description=f"vov {service} gRPC service")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        server = serve(args)
    except VovError as e:
        event(logger(service), "cannot start", level=logging.ERROR, error=str(e))
        return 2
    if args.metrics_port:
        event(logger(service), "metrics", address=f"{args.host}:{metrics.serve_http(args.metrics_port, args.host)}")
    server.run_until_signal(args.grace)
    return 0
