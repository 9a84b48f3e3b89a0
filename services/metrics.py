"""Prometheus metrics of both services, served over HTTP on `--metrics-port` (env VOV_METRICS_PORT).

What is measured, per process (each service is its own process, so one registry per process):
- every gRPC call, by gRPC service, method and status code (`vov_grpc_server_handled_total`), and
  how long it took (`vov_grpc_server_handling_seconds`, a histogram reaching the minutes of a fit);
- the calls being served right now (`vov_grpc_server_in_flight`): for `Decompress` this is the count
  of decode streams a worker serves, at most `--workers` (services/admission.py);
- the work calls waiting for a worker (`vov_grpc_server_queued`), and those refused because the
  queue was full (`vov_grpc_server_refused_total`): in flight + queued + refused = calls sent. The
  open decode streams, the signal the decoder is autoscaled on (helm/vov), are in flight + queued;
- the calls a server serves at once (`vov_grpc_server_workers`) and may keep waiting
  (`vov_grpc_server_queue_limit`), to read the gauges against;
- on the encoder, Compress calls waiting for a fit slot (`vov_encoder_fit_queue_length`), fits
  running (`vov_encoder_fits_running`) and the slots (`vov_encoder_fit_slots`, from --max-fits);
- on the decoder, each request to Triton as the decoder sees it, by model and outcome
  (`vov_decoder_triton_request_seconds`: Triton's queue and compute plus the network), and the
  decodes whose sequence had to start again on a replica (`vov_decoder_sequence_restarts_total`);
  the time from a decode call's start to its first picture out, an image or a clip's first frame
  (`vov_decoder_time_to_first_frame_seconds`), whether its engine passes its health checks
  (`vov_decoder_engine_up`) and the canary inferences that failed (`vov_decoder_canary_failures_total`);
- the process collector's CPU, memory and file descriptors.

The counting is done by a gRPC server interceptor (`Interceptor`, installed by common.Server); the
HTTP endpoint is started by common.main when the port is not 0.
"""

from __future__ import annotations

import argparse
import threading
import time
from contextlib import contextmanager

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

from vov import cancel
from vov.serving.engines import triton as triton_engine

from .environment import env_default

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# from a health check (milliseconds) to a long fit (tens of minutes)
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0,
                   1000.0, 2500.0)

HANDLED = Counter("vov_grpc_server_handled", "gRPC calls finished, by service, method and status code",
                  ["grpc_service", "grpc_method", "grpc_code"], registry=REGISTRY)
HANDLING = Histogram("vov_grpc_server_handling_seconds", "Time from a call's start to its last message",
                     ["grpc_service", "grpc_method"], buckets=SECONDS_BUCKETS, registry=REGISTRY)
IN_FLIGHT = Gauge("vov_grpc_server_in_flight", "gRPC calls being served now (open streams for streaming calls)",
                  ["grpc_service", "grpc_method"], registry=REGISTRY)
WORKERS = Gauge("vov_grpc_server_workers", "Calls this server serves at once (--workers)", registry=REGISTRY)
QUEUED = Gauge("vov_grpc_server_queued", "Work calls waiting for a worker", ["grpc_service", "grpc_method"],
               registry=REGISTRY)
REFUSED = Counter("vov_grpc_server_refused", "Work calls refused at once: every worker busy and the queue full",
                  ["grpc_service", "grpc_method"], registry=REGISTRY)
QUEUE_LIMIT = Gauge("vov_grpc_server_queue_limit", "Work calls that may wait for a worker (--max-queued)",
                    registry=REGISTRY)
FIT_QUEUE = Gauge("vov_encoder_fit_queue_length", "Compress calls waiting for a fit slot", registry=REGISTRY)
FITS_RUNNING = Gauge("vov_encoder_fits_running", "Fits running now", registry=REGISTRY)
FIT_SLOTS = Gauge("vov_encoder_fit_slots", "Fits that may run at once (--max-fits)", registry=REGISTRY)
TRITON_SECONDS = Histogram("vov_decoder_triton_request_seconds", "Requests from the decoder to Triton, by model and outcome",
                           ["model", "outcome"], buckets=SECONDS_BUCKETS, registry=REGISTRY)
SEQUENCE_RESTARTS = Counter("vov_decoder_sequence_restarts", "Decodes whose Triton sequence was started again",
                            registry=REGISTRY)


FIRST_FRAME = Histogram("vov_decoder_time_to_first_frame_seconds",
                        "From a decode call's start to its first picture out (an image, or a clip's first frame)",
                        ["grpc_method"], buckets=SECONDS_BUCKETS, registry=REGISTRY)
ENGINE_UP = Gauge("vov_decoder_engine_up", "1 while the decoder's engine passes its health checks", registry=REGISTRY)
CANARY_FAILURES = Counter("vov_decoder_canary_failures", "Canary inferences through the engine that failed",
                          registry=REGISTRY)


def first_frame(method: str, seconds: float) -> None:
    FIRST_FRAME.labels(method).observe(seconds)


def engine_checked(up: bool, canary: bool) -> None:
    """One health check of the decoder's engine: `canary` when it ran a canary inference."""
    ENGINE_UP.set(1 if up else 0)
    if canary and not up:
        CANARY_FAILURES.inc()


def _triton_event(kind: str, *details) -> None:
    if kind == "request":
        model, seconds, ok = details
        TRITON_SECONDS.labels(model, "ok" if ok else "error").observe(seconds)
    elif kind == "restart":
        SEQUENCE_RESTARTS.inc()


triton_engine.observe(_triton_event)

_http_lock = threading.Lock()
_http_server = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-port", type=int, default=env_default("VOV_METRICS_PORT", 0, int),
                        help="port of the Prometheus /metrics endpoint, on the --host address "
                             "(env VOV_METRICS_PORT; 0: no endpoint)")


def serve_http(port: int, host: str) -> int:
    """Start the /metrics endpoint (once per process); returns the port it listens on, 0 if off."""
    global _http_server
    if not port:
        return 0
    with _http_lock:
        if _http_server is None:
            try:
                server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
            except OSError as e:
                raise SystemExit(f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from None
            _http_server = server
        return _http_server.server_address[1]


def split_method(full_method: str) -> tuple[str, str]:
    """'/vov.v1.Decoder/Decompress' -> ('vov.v1.Decoder', 'Decompress')."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service or "unknown", method or "unknown"


def _code(context, raised: bool, finished: bool) -> str:
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    if raised:
        return grpc.StatusCode.UNKNOWN.name  # what gRPC answers for an exception that set no code
    if not finished or not context.is_active():
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.OK.name


class _Call:
    """One call's accounting, counted once: handled and its time, and, unless a worker slot counts
    it (`in_flight` False: services/admission.py), in flight from start until finish()."""

    def __init__(self, service: str, method: str, in_flight: bool = True):
        self.labels = (service, method)
        self.start = time.perf_counter()
        self.done = False
        self.in_flight = in_flight
        if in_flight:
            IN_FLIGHT.labels(*self.labels).inc()

    def finish(self, context, raised: bool, finished: bool) -> None:
        if self.done:
            return
        self.done = True
        if self.in_flight:
            IN_FLIGHT.labels(*self.labels).dec()
        HANDLING.labels(*self.labels).observe(time.perf_counter() - self.start)
        HANDLED.labels(*self.labels, _code(context, raised, finished)).inc()


def _unary_response(behavior, service: str, method: str, in_flight: bool):
    def wrapped(request, context):
        call = _Call(service, method, in_flight)
        try:
            response = behavior(request, context)
        except BaseException:
            call.finish(context, raised=True, finished=True)
            raise
        call.finish(context, raised=False, finished=True)
        return response

    return wrapped


def _stream_response(behavior, service: str, method: str, in_flight: bool):
    def wrapped(request, context):
        call = _Call(service, method, in_flight)
        raised = finished = False
        try:
            yield from behavior(request, context)
            finished = True
        except GeneratorExit:  # gRPC stopped reading: the client went away
            raise
        except BaseException:
            raised = True
            raise
        finally:
            call.finish(context, raised, finished)

    return wrapped


class Interceptor(grpc.ServerInterceptor):
    """Counts every call of the server it is installed on (see the module's docstring); the methods
    in `capped` (full names) are counted in flight by their worker slot instead."""

    def __init__(self, workers: int | None = None, max_queued: int | None = None, capped: set[str] = frozenset()):
        if workers:
            WORKERS.set(workers)
        if max_queued is not None:
            QUEUE_LIMIT.set(max_queued)
        self.capped = capped

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, method = split_method(handler_call_details.method)
        counts = handler_call_details.method not in self.capped
        if handler.unary_unary:
            make, behavior = grpc.unary_unary_rpc_method_handler, _unary_response(handler.unary_unary, service,
                                                                                   method, counts)
        elif handler.stream_unary:
            make, behavior = grpc.stream_unary_rpc_method_handler, _unary_response(handler.stream_unary, service,
                                                                                    method, counts)
        elif handler.unary_stream:
            make, behavior = grpc.unary_stream_rpc_method_handler, _stream_response(handler.unary_stream, service,
                                                                                     method, counts)
        else:
            make, behavior = grpc.stream_stream_rpc_method_handler, _stream_response(handler.stream_stream, service,
                                                                                      method, counts)
        return make(behavior, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)


def set_fit_slots(slots: int) -> None:
    FIT_SLOTS.set(slots)


@contextmanager
def fit_slot(slots: threading.Semaphore):
    """Hold one of the encoder's fit slots, counted as queued while waiting and running while held."""
    FIT_QUEUE.inc()
    try:
        while not slots.acquire(timeout=0.25):  # a cancelled call leaves the queue within a quarter second
            cancel.checkpoint()
    finally:
        FIT_QUEUE.dec()
    FITS_RUNNING.inc()
    try:
        yield
    finally:
        FITS_RUNNING.dec()
        slots.release()
