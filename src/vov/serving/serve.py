"""`vov serve`: Triton, the decoder and the encoder on loopback, for one person or for tests.

Order: export the models if the repository is not current (vov.serving.repository), start tritonserver and wait
until it is ready, start the decoder (pointed at Triton) and the encoder, each checked through gRPC
health checking, print the addresses, and on Ctrl-C / SIGTERM stop them in reverse order (each
gets its grace period for in-flight calls).

Supervision (`Stack.supervise`): a process that dies is restarted, after a back-off that doubles
from 1 s to at most 30 s while restarts keep failing (and starts again at 1 s once a process has
stayed up for a minute); each death and restart is logged. A dead Triton's backend stubs and
shared memory are removed first (vov.serving.triton_server). While Triton is down the decoder's health says
NOT_SERVING; it says SERVING again once its canary inference passes on the restarted Triton.
Decodes in flight wait for it and go on (vov.serving.engines.triton). A Triton restarted on purpose
(`restart("triton")` while it runs) is stopped gracefully first: it finishes the requests it holds.

Stopping. SIGTERM while the stack starts (an export of the models, a process not yet healthy) ends
the start at once, as Ctrl-C does: what was started is stopped and `start` raises KeyboardInterrupt.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from vov.backbones import DEFAULT_BACKBONE
from vov.errors import UsageError


def services_package() -> tuple[str, str | None]:
    """The importable name of the services package, and a path to add to PYTHONPATH if needed."""
    if importlib.util.find_spec("vov_services") is not None:
        return "vov_services", None
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "services" / "decoder" / "server.py").exists():
        return "services", str(checkout)
    raise UsageError("the vov services are not installed (pip install 'vov[services]')")


def wait_healthy(address: str, process: subprocess.Popen | None, name: str, timeout: float, log_path=None) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                tail = ""
                if log_path:
                    try:
                        tail = "\n" + "\n".join(Path(log_path).read_text(errors="replace").splitlines()[-5:])
                    except OSError:
                        pass
                raise UsageError(f"the {name} exited with status {process.returncode} while starting{tail}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise UsageError(f"the {name} at {address} was not healthy after {timeout:.0f} s")


class _interrupted_by_sigterm:
    """Within it (in the main thread), SIGTERM raises KeyboardInterrupt; the previous handler after."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


class Stack:
    """Triton + decoder + encoder as child processes on loopback."""

    def __init__(self, backbone: str = DEFAULT_BACKBONE, repository: str | Path | None = None, work: str | Path | None = None,
                 host: str = "127.0.0.1", encoder_port: int = 0, decoder_port: int = 0, triton_grpc_port: int = 0,
                 triton_http_port: int = 0, max_rank: int | None = None, extra_decoder_args=(), extra_encoder_args=(),
                 with_encoder: bool = True, with_triton: bool = True, log=None, torch_threads: int = 0,
                 triton_metrics_port: int = 0, model: str | None = None, device: str | None = None):
        from vov.serving.contract import DEFAULT_MAX_RANK
        from vov.serving.repository import default_repository
        from vov.serving.triton_server import free_port

        self.backbone_name = backbone
        self.model, self.device = model, device
        self.repository = Path(repository) if repository else default_repository(backbone)
        self.work = Path(work) if work else Path(tempfile.mkdtemp(prefix="vov-serve-"))
        self.host = host
        self.ports = {name: port or free_port(host) for name, port in
                      (("encoder", encoder_port), ("decoder", decoder_port), ("triton_grpc", triton_grpc_port),
                       ("triton_http", triton_http_port), ("triton_metrics", triton_metrics_port))}
        self.max_rank = max_rank or DEFAULT_MAX_RANK
        self.extra_decoder_args, self.extra_encoder_args = list(extra_decoder_args), list(extra_encoder_args)
        self.with_encoder, self.with_triton = with_encoder, with_triton
        self.torch_threads = torch_threads
        self.log = log or (lambda m: print(f"vov: {m}", file=sys.stderr))
        self.triton = None
        self.children: dict[str, subprocess.Popen] = {}

    @property
    def encoder_address(self) -> str:
        return f"{self.host}:{self.ports['encoder']}"

    @property
    def decoder_address(self) -> str:
        return f"{self.host}:{self.ports['decoder']}"

    @property
    def triton_url(self) -> str:
        return f"{self.host}:{self.ports['triton_grpc']}"

    def export(self) -> None:
        from vov import backbones
        from vov.serving.repository import export_repository, is_current

        backbone = backbones.load(self.backbone_name, model=self.model, device=self.device)
        if not is_current(self.repository, backbone, self.max_rank):
            self.log(f"exporting the models into {self.repository}")
            export_repository(backbone, self.repository, self.max_rank, log=self.log)

    def start_triton(self, timeout: float = 120.0) -> None:
        from vov.serving.triton_server import TritonServer

        self.triton = TritonServer(self.repository, self.work / "triton", self.ports["triton_grpc"],
                                   self.ports["triton_http"], self.host, metrics_port=self.ports["triton_metrics"]).start()
        self.triton.wait_ready(timeout)

    def stop_triton(self) -> None:
        if self.triton is not None:
            self.triton.stop()

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        package, path = services_package()
        env = dict(os.environ)
        if path:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (path, env.get("PYTHONPATH")) if p)
        log = open(self.work / f"{name}.log", "ab")
        try:
            process = subprocess.Popen([sys.executable, "-m", f"{package}.{name}", *args], stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                       start_new_session=True)
        finally:
            log.close()
        self.children[name] = process
        return process

    def start_service(self, name: str, timeout: float = 180.0) -> None:
        common = ["--host", self.host, "--port", str(self.ports[name]), "--backbone", self.backbone_name,
                  *(["--model", self.model] if self.model else []), *(["--device", self.device] if self.device else []),
                  "--torch-threads", str(self.torch_threads)]
        if name == "decoder":
            extra = ["--repository", str(self.repository), *self.extra_decoder_args]
            if self.with_triton:
                extra += ["--triton-url", self.triton_url]
        else:
            extra = self.extra_encoder_args
        process = self._spawn(name, [*common, *extra])
        address = self.decoder_address if name == "decoder" else self.encoder_address
        wait_healthy(address, process, f"{name} service", timeout, self.work / f"{name}.log")

    def stop_service(self, name: str, timeout: float = 60.0) -> None:
        process = self.children.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def start(self) -> "Stack":
        self.work.mkdir(parents=True, exist_ok=True)
        with _interrupted_by_sigterm():
            return self._start()

    def _start(self) -> "Stack":
        try:
            self.export()
            if self.with_triton:
                self.start_triton()
            # the two services import torch at the same time; on small machines that halves the wait
            names = ["decoder", "encoder"] if self.with_encoder else ["decoder"]
            errors: list[BaseException] = []

            def start(name):
                try:
                    self.start_service(name)
                except BaseException as e:
                    errors.append(e)

            threads = [threading.Thread(target=start, args=(n,)) for n in names]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for name in ("encoder", "decoder"):
            self.stop_service(name)
        self.stop_triton()

    def exited(self) -> dict[str, int]:
        """The processes of the stack that have exited: name -> exit status."""
        dead = {name: p.returncode for name, p in self.children.items() if p.poll() is not None}
        if self.triton is not None and self.triton.process is not None and not self.triton.alive():
            dead["triton"] = self.triton.process.returncode
        return dead

    def restart(self, name: str) -> None:
        if name == "triton":
            self.triton.stop()  # a running one finishes what it holds; then its stubs and shared memory go
            self.start_triton()
        else:
            self.children.pop(name, None)
            self.start_service(name)

    def supervise(self, stopping: threading.Event, poll: float = 0.5, stable: float = 60.0, longest: float = 30.0) -> None:
        """Restart every process that dies until `stopping` is set (see the module's docstring)."""
        delay: dict[str, float] = {}
        started = {name: time.monotonic() for name in ("triton", "decoder", "encoder")}
        while not stopping.wait(poll):
            for name, status in self.exited().items():
                if time.monotonic() - started.get(name, 0.0) >= stable:
                    delay[name] = 1.0
                wait = delay.get(name, 1.0)
                self.log(f"the {name} exited with status {status}; restarting it in {wait:.0f} s")
                if stopping.wait(wait):
                    return
                try:
                    self.restart(name)
                    self.log(f"the {name} is running again")
                except Exception as e:  # logged; the next round tries again after a longer wait
                    self.log(f"restarting the {name} failed: {str(e).splitlines()[0] if str(e) else e!r}")
                delay[name] = min(longest, 2 * wait)
                started[name] = time.monotonic()

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
