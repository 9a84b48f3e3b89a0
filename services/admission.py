"""The services' concurrency cap: at most `workers` work calls run at once, up to `max_queued` more
wait for a worker in arrival order, and any further call is refused at once with UNAVAILABLE and a
retry hint. Work calls are the services' own long methods (Decompress and Edit, Compress); health
checks, reflection and ListModels never wait for a worker.

Every call is counted where it is (services/metrics.py): running (`vov_grpc_server_in_flight`),
waiting (`vov_grpc_server_queued`) or refused (`vov_grpc_server_refused_total`), so a saturated
server shows it: the calls sent are the calls in flight, plus those queued, plus those refused.
A queued call whose client cancels or whose deadline passes leaves the queue within a quarter
second. common.Server gives its gRPC thread pool a thread for every running and waiting call and
`RESERVED_THREADS` more, so a health check always finds a thread.
"""

from __future__ import annotations

import threading
from collections import deque

import grpc

from . import metrics

RESERVED_THREADS = 8  # threads beyond the running and waiting calls: health, reflection, ListModels, refusals
RETRY_PUSHBACK = (("grpc-retry-pushback-ms", "1000"),)  # gRPC's retry hint: try again after a second


class Busy(Exception):
    """Every worker is busy and the queue is full."""


class Admission:
    """`workers` slots handed out in arrival order, with at most `max_queued` calls waiting."""

    def __init__(self, workers: int, max_queued: int):
        if workers < 1 or max_queued < 0:
            raise ValueError("workers must be at least 1 and the queue at least 0")
        self.workers, self.max_queued = workers, max_queued
        self.running = 0
        self._waiting: deque[threading.Event] = deque()
        self._lock = threading.Lock()

    def enter(self, is_active, labels: tuple[str, str]) -> bool:
        """Take a slot, waiting for one in turn; False if the call ended while it waited (`is_active`
        false); Busy if the queue is full."""
        with self._lock:
            if self.running < self.workers and not self._waiting:
                self.running += 1
                metrics.IN_FLIGHT.labels(*labels).inc()
                return True
            if len(self._waiting) >= self.max_queued:
                metrics.REFUSED.labels(*labels).inc()
                raise Busy(f"the server is busy: {self.running} calls in flight and {len(self._waiting)} waiting "
                           f"(its --workers and --max-queued); retry")
            turn = threading.Event()
            self._waiting.append(turn)
            metrics.QUEUED.labels(*labels).inc()
        while not turn.wait(0.25):
            if not is_active():
                with self._lock:
                    if not turn.is_set():  # still waiting: leave the queue
                        self._waiting.remove(turn)
                        metrics.QUEUED.labels(*labels).dec()
                        return False
                break  # the slot was handed over meanwhile: take it, then give it back below
        with self._lock:
            metrics.QUEUED.labels(*labels).dec()
            metrics.IN_FLIGHT.labels(*labels).inc()
        if not is_active():
            self.leave(labels)
            return False
        return True

    def leave(self, labels: tuple[str, str]) -> None:
        """Give a slot back: to the first waiting call, or to the pool."""
        with self._lock:
            metrics.IN_FLIGHT.labels(*labels).dec()
            if self._waiting:
                self._waiting.popleft().set()  # the slot passes on: `running` stays
            else:
                self.running -= 1


class Interceptor(grpc.ServerInterceptor):
    """Puts the methods in `capped` (full names, '/package.Service/Method') behind `admission`."""

    def __init__(self, admission: Admission, capped: set[str]):
        self.admission, self.capped = admission, capped

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method not in self.capped:
            return handler
        labels = metrics.split_method(handler_call_details.method)
        admission = self.admission

        def admitted(context) -> bool:
            try:
                return admission.enter(context.is_active, labels)
            except Busy as e:
                context.set_trailing_metadata(RETRY_PUSHBACK)
                context.abort(grpc.StatusCode.UNAVAILABLE, str(e))

        def unary(behavior):
            def wrapped(request, context):
                if not admitted(context):
                    context.abort(grpc.StatusCode.CANCELLED, "the client went away while the call waited")
                try:
                    return behavior(request, context)
                finally:
                    admission.leave(labels)
            return wrapped

        def streaming(behavior):
            def wrapped(request, context):
                if not admitted(context):
                    return
                try:
                    yield from behavior(request, context)
                finally:
                    admission.leave(labels)
            return wrapped

        for kind, make, wrap in (("unary_unary", grpc.unary_unary_rpc_method_handler, unary),
                                 ("stream_unary", grpc.stream_unary_rpc_method_handler, unary),
                                 ("unary_stream", grpc.unary_stream_rpc_method_handler, streaming),
                                 ("stream_stream", grpc.stream_stream_rpc_method_handler, streaming)):
            behavior = getattr(handler, kind)
            if behavior is not None:
                return make(wrap(behavior), request_deserializer=handler.request_deserializer,
                            response_serializer=handler.response_serializer)
        return handler
