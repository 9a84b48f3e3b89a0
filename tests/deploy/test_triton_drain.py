"""Triton's drain, with the chart's own commands and a real Triton 2.51 started as the chart starts it.

Two Triton "pods" run the rendered container's arguments (triton-start.sh, from the rendered scripts
ConfigMap) on loopback: the plan key comes from plan-key.sh with a stand-in `nvidia-smi`, and the
plan directory it names holds the tiny backbone's CPU export (Python backend), which this machine's
Triton serves in place of TensorRT plans. Readiness is the rendered readiness command; the preStop
hook is the rendered preStop command. The decoder's engine resolves the headless Service the chart
points it at (VOV_TRITON_URL); here that name lists the pods whose readiness command passes, as
Kubernetes' DNS lists the ready pods.

Two decodes (sessions of the session model, stepping as a decoder does) start on pod A while it is
the only replica; a third, once B is ready, goes to B (the fewest open decodes). A's preStop starts
while the first two are in flight. Then: A's readiness fails at once and stays failed; a decode
started afterwards goes to B; the preStop returns only after both decodes have finished on A, and
both finish; A's own counters show no request beyond those two decodes; SIGTERM then ends A
cleanly. Without the drain (pod B, signalled while a decode is in flight), Triton stops serving the
decode: it waits for a Triton to serve again, and with none to go on it fails once its wait is over.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from deploy_helpers import CHART, NAMESPACE, RELEASE, matches, named, pod_labels, pod_spec, render

from vov.serving.triton_server import backend_directory, environment, find_tritonserver, free_port

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


class HeadlessName:
    """The headless Triton Service's name as the decoder resolves it: the addresses of the pods it
    selects whose readiness passes (Kubernetes lists only ready pods in a headless Service's DNS)."""

    def __init__(self, pods: list[Pod]):
        self.pods = list(pods)

    def __call__(self) -> list[str]:
        return [f"127.0.0.1:{p.ports['grpc']}" for p in self.pods if p.ready()]


def decode(engine, record: dict, steps: int = STEPS, pause: float = STEP_PAUSE) -> None:
    """One decode as the decoder runs it on its engine: a sequence of steps, the latent decoder, the release."""
    import torch

    from vov.serving import contract

    try:
        layout = engine.current_layout()
        first = layout.slots[0]
        compact = contract.CompactAdapter(1, np.zeros(1, np.int32),
                                          np.full(first.in_features + first.out_features, 0.01, np.float32))
        embeddings = np.zeros((1, engine.text_tokens, engine.text_dim), np.float32)
        latents = torch.randn(1, engine.channels, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        with engine.open_compact(compact, embeddings, np.ones(embeddings.shape[:2], bool)) as session:
            for i in range(steps):
                velocity = session.denoise(latents, torch.full((1,), 1.0 - i / steps))
                record["address"] = session.address
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
    # the decoders resolve the headless Service, which lists the ready Triton pods only
    docs = render("gpu")
    (decoder,) = pod_spec(named(docs, "Deployment", f"{RELEASE}-decoder"))["containers"]
    url = {e["name"]: e.get("value") for e in decoder["env"]}["VOV_TRITON_URL"]
    name, port = re.fullmatch(r"dns:///([^:]+):(\d+)", url).groups()
    service = named(docs, "Service", name.split(".")[0])
    assert name == f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is False
    assert matches({"matchLabels": service["spec"]["selector"]}, pod_labels(named(docs, "StatefulSet", f"{RELEASE}-triton")))
    assert int(port) == service["spec"]["ports"][0]["port"] == container["ports"][1]["containerPort"]


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
    from vov.serving.engines.triton import TritonEngine

    from vov_services import metrics

    def requests_seen() -> float:  # what the decoder's metrics counted of its requests to Triton
        return sum(s.value for m in metrics.REGISTRY.collect() if m.name == "vov_decoder_triton_request_seconds"
                   for s in m.samples if s.name.endswith("_count") and s.labels["model"] == "denoiser_session")

    seen_before = requests_seen()
    a, b = pods["a"], pods["b"]
    name = HeadlessName([a])  # pod B joins the Service below
    engine = TritonEngine("dns:///vov-triton-headless.vov.svc.cluster.local:8001", backbones.load("tiny"),
                          timeout=30, resolve_every=0.2, resolve=name)
    address = {p: f"127.0.0.1:{p.ports['grpc']}" for p in (a, b)}
    before = a.session_requests()
    records = [{}, {}]
    threads = [threading.Thread(target=decode, args=(engine, r)) for r in records]
    threads[0].start()
    time.sleep(1.2)
    threads[1].start()
    while records[1].get("steps", 0) < 2:
        time.sleep(0.05)
    assert [r["address"] for r in records] == [address[a]] * 2, records
    # B is ready now: the decoder spreads the next decode to the replica with fewer open decodes
    name.pods.append(b)
    time.sleep(0.3)
    spread = {}
    third = threading.Thread(target=decode, args=(engine, spread), kwargs={"steps": 6, "pause": 0.2})
    third.start()
    while "address" not in spread and "error" not in spread:
        time.sleep(0.05)
    assert spread.get("address") == address[b], spread
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
    # a decode started now, by the same decoder, goes to the replica still listed
    time.sleep(0.3)
    late = {}
    decode(engine, late, steps=3, pause=0.0)
    assert "error" not in late and late["finite"] and late["address"] == address[b], late
    assert not a.ready()
    out, err = hook.communicate(timeout=90)
    drain_end = time.monotonic()
    for t in (*threads, third):
        t.join(30)
    assert hook.returncode == 0, out + err
    # both decodes finished on A, every step, before the hook returned
    for r in records:
        assert "error" not in r and r["steps"] == STEPS and r["finite"] and r["address"] == address[a], r
        assert r["end"] <= drain_end
    assert "error" not in spread and spread["finite"], spread
    assert drain_end - max(r["end"] for r in records) < 10
    # pod A served the two decodes and nothing else: each is STEPS requests of the session model and
    # a release; no sequence started on it after its readiness went off
    assert a.session_requests() - before == 2 * (STEPS + 1)
    assert off - drain_start < 3
    assert engine.open_decodes() == {}
    # the decoder's metrics saw every request of the four decodes (two on A, two on B)
    assert requests_seen() - seen_before == 2 * (STEPS + 1) + (6 + 1) + (3 + 1)
    # then kubelet's SIGTERM: nothing is in flight, Triton exits cleanly
    a.process.send_signal(signal.SIGTERM)
    assert a.process.wait(30) == 0, a.log.read_text()[-2000:]


def test_without_the_drain_a_signal_stops_the_decode_in_flight(pods):
    """The reason for the drain: Triton, signalled with a decode in flight, stops serving it; the
    decode waits for a Triton to serve again (here none does) and fails at the end of its wait."""
    from vov import backbones

    from vov.serving.engines.triton import TritonEngine

    b = pods["b"]
    record = {}
    engine = TritonEngine(f"127.0.0.1:{b.ports['grpc']}", backbones.load("tiny"), timeout=30, retry_seconds=5)
    thread = threading.Thread(target=decode, args=(engine, record))
    thread.start()
    while record.get("steps", 0) < 2 and "error" not in record:
        time.sleep(0.05)
    b.process.send_signal(signal.SIGTERM)
    thread.join(60)
    assert "EngineUnavailable" in record.get("error", "") and record.get("steps", 0) < STEPS, record
    assert "not back within 5 s" in record["error"] or "gave up" in record["error"], record
