"""The real system on loopback: Triton (Python backend + ONNX Runtime), the decoder and the encoder.

One stack serves the module: it is started through `vov.serving.serve.Stack`, exactly as `vov serve` does,
with small upload limits so that the limits can be tested with small files.
"""

import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from PIL import Image

from vov import codec
from vov.serving import client
from vov.method.adapters import AdapterSpec
from vov.codec import EncodeOptions
from vov.serving.engines.onnx import OrtEngine
from vov.errors import BitstreamError, MediaError, VovError
from vov.limits import LimitExceeded
from vov.method.fit import FitConfig
from vov.serving.serve import Stack, services_package
from vov.v1 import codec_pb2, codec_pb2_grpc

pytestmark = pytest.mark.slow

MAX_FILE_BYTES = 4096
MAX_IMAGE_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def stack(tiny_repository, tmp_path_factory):
    s = Stack("tiny", repository=tiny_repository, work=tmp_path_factory.mktemp("stack"), max_rank=4, torch_threads=1,
              extra_decoder_args=["--max-file-bytes", str(MAX_FILE_BYTES), "--grace", "5"],
              extra_encoder_args=["--max-image-bytes", str(MAX_IMAGE_BYTES), "--grace", "5"])
    s.start()
    yield s
    s.stop()


def wire_options():
    """Fast fitting options for the tiny backbone, as `vov compress --server` would send them."""
    return EncodeOptions(backbone="tiny", adapter=AdapterSpec(rank=2, d=256), fit=FitConfig(steps=8), target_bpp=3.0,
                         sampler_steps=5, auto_d=False)


def png_bytes(seed: int = 0, size=(64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    arr = np.stack([x * 4, y * 5, rng.integers(0, 60, x.shape) + 100], -1).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


def decode_png(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_round_trip_through_both_services(stack, tiny_backbone, tiny_repository):
    data = client.remote_compress(stack.encoder_address, png_bytes(), wire_options(), quiet=True)
    png, grey = client.remote_decompress_png(stack.decoder_address, data)
    assert not grey and decode_png(png).shape == (48, 64, 3)
    # Triton and in-process ONNX Runtime run the same graphs: the same pixels
    engine = OrtEngine(tiny_repository)
    local = codec.decompress(data, engine=engine, backbone=tiny_backbone).pixels
    np.testing.assert_array_equal(decode_png(png), (np.clip(local, 0, 1) * 255 + 0.5).astype(np.uint8))


def test_a_best_of_n_file_through_both_services(stack, tiny_backbone, tiny_repository):
    """The encoder searches (best_of, scaling_steps on the wire); the decoder replays the chosen noises
    through Triton: the pixels of in-process ONNX Runtime, and within the engines' tolerance of torch."""
    import dataclasses

    from vov.format import bitstream
    from vov.options import ScalingOptions
    from vov.serving.parity import agrees

    options = dataclasses.replace(wire_options(), scaling=ScalingOptions(candidates=8, steps=6, tile=0))
    data = client.remote_compress(stack.encoder_address, png_bytes(3), options, quiet=True)
    f = bitstream.load(data)
    assert (f.sampler, f.search_bits, f.sde_steps, len(f.segments[0].search)) == (1, 3, 5, 2)
    png, _ = client.remote_decompress_png(stack.decoder_address, data)
    engine = OrtEngine(tiny_repository)
    local = codec.decompress(data, engine=engine, backbone=tiny_backbone).pixels
    np.testing.assert_array_equal(decode_png(png), (np.clip(local, 0, 1) * 255 + 0.5).astype(np.uint8))
    assert agrees(local, codec.decompress(data, backbone=tiny_backbone).pixels)


def test_concurrent_calls_give_the_sequential_pixels(stack, tiny_files):
    files = [tiny_files[i % len(tiny_files)] for i in range(8)]
    sequential = [client.remote_decompress_png(stack.decoder_address, f)[0] for f in files]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda f: client.remote_decompress_png(stack.decoder_address, f)[0], files))
    assert [decode_png(p).tobytes() for p in concurrent] == [decode_png(p).tobytes() for p in sequential]
    assert len({p for p in sequential}) == len(tiny_files)  # different files, different images


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_status_codes(stack, tiny_files):
    with grpc.insecure_channel(stack.decoder_address) as ch:
        decoder = codec_pb2_grpc.DecoderStub(ch)

        def decompress_raw(data):
            return list(decoder.Decompress(codec_pb2.DecompressRequest(bitstream=data), timeout=60))

        corrupt = bytearray(tiny_files[0])
        corrupt[len(corrupt) // 2] ^= 0xFF
        e = rpc_error(lambda: decompress_raw(bytes(corrupt)))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "checksum" in e.details()
        e = rpc_error(lambda: decompress_raw(b"\x89VOV" + bytes(MAX_FILE_BYTES)))
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and str(MAX_FILE_BYTES) in e.details()
    with pytest.raises(MediaError, match="neither an image nor a video"):
        client.remote_compress(stack.encoder_address, b"hello, not a picture", wire_options(), quiet=True)
    with pytest.raises(LimitExceeded, match=str(MAX_IMAGE_BYTES)):
        client.remote_compress(stack.encoder_address, bytes(MAX_IMAGE_BYTES + 1), wire_options(), quiet=True)
    with pytest.raises(BitstreamError, match="bad magic"):
        client.remote_decompress(stack.decoder_address, b"not a vov file at all")


def test_health_reflection_and_model_listing(stack, tiny_backbone):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    for address, service, stub in ((stack.decoder_address, "vov.v1.Decoder", codec_pb2_grpc.DecoderStub),
                                   (stack.encoder_address, "vov.v1.Encoder", codec_pb2_grpc.EncoderStub)):
        with grpc.insecure_channel(address) as ch:
            health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            reply = next(reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(iter([request]), timeout=10))
            assert service in [s.name for s in reply.list_services_response.service]
            models = stub(ch).ListModels(codec_pb2.ListModelsRequest(), timeout=10).models
            assert [m.content_hash for m in models] == [tiny_backbone.content_hash.hex()]


def test_triton_down_is_unavailable_then_recovers(stack, tiny_files):
    expected = client.remote_decompress_png(stack.decoder_address, tiny_files[1])[0]
    stack.stop_triton()
    try:
        with pytest.raises(VovError, match="unavailable.*Triton"):
            client.remote_decompress_png(stack.decoder_address, tiny_files[1])
    finally:
        stack.start_triton()
    assert client.remote_decompress_png(stack.decoder_address, tiny_files[1])[0] == expected


def test_cli_talks_to_the_services(stack, tmp_path):
    src = tmp_path / "in.png"
    src.write_bytes(png_bytes(5, (40, 40)))
    out, back = tmp_path / "x.vov", tmp_path / "y.png"
    run = lambda *a: subprocess.run([sys.executable, "-m", "vov.cli", *map(str, a)], capture_output=True, text=True)
    r = run("compress", src, "-o", out, "--server", stack.encoder_address, "--backbone", "tiny", "--steps", "6",
            "--sampler-steps", "4", "--dim", "256", "--rank", "2", "--bpp", "4", "-q")
    assert r.returncode == 0, r.stderr
    r = run("decompress", out, "-o", back, "--server", stack.decoder_address, "-q")
    assert r.returncode == 0, r.stderr
    assert Image.open(back).size == (40, 40)
    r = run("decompress", out, "-o", back, "--server", "127.0.0.1:1", "-q")
    assert r.returncode == 2 and r.stderr.startswith("vov: error: 127.0.0.1:1: unavailable")


def test_graceful_shutdown_finishes_in_flight_calls(tiny_backbone, tiny_repository, tmp_path):
    """SIGTERM: the call in flight completes, new calls are refused, the process exits 0."""
    import threading

    from vov import codec
    from vov.serving.serve import wait_healthy
    from vov.serving.triton_server import free_port

    from service_media import picture, tiny_options

    package, path = services_package()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (path, os.environ.get("PYTHONPATH")) if p)}
    slow = codec.compress(picture(7), tiny_options(sampler_steps=400), backbone=tiny_backbone).data
    port = free_port()
    decoder = subprocess.Popen([sys.executable, "-m", f"{package}.decoder", "--backbone", "tiny", "--port", str(port),
                                "--repository", str(tiny_repository), "--grace", "60", "--torch-threads", "1"],
                               stderr=subprocess.PIPE, text=True, env=env)
    address = f"127.0.0.1:{port}"
    try:
        wait_healthy(address, decoder, "decoder", 120)
        started, outcome = threading.Event(), {}

        def call():
            try:
                for message in client.decompress_events(address, slow):
                    started.set()
                    if message.HasField("image"):
                        outcome["image"] = message.image
            except VovError as e:
                outcome["error"] = e
            started.set()

        worker = threading.Thread(target=call)
        worker.start()
        assert started.wait(60)
        decoder.terminate()
        worker.join(120)
        assert "error" not in outcome and outcome["image"].width == 64
        with pytest.raises(VovError, match="unavailable"):
            client.remote_decompress_png(address, slow)
        assert decoder.wait(60) == 0
    finally:
        decoder.kill()
        decoder.wait()
    assert '"msg": "shutting down"' in decoder.stderr.read()



def test_a_clip_through_both_services_streams_its_frames_in_order(stack, tmp_path):
    """Compress takes a Y4M upload; Decompress streams the description, then every frame in order,
    the first clip's frames before the last clip is decoded; the CLI writes them as they come."""
    from vov.media.video import Clip, load_video, save_video

    f, y, x = np.mgrid[0:20, 0:32, 0:48].astype(np.float32)
    clip = Clip(np.stack([(x + 2 * f) % 48 / 48, y / 32, 0.5 + 0.3 * np.sin((x - f) / 5)], -1).astype(np.float32),
                fps=(30000, 1001))
    source = tmp_path / "in.y4m"
    save_video(clip, source)
    options = EncodeOptions(backbone="tiny", adapter=AdapterSpec(rank=2, d=256), fit=FitConfig(steps=4), target_bpp=2.0,
                            sampler_steps=4, auto_d=False)
    data = client.remote_compress(stack.encoder_address, source.read_bytes(), options, quiet=True)
    events = []
    for message in client.decompress_events(stack.decoder_address, data):
        kind = message.WhichOneof("event")
        if kind == "frame":
            events.append(("frame", message.frame.index, message.frame.clip))
        elif kind == "progress":
            events.append(("progress", message.progress.step, message.progress.total))
        else:
            events.append((kind,))
    assert events[0] == ("video",)
    frames = [e for e in events if e[0] == "frame"]
    assert [e[1] for e in frames] == list(range(20)) and [e[2] for e in frames] == [0] * 17 + [1] * 3
    first_frame = events.index(frames[0])
    assert any(e[0] == "progress" and e[1] > 4 for e in events[first_frame:])  # the second clip decodes after
    out = tmp_path / "out.y4m"
    (tmp_path / "x.vov").write_bytes(data)
    r = subprocess.run([sys.executable, "-m", "vov.cli", "decompress", str(tmp_path / "x.vov"), "-o", str(out),
                        "--server", stack.decoder_address, "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    back = load_video(out)
    assert (back.num_frames, back.width, back.height, back.fps) == (20, 48, 32, (30000, 1001))
