"""The services' Prometheus endpoint, scraped over HTTP from the real processes.

Both services run as `vov serve` starts them (vov.serving.serve.Stack; the decoder with its in-process
engine, so no Triton is needed here), each with --metrics-port. The tests make real calls, then
read /metrics and check that the counters, histograms and gauges moved by what was done.
"""

import dataclasses
import io
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from service_media import picture, tiny_options

from vov import codec
from vov.errors import BitstreamError
from vov.serving import client
from vov.limits import Limits
from vov.serving.serve import Stack
from vov.serving.triton_server import free_port
from vov.v1 import codec_pb2, codec_pb2_grpc

pytestmark = pytest.mark.slow

DECODER_WORKERS = 3
DECODER_QUEUE = 4
ENCODER_FITS = 1


LONG_DECODE_STEPS = 5000  # above the default decode limit: this stack's decoder is started with it


@pytest.fixture(scope="module")
def stack(tiny_repository, tmp_path_factory):
    ports = {"encoder": free_port("127.0.0.1"), "decoder": free_port("127.0.0.1")}
    s = Stack("tiny", repository=tiny_repository, work=tmp_path_factory.mktemp("metrics-stack"), max_rank=4,
              torch_threads=1, with_triton=False,
              extra_decoder_args=["--metrics-port", str(ports["decoder"]), "--workers", str(DECODER_WORKERS),
                                  "--max-queued", str(DECODER_QUEUE), "--grace", "5",
                                  "--max-sampler-steps", str(LONG_DECODE_STEPS)],
              extra_encoder_args=["--metrics-port", str(ports["encoder"]), "--max-fits", str(ENCODER_FITS),
                                  "--grace", "5"])
    s.start()
    s.metrics_ports = ports
    yield s
    s.stop()


def scrape(stack, name: str) -> dict:
    """{(sample name, sorted label items): value} of one service's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_ports[name]}/metrics", timeout=5) as r:
        assert r.status == 200
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def handled(samples, service, method, code):
    return value(samples, "vov_grpc_server_handled_total", grpc_service=service, grpc_method=method, grpc_code=code)


def in_flight(samples, service, method):
    return value(samples, "vov_grpc_server_in_flight", grpc_service=service, grpc_method=method)


def wait_for(stack, name, predicate, timeout=30.0):
    """Scrape until predicate(samples) holds; returns those samples (fails after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(stack, name)
        if predicate(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"the {name}'s metrics did not reach the expected state in {timeout:.0f} s")
        time.sleep(0.1)


def png_bytes(seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def compress_requests(steps: int):
    options = codec_pb2.CompressOptions(rank=2, dim=256, steps=steps, sampler_steps=4, seed=0, backbone="tiny",
                                        target_bpp=3.0)
    yield codec_pb2.CompressRequest(options=options)
    yield codec_pb2.CompressRequest(chunk=png_bytes())


def test_calls_are_counted_by_method_and_status_code(stack, tiny_backbone):
    enc0, dec0 = scrape(stack, "encoder"), scrape(stack, "decoder")
    data = client.remote_compress(stack.encoder_address, png_bytes(), tiny_options(0), quiet=True)
    client.remote_decompress_png(stack.decoder_address, data)
    with pytest.raises(BitstreamError):
        client.remote_decompress_png(stack.decoder_address, b"this is not a vov file")
    with client.channel(stack.decoder_address) as ch:
        codec_pb2_grpc.DecoderStub(ch).ListModels(codec_pb2.ListModelsRequest(), timeout=10)
    # a stream is counted when the server's side of it ends, a moment after the client read its last message
    enc1 = wait_for(stack, "encoder", lambda s: handled(s, "vov.v1.Encoder", "Compress", "OK")
                    > handled(enc0, "vov.v1.Encoder", "Compress", "OK"))
    dec1 = wait_for(stack, "decoder", lambda s: handled(s, "vov.v1.Decoder", "Decompress", "OK")
                    > handled(dec0, "vov.v1.Decoder", "Decompress", "OK"))

    assert handled(enc1, "vov.v1.Encoder", "Compress", "OK") - handled(enc0, "vov.v1.Encoder", "Compress", "OK") == 1
    for code, calls in (("OK", 1), ("INVALID_ARGUMENT", 1)):
        assert handled(dec1, "vov.v1.Decoder", "Decompress", code) - handled(dec0, "vov.v1.Decoder", "Decompress", code) == calls
    assert handled(dec1, "vov.v1.Decoder", "ListModels", "OK") - handled(dec0, "vov.v1.Decoder", "ListModels", "OK") == 1
    # the decoder served no Compress, the encoder no Decompress
    assert not any(k[0] == "vov_grpc_server_handled_total" and ("grpc_method", "Compress") in k[1] for k in dec1)
    assert not any(k[0] == "vov_grpc_server_handled_total" and ("grpc_method", "Decompress") in k[1] for k in enc1)

    # latencies: both Decompress calls observed, with a positive total time
    labels = {"grpc_service": "vov.v1.Decoder", "grpc_method": "Decompress"}
    count = value(dec1, "vov_grpc_server_handling_seconds_count", **labels)
    assert count - value(dec0, "vov_grpc_server_handling_seconds_count", **labels) == 2
    assert value(dec1, "vov_grpc_server_handling_seconds_sum", **labels) > value(dec0, "vov_grpc_server_handling_seconds_sum", **labels)
    assert value(dec1, "vov_grpc_server_handling_seconds_bucket", **labels, le="+Inf") == count
    # nothing left in flight, and the configured capacities are exported
    assert in_flight(dec1, "vov.v1.Decoder", "Decompress") == 0
    assert in_flight(enc1, "vov.v1.Encoder", "Compress") == 0
    assert value(dec1, "vov_grpc_server_workers") == DECODER_WORKERS
    assert value(enc1, "vov_encoder_fit_slots") == ENCODER_FITS
    assert value(dec1, "process_resident_memory_bytes") > 0


def test_open_decode_streams_are_in_flight_until_they_end(stack, tiny_backbone):
    # a file whose decode runs long enough to be seen: many sampler steps
    data = codec.compress(picture(1), tiny_options(1, sampler_steps=LONG_DECODE_STEPS), backbone=tiny_backbone,
                          limits=Limits(max_sampler_steps=LONG_DECODE_STEPS)).data
    streams = 2
    before = scrape(stack, "decoder")
    with client.channel(stack.decoder_address) as ch:
        stub = codec_pb2_grpc.DecoderStub(ch)
        calls = [stub.Decompress(codec_pb2.DecompressRequest(bitstream=data), timeout=120) for _ in range(streams)]
        for call in calls:  # each stream has started decoding: its first progress event arrived
            assert next(call).WhichOneof("event") == "progress"
        open_now = scrape(stack, "decoder")
        assert in_flight(open_now, "vov.v1.Decoder", "Decompress") == streams
        for call in calls:
            call.cancel()
    after = wait_for(stack, "decoder", lambda s: in_flight(s, "vov.v1.Decoder", "Decompress") == 0)
    cancelled = (handled(after, "vov.v1.Decoder", "Decompress", "CANCELLED")
                 - handled(before, "vov.v1.Decoder", "Decompress", "CANCELLED"))
    assert cancelled == streams


def test_fits_waiting_for_a_slot_are_the_queue(stack):
    before = scrape(stack, "encoder")
    calls = []
    with client.channel(stack.encoder_address) as ch:
        stub = codec_pb2_grpc.EncoderStub(ch)
        # one slot, two long fits: one runs, the other waits in the queue
        for _ in range(ENCODER_FITS + 1):
            calls.append(stub.Compress(compress_requests(steps=100_000), timeout=120))
            if len(calls) <= ENCODER_FITS:
                assert next(calls[-1]).HasField("progress")  # this one holds a slot
        busy = wait_for(stack, "encoder", lambda s: value(s, "vov_encoder_fit_queue_length") == 1)
        assert value(busy, "vov_encoder_fits_running") == ENCODER_FITS
        assert in_flight(busy, "vov.v1.Encoder", "Compress") == ENCODER_FITS + 1
        for call in calls:
            call.cancel()
    after = wait_for(stack, "encoder", lambda s: in_flight(s, "vov.v1.Encoder", "Compress") == 0
                     and value(s, "vov_encoder_fits_running") == 0)
    assert value(after, "vov_encoder_fit_queue_length") == 0
    assert (handled(after, "vov.v1.Encoder", "Compress", "CANCELLED")
            - handled(before, "vov.v1.Encoder", "Compress", "CANCELLED")) == ENCODER_FITS + 1


def test_metrics_port_zero_serves_no_endpoint(stack):
    """--metrics-port 0 (the default) opens no port: the flag, not a constant, decides."""
    from vov_services import metrics

    assert metrics.serve_http(0, "127.0.0.1") == 0


def test_a_decode_reports_its_first_picture_and_the_engine_is_up(stack, tiny_backbone):
    data = client.remote_compress(stack.encoder_address, png_bytes(1), tiny_options(1), quiet=True)
    before = scrape(stack, "decoder")
    client.remote_decompress_png(stack.decoder_address, data)
    after = wait_for(stack, "decoder", lambda s: value(s, "vov_decoder_time_to_first_frame_seconds_count",
                                                       grpc_method="Decompress")
                     > value(before, "vov_decoder_time_to_first_frame_seconds_count", grpc_method="Decompress"))
    first = value(after, "vov_decoder_time_to_first_frame_seconds_sum", grpc_method="Decompress") - \
        value(before, "vov_decoder_time_to_first_frame_seconds_sum", grpc_method="Decompress")
    assert 0 < first
    assert value(after, "vov_decoder_engine_up") == 1 and value(after, "vov_decoder_canary_failures_total") == 0


def test_a_saturated_decoder_counts_every_call_and_still_answers_health(stack, tiny_backbone):
    """workers + 8 decode streams: `workers` decode, `--max-queued` wait for a worker, the rest are
    refused at once with UNAVAILABLE; the gauges and the counter add up to the calls sent, and health
    checks answer within a second meanwhile. Cancelled, the queue empties and the next call decodes."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    data = codec.compress(picture(2), tiny_options(2, sampler_steps=LONG_DECODE_STEPS), backbone=tiny_backbone,
                          limits=Limits(max_sampler_steps=LONG_DECODE_STEPS)).data
    sent = DECODER_WORKERS + 8
    labels = {"grpc_service": "vov.v1.Decoder", "grpc_method": "Decompress"}
    before = scrape(stack, "decoder")
    with client.channel(stack.decoder_address) as ch:
        stub = codec_pb2_grpc.DecoderStub(ch)
        calls = [stub.Decompress(codec_pb2.DecompressRequest(bitstream=data), timeout=120) for _ in range(sent)]
        refused = sent - DECODER_WORKERS - DECODER_QUEUE
        busy = wait_for(stack, "decoder", lambda s: value(s, "vov_grpc_server_refused_total", **labels)
                        - value(before, "vov_grpc_server_refused_total", **labels) == refused
                        and value(s, "vov_grpc_server_queued", **labels) == DECODER_QUEUE
                        and in_flight(s, "vov.v1.Decoder", "Decompress") == DECODER_WORKERS)
        counted = (in_flight(busy, "vov.v1.Decoder", "Decompress") + value(busy, "vov_grpc_server_queued", **labels)
                   + value(busy, "vov_grpc_server_refused_total", **labels)
                   - value(before, "vov_grpc_server_refused_total", **labels))
        assert counted == sent
        assert value(busy, "vov_grpc_server_queue_limit") == DECODER_QUEUE
        health = health_pb2_grpc.HealthStub(ch)
        for _ in range(5):
            start = time.perf_counter()
            reply = health.Check(health_pb2.HealthCheckRequest(service="vov.v1.Decoder"), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING and time.perf_counter() - start < 1.0
        deadline = time.monotonic() + 10
        while len([c for c in calls if c.done()]) < refused and time.monotonic() < deadline:
            time.sleep(0.05)
        ended = [c for c in calls if c.done()]
        assert len(ended) == refused  # the refused calls end at once, with gRPC's retry hint
        for call in ended:
            assert call.code() == grpc.StatusCode.UNAVAILABLE and "busy" in call.details()
            assert ("grpc-retry-pushback-ms", "1000") in tuple(call.trailing_metadata())
        for call in calls:
            call.cancel()
    after = wait_for(stack, "decoder", lambda s: in_flight(s, "vov.v1.Decoder", "Decompress") == 0
                     and value(s, "vov_grpc_server_queued", **labels) == 0)
    assert (handled(after, "vov.v1.Decoder", "Decompress", "UNAVAILABLE")
            - handled(before, "vov.v1.Decoder", "Decompress", "UNAVAILABLE")) == refused
    quick = client.remote_compress(stack.encoder_address, png_bytes(3), tiny_options(3), quiet=True)
    assert client.remote_decompress_png(stack.decoder_address, quick)[0]  # a worker is free again
