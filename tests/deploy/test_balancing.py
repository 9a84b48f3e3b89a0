"""Clients that balance over the decoder's headless Service find new pods because the server ends
each connection after VOV_MAX_CONNECTION_AGE_SECONDS (the chart's decoder.maxConnectionAgeSeconds):
the client connects again (resolving the name again), while a call in flight on the old connection
runs to its end. Shown here on a real services.common.Server on loopback.
"""

from __future__ import annotations

import logging
import time

import grpc
import pytest

SERVICE, METHOD = "vov.test.Slow", "Stream"


def start_server(monkeypatch, age: str | None):
    from vov_services import common

    if age is None:
        monkeypatch.delenv("VOV_MAX_CONNECTION_AGE_SECONDS", raising=False)
    else:
        monkeypatch.setenv("VOV_MAX_CONNECTION_AGE_SECONDS", age)
    peers = []

    def stream(request: bytes, context):
        peers.append(context.peer())  # ipv4:127.0.0.1:<client port>: one port per connection
        for i in range(int(request.decode() or 0)):
            time.sleep(0.1)
            yield str(i).encode()

    handler = grpc.method_handlers_generic_handler(SERVICE, {
        METHOD: grpc.unary_stream_rpc_method_handler(stream, request_deserializer=None, response_serializer=None)})
    server = common.Server([SERVICE], lambda s: s.add_generic_rpc_handlers((handler,)), "127.0.0.1", 0, 2, 1 << 20,
                           logging.getLogger("test-balancing")).start()
    return server, peers


def call(channel, ticks: int) -> list[bytes]:
    method = channel.unary_stream(f"/{SERVICE}/{METHOD}", request_serializer=None, response_deserializer=None)
    return list(method(str(ticks).encode(), timeout=30))


@pytest.mark.parametrize("age, reconnects", [("0.5", True), (None, False)])
def test_connections_end_after_their_age_and_streams_in_flight_finish(monkeypatch, age, reconnects):
    server, peers = start_server(monkeypatch, age)
    try:
        with grpc.insecure_channel(server.address) as channel:
            call(channel, 1)
            # a stream of 1.2 s on a connection that ages out after 0.5 s: every message arrives
            assert call(channel, 12) == [str(i).encode() for i in range(12)]
            time.sleep(1.0)
            call(channel, 1)
        assert len(peers) == 3
        # with an age the later calls came over new connections (new client ports); without, one connection
        assert (len(set(peers)) > 1) == reconnects, peers
    finally:
        server.stop(0.2)
