"""The encoder's health follows its GPU: a device check that fails turns health NOT_SERVING and stops
the server (so the container restarts on a fresh CUDA context); a fit that fails with a CUDA error
has the device checked at once. Shown on a real services.common.Server with a device check that
this test breaks (no GPU here), and on the real CUDA check where a GPU exists."""

from __future__ import annotations

import logging
import threading
import time

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vov_services.encoder.device import DeviceWatch, cuda_check, is_device_failure

SERVICE = "vov.v1.Encoder"


def health(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=2)
        except grpc.RpcError as e:
            return e.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


@pytest.fixture()
def server():
    from vov_services import common

    s = common.Server([SERVICE], lambda srv: None, "127.0.0.1", 0, 2, 1 << 20, logging.getLogger("test-device")).start()
    yield s
    s.stop(0)


def test_a_failed_device_check_takes_the_encoder_out_and_stops_it(server):
    broken = threading.Event()

    def check():
        if broken.is_set():
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    watch = DeviceWatch(check, server.set_serving, lambda: server.stop(0), logging.getLogger("test-device"),
                        interval=0.1).start()
    time.sleep(0.4)
    assert health(server.address) == "SERVING" and watch.failed is None
    broken.set()
    deadline = time.monotonic() + 10
    while not server._stopped.is_set():
        assert time.monotonic() < deadline, "the server did not stop"
        time.sleep(0.05)
    assert "illegal memory access" in watch.failed
    assert health(server.address) != "SERVING"


def test_a_fit_that_fails_on_the_device_has_it_checked_at_once(server):
    checks = []
    watch = DeviceWatch(lambda: checks.append(time.monotonic()), server.set_serving, lambda: server.stop(0),
                        logging.getLogger("test-device"), interval=3600).start()
    time.sleep(0.2)
    assert checks == []
    watch.report_failure()
    time.sleep(0.5)
    assert len(checks) == 1 and health(server.address) == "SERVING"
    watch.stop()


def test_which_errors_are_the_devices():
    assert is_device_failure(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not is_device_failure(RuntimeError("shape mismatch"))
    assert not is_device_failure(ValueError("CUDA error: in a message from a client"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_the_cuda_check_passes_on_a_working_gpu():
    cuda_check(torch.device("cuda"))()
