"""Triton's drain, with the chart's own commands and a real Triton 2.51 started as the chart starts it.

Two Triton "pods" run the rendered container's arguments (triton-start.sh, from the rendered scripts
ConfigMap) on loopback: the plan key comes from plan-key.sh with a stand-in `nvidia-smi`, and the
plan directory it names holds the tiny backbone's CPU export (Python backend), which this machine's
Triton serves in place of TensorRT plans. Readiness is the rendered readiness command; the preStop
hook is the rendered preStop command. A TCP forwarder plays kube-proxy for the Triton Service: each
new connection goes to a pod whose readiness command passes.

Two decodes (sessions of the session model, stepping as a decoder does) run on pod A over a
connection made before; A's preStop starts while both are in flight. Then: A's readiness fails at
once and stays failed; a decode started through the Service afterwards lands on pod B; the preStop
returns only after both decodes have finished, and both finish; A's own counters show no request
beyond those two decodes; SIGTERM then ends A cleanly. Without the drain (pod B, signalled while a
decode is in flight), the decode fails: Triton stops serving it.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from deploy_helpers import CHART, RELEASE, named, pod_spec, render

from vov.serving.triton import backend_directory, environment, find_tritonserver, free_port

pytestmark = pytest.mark.slow

SETS = ("triton.drain.leaveSeconds=1", "triton.drain.quietSeconds=2", "triton.drain.maxSeconds=60",
        "triton.graceSeconds=20")
STEPS, STEP_PAUSE = 16, 0.3  # a decode: 16 steps about 0.3 s apart, like a decoder's sampler loop


def rendered():
    docs = render("gpu", "backbone=tiny", *[f"{s}" for s in SETS])
    triton = named(docs, "StatefulSet", f"{RELEASE}-triton")
    scripts = named(docs, "ConfigMap", f"{RELEASE}-model-scripts")["data"]
    (container,) = pod_spec(triton)["containers"]
    return container, scripts


class Pod:
    """One Triton pod on loopback: its /tmp, its ports, its process group."""

    def __init__(self, name: str, root: Path, container: dict, scripts: Path, export_cpu: Path, export_gpu: Path):
        self.name, self.root = name, root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True)
        self.ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
        chart_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        self.mapping = {f"={chart_ports[k]}": f"={v}" for k, v in self.ports.items()}
        self.container, self.scripts = container, scripts
        env = {e["name"]: e["value"] for e in container["env"]}
        self.version_dir = root / env["VOV_VERSION_DIR"].lstrip("/")
        self.shm_prefix = f"vov_drain_{os.getpid()}_{name}_"
        bin_dir = root / "bin"
        bin_dir.mkdir()
        (bin_dir / "nvidia-smi").write_text("#!/bin/sh\ncase \"$*\" in *--query-gpu=name*) echo 'NVIDIA L4' ;; "
                                            "-L) echo 'GPU 0: NVIDIA L4 (UUID: GPU-0)' ;; *) exit 2 ;; esac\n")
        work = root / "triton-work"
        # the image's tritonserver: this machine's Triton on loopback, with its Python-backend directory
        (bin_dir / "tritonserver").write_text(
            "#!/bin/sh\nexec " + shlex.quote(str(find_tritonserver())) + ' "$@"'
            + f" --backend-directory={shlex.quote(str(backend_directory(work)))}"
            + " --http-address=127.0.0.1 --grpc-address=127.0.0.1 --metrics-address=127.0.0.1"
            + " --allow-gpu-metrics=false --allow-cpu-metrics=true --log-info=false"
            + f" --backend-config=python,shm-region-prefix-name={self.shm_prefix}\n")
        for tool in bin_dir.iterdir():
            tool.chmod(0o755)
        # PATH: the stand-ins first; then this interpreter's, whose libpython the Python-backend stub loads
        self.env = {**environment(), "PATH": f"{bin_dir}:{os.environ['PATH']}", "TRT_VERSION": "10.5.0.18",
                    "VOV_VERSION_DIR": str(self.version_dir), "HOME": str(self.tmp),
                    "VOV_EXPORT_DIR": str(export_gpu)}
        # the staged export (the real stage script), and the plans of this pod's key: the CPU export
        assert self.run_script("stage-onnx.sh").returncode == 0
        key = self.run_script("plan-key.sh", str(self.version_dir / "onnx")).stdout.strip()
        assert key.startswith("nvidia-l4-trt-10.5.0.18-"), key
        plans = self.version_dir / "plans" / key
        plans.parent.mkdir(parents=True)
        subprocess.run(["cp", "-R", str(export_cpu), str(plans)], check=True)
        (plans / "READY").write_text(f"key={key}\n")
        self.process = None
        self.log = root / "triton.log"

    def run_script(self, name: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["sh", str(self.scripts / name), *args], capture_output=True, text=True,
                              env=self.env, timeout=60)

    def localise(self, command: list[str]) -> list[str]:
        out = []
        for part in command:
            part = re.sub(r"(^|=)/tmp/", lambda m: f"{m.group(1)}{self.tmp}/", part)
            part = part.replace("/opt/vov/scripts/", f"{self.scripts}/")
            for chart, here in self.mapping.items():
                if part.endswith(chart) and part.startswith("--") and "port" in part:
                    part = part[: -len(chart)] + here
            out.append(sys.executable if part == "python3" else part)
        return out

    def start(self) -> None:
        command = self.localise(self.container["args"])
        assert command[:2] == ["sh", f"{self.scripts}/triton-start.sh"]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def ready(self) -> bool:
        probe = self.container["readinessProbe"]["exec"]["command"]
        return subprocess.run(self.localise(probe), capture_output=True, timeout=10).returncode == 0

    def prestop(self) -> subprocess.Popen:
        hook = self.container["lifecycle"]["preStop"]["exec"]["command"]
        return subprocess.Popen(self.localise(hook), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def session_requests(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['metrics']}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        found = re.search(r'^nv_inference_request_success\{model="denoiser_session",version="1"\} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    def stop(self) -> None:
        if self.process is not None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.process.wait()
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)


class Service:
    """kube-proxy for one Service: each new connection goes to a pod whose readiness passes."""

    def __init__(self, pods: list[Pod]):
        self.pods = pods
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.routed: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            endpoints = [p for p in self.pods if p.ready()]
            if not endpoints:
                client.close()
                continue
            pod = endpoints[len(self.routed) % len(endpoints)]
            self.routed.append(pod.name)
            upstream = socket.create_connection(("127.0.0.1", pod.ports["grpc"]))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def decode(url: str, backbone, record: dict, steps: int = STEPS, pause: float = STEP_PAUSE) -> None:
    """One decode as the decoder runs it: a sequence of steps, the latent decoder, the release."""
    import torch

    from vov.serving import contract
    from vov.serving.engines.triton import TritonEngine

    try:
        engine = TritonEngine(url, backbone, timeout=30)
        layout = engine.current_layout()
        first = layout.slots[0]
        compact = contract.CompactAdapter(1, np.zeros(1, np.int32),
                                          np.full(first.in_features + first.out_features, 0.01, np.float32))
        embeddings = np.zeros((1, engine.text_tokens, engine.text_dim), np.float32)
        latents = torch.randn(1, engine.channels, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        with engine.open_compact(compact, embeddings, np.ones(embeddings.shape[:2], bool)) as session:
            for i in range(steps):
                velocity = session.denoise(latents, torch.full((1,), 1.0 - i / steps))
                latents = latents - velocity / steps
                record["steps"] = i + 1
                time.sleep(pause)
        pixels = engine.decode(latents)
        record["finite"] = bool(torch.isfinite(pixels).all())
    except Exception as e:  # the test reads what happened
        record["error"] = f"{type(e).__name__}: {e}"
    record["end"] = time.monotonic()


@pytest.fixture(scope="module")
def pods(tiny_exports, tmp_path_factory):
    container, data = rendered()
    scripts = tmp_path_factory.mktemp("scripts")
    for name, text in data.items():
        (scripts / name).write_text(text)
    started = []
    try:
        for name in ("a", "b"):
            pod = Pod(name, tmp_path_factory.mktemp(f"pod-{name}"), container, scripts, tiny_exports["cpu"],
                      tiny_exports["gpu"])
            started.append(pod)
            pod.start()
        deadline = time.monotonic() + 120
        while not all(p.ready() for p in started):
            for p in started:
                assert p.process.poll() is None, p.log.read_text()[-2000:]
            assert time.monotonic() < deadline, "Triton did not become ready"
            time.sleep(0.5)
        yield {p.name: p for p in started}
    finally:
        for p in started:
            p.stop()


def test_the_chart_runs_its_drain_and_readiness_commands(pods):
    container = pods["a"].container
    assert container["lifecycle"]["preStop"]["exec"]["command"][:3] == \
        ["python3", "/opt/vov/scripts/triton-lifecycle.py", "drain"]
    assert container["readinessProbe"]["exec"]["command"][:3] == \
        ["python3", "/opt/vov/scripts/triton-lifecycle.py", "ready"]
    assert container["readinessProbe"]["failureThreshold"] == 1  # the first failed probe takes it out


def test_the_chart_reads_metrics_this_triton_exports(pods):
    """The Triton series the chart's rules, autoscalers and drain read, in a real Triton's /metrics."""
    rules = yaml.safe_dump(named(render("gpu"), "PrometheusRule", RELEASE)["spec"])
    used = set(re.findall(r"\b(nv_inference_[a-z_]+)\{", rules))
    assert {"nv_inference_queue_duration_us", "nv_inference_request_success"} <= used
    drain = {"nv_inference_request_success", "nv_inference_request_failure", "nv_inference_pending_request_count"}
    script = (CHART / "files" / "triton-lifecycle.py").read_text()
    assert all(name.removeprefix("nv_inference_") in script for name in drain)
    with urllib.request.urlopen(f"http://127.0.0.1:{pods['a'].ports['metrics']}/metrics", timeout=5) as reply:
        exported = set(re.findall(r"^# TYPE (nv_\w+) ", reply.read().decode(), re.M))
    assert used | drain <= exported, (used | drain) - exported


def test_prestop_drains_decodes_in_flight_and_takes_no_new_sequence(pods):
    from vov import backbones

    a, b = pods["a"], pods["b"]
    backbone = backbones.load("tiny")
    service = Service([a, b])
    try:
        before = a.session_requests()
        records = [{}, {}]
        threads = [threading.Thread(target=decode, args=(f"127.0.0.1:{a.ports['grpc']}", backbone, r)) for r in records]
        threads[0].start()
        time.sleep(1.2)
        threads[1].start()
        while records[1].get("steps", 0) < 2:
            time.sleep(0.05)
        assert all("error" not in r for r in records), records
        drain_start = time.monotonic()
        hook = a.prestop()
        # readiness goes off at once (the chart's probe: period 5 s, one failure) and stays off
        while a.ready():
            assert time.monotonic() - drain_start < 3, "readiness did not go off"
            time.sleep(0.1)
        off = time.monotonic()
        in_flight_at_off = [r.get("steps", 0) for r in records]
        assert all(0 < s < STEPS for s in in_flight_at_off), in_flight_at_off
        # a decode started now, through the Service, reaches the other replica
        routed_before = len(service.routed)
        late = {}
        decode(service.address, backbone, late, steps=3, pause=0.0)
        assert "error" not in late and late["finite"], late
        assert service.routed[routed_before:] == ["b"]
        assert not a.ready()
        out, err = hook.communicate(timeout=90)
        drain_end = time.monotonic()
        for t in threads:
            t.join(30)
        assert hook.returncode == 0, out + err
        # both decodes finished, every step, before the hook returned
        for r in records:
            assert "error" not in r and r["steps"] == STEPS and r["finite"], r
            assert r["end"] <= drain_end
        assert drain_end - max(r["end"] for r in records) < 10
        # pod A served the two decodes and nothing else after its readiness went off: each is STEPS
        # requests of the session model and a release
        assert a.session_requests() - before == 2 * (STEPS + 1)
        assert off - drain_start < 3
        # then kubelet's SIGTERM: nothing is in flight, Triton exits cleanly
        a.process.send_signal(signal.SIGTERM)
        assert a.process.wait(30) == 0, a.log.read_text()[-2000:]
    finally:
        service.close()


def test_without_the_drain_a_signal_fails_the_decode_in_flight(pods):
    """The reason for the drain: Triton, signalled with a decode in flight, stops serving it."""
    from vov import backbones

    b = pods["b"]
    record = {}
    thread = threading.Thread(target=decode, args=(f"127.0.0.1:{b.ports['grpc']}", backbones.load("tiny"), record))
    thread.start()
    while record.get("steps", 0) < 2 and "error" not in record:
        time.sleep(0.05)
    b.process.send_signal(signal.SIGTERM)
    thread.join(60)
    assert "error" in record and record.get("steps", 0) < STEPS, record
