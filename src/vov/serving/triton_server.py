"""Starting and stopping a local NVIDIA Triton server (the `tritonserver` binary) for vov's models.

On CPU machines the binary comes from the `nvidia-pytriton` wheel (Triton 2.5x with the Python
backend only); `VOV_TRITONSERVER` names another binary. Two facts about that wheel shape the
launch (docs/services.md):
- its Python-backend stub links the system's libpython, so the interpreter's own lib directory goes
  first on LD_LIBRARY_PATH (else: `'_thread.RLock' object has no attribute '_recursion_count'`),
  followed by the wheel's bundled libraries (`nvidia_pytriton.libs`);
- the backend looks for its stub beside `libtriton_python.so`, while the wheel keeps one stub per
  Python version elsewhere, so a backend directory is assembled (symlinks) in the work directory;
- the stub's embedded interpreter finds its environment as `python3` on PATH (a virtual
  environment only when it is activated; otherwise the base interpreter's own site-packages come
  before the config's `python_path`, with whatever numpy they hold), so PATH starts with this
  interpreter's directory: the models always run on the environment vov runs in.
Readiness is polled over Triton's HTTP endpoint with the standard library: no gRPC in here.

Stopping. SIGTERM makes Triton refuse new requests and wait, at most EXIT_SECONDS, for the ones it
holds; a decode whose sequence is held open waits for a Triton to serve again and starts the sequence
there (vov.serving.engines.triton), so the wait is short and nothing is lost.

Log. Triton logs warnings and errors only (`--log-info=false`, `--log-verbose=0`); its output and its
stubs' go through a pipe into `tritonserver.log`, which a thread of this process rotates at
`LOG_BYTES` (`.1`, `.2` hold the older parts; the oldest is dropped), so a server that repeats an
error cannot fill the disk.

Cleanup. Triton starts one Python-backend stub process per model instance and shares memory with
each through regions in /dev/shm. The server runs in its own process group and its regions carry a
prefix of its own (`--backend-config=python,shm-region-prefix-name=...`), so `stop` (and `reap`,
after the server died on its own) kills every stub left in the group, even one that ignores
SIGTERM, and removes the regions: nothing is orphaned.
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from vov.errors import UsageError


def _pytriton_root() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "tritonserver"


def find_tritonserver() -> Path:
    env = os.environ.get("VOV_TRITONSERVER")
    if env:
        return Path(env)
    root = _pytriton_root()
    if root and (root / "bin" / "tritonserver").exists():
        return root / "bin" / "tritonserver"
    found = shutil.which("tritonserver")
    if found:
        return Path(found)
    raise UsageError("no tritonserver binary: install nvidia-pytriton (pip install 'vov[triton]') or set VOV_TRITONSERVER")


def backend_directory(work: Path) -> Path:
    """A backend directory whose python/ holds the backend library and this Python's stub."""
    root = _pytriton_root()
    if root is None:
        # a system Triton (container image) brings its own complete backends directory
        return Path(os.environ.get("VOV_TRITON_BACKENDS", "/opt/tritonserver/backends"))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise UsageError(f"nvidia-pytriton has no Python-backend stub for Python {version}")
    target = work / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for source in [*(root / "backends" / "python").glob("*.so"), *(root / "backends" / "python").glob("*.py"), stub]:
        link = target / source.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return work / "backends"


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(p for p in (os.path.dirname(sys.executable), env.get("PATH")) if p)
    paths = [sysconfig.get_config_var("LIBDIR") or ""]
    root = _pytriton_root()
    if root is not None:
        paths.append(str(root.parent.parent / "nvidia_pytriton.libs"))
    if env.get("LD_LIBRARY_PATH"):
        paths.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in paths if p)
    return env


EXIT_SECONDS = 5  # a stopping Triton waits this long for what it holds (decodes it cuts start again elsewhere)
LOG_BYTES = 8 << 20  # Triton's log rotates at this size
LOG_BACKUPS = 2  # older parts kept beside it


class RotatingLog:
    """Copies what a process writes to `pipe` into `path`, rotated at `max_bytes` with `backups`
    older parts (path.1 the newest of them); ends when every writer has closed the pipe."""

    def __init__(self, pipe, path: Path, max_bytes: int = LOG_BYTES, backups: int = LOG_BACKUPS):
        self.pipe, self.path, self.max_bytes, self.backups = pipe, Path(path), max_bytes, backups
        self.thread = threading.Thread(target=self._copy, name="triton-log", daemon=True)

    def start(self) -> "RotatingLog":
        self.thread.start()
        return self

    def _rotate(self) -> None:
        for i in range(self.backups, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            newer = self.path.with_name(f"{self.path.name}.{i - 1}") if i > 1 else self.path
            if newer.exists():
                os.replace(newer, older)
        if not self.backups:
            self.path.unlink(missing_ok=True)

    def _copy(self) -> None:
        fd = self.pipe.fileno()
        out = open(self.path, "ab")
        try:
            size = out.tell()
            while True:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return
                if size and size + len(chunk) > self.max_bytes:
                    out.close()
                    self._rotate()
                    out, size = open(self.path, "ab"), 0
                out.write(chunk[: self.max_bytes])
                out.flush()
                size += min(len(chunk), self.max_bytes)
        except OSError:
            return
        finally:
            out.close()
            self.pipe.close()

    def join(self, timeout: float = 5.0) -> None:
        self.thread.join(timeout)


class TritonServer:
    """One tritonserver process serving `repository` on loopback."""

    def __init__(self, repository: str | Path, work: str | Path, grpc_port: int, http_port: int,
                 host: str = "127.0.0.1", log_path: str | Path | None = None, metrics_port: int | None = None):
        self.repository = Path(repository)
        self.work = Path(work)
        self.grpc_port, self.http_port, self.host = grpc_port, http_port, host
        self.metrics_port = metrics_port
        self.log_path = Path(log_path) if log_path else self.work / "tritonserver.log"
        self.process: subprocess.Popen | None = None
        self.log: RotatingLog | None = None
        self.shm_prefix = ""

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def command(self) -> list[str]:
        return [
            str(find_tritonserver()), f"--model-repository={self.repository}",
            f"--backend-directory={backend_directory(self.work)}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            *(["--allow-metrics=true", f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
               "--allow-cpu-metrics=true"] if self.metrics_port else ["--allow-metrics=false"]),
            "--allow-gpu-metrics=false",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--strict-readiness=true", "--exit-on-error=true", f"--exit-timeout-secs={EXIT_SECONDS}",
            "--log-info=false", "--log-warning=true", "--log-error=true", "--log-verbose=0",
        ]

    def start(self) -> "TritonServer":
        self.work.mkdir(parents=True, exist_ok=True)
        self.shm_prefix = f"vov_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        self.process = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        env=environment(), stdin=subprocess.DEVNULL, start_new_session=True)
        self.log = RotatingLog(self.process.stdout, self.log_path).start()
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise UsageError(f"tritonserver exited with status {self.process.returncode}; see {self.log_path}:\n"
                                 + self.log_tail())
            if self.ready():
                return
            time.sleep(0.2)
        raise UsageError(f"tritonserver was not ready after {timeout:.0f} s; see {self.log_path}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # Triton drains in-flight requests, then exits
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.reap()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def reap(self) -> None:
        """After the server has exited (or to make it): kill its process group (the backend stubs
        included) and remove its shared-memory regions."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        if self.log is not None:
            self.log.join()  # every writer is gone: the log holds all they wrote
        if self.shm_prefix:
            for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
                try:
                    region.unlink()
                except OSError:
                    pass


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
