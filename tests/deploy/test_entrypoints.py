"""The chart's commands and environment, run here: the containers' exact command lines start the
real services on loopback and become SERVING, so flags, variables and entrypoints agree.

From the rendered manifests (backbone set to the tiny test backbone) each vov container's command,
args and env are taken as they are, with three substitutions only a machine outside the cluster
needs: `python` is this interpreter, ports become free loopback ports (listen address 127.0.0.1),
and paths that exist only in the image (the decoder's exported models) point at a temporary export.
The images' entrypoints (docker/*.Dockerfile) must be the same command lines.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from deploy_helpers import CHART, NAMESPACE, RELEASE, ROOT, named, pod_spec, render, vov_service_of

from vov.serving.serve import wait_healthy
from vov.serving.triton_server import free_port

pytestmark = pytest.mark.slow

# (profile, Deployment) pairs started: the CPU demo (in-process engine) and the GPU profile's
# decoder, pointed at a real Triton on loopback serving the same export (the decoder reports
# SERVING only once its engine answers)
STARTED = [("cpu-demo", "encoder"), ("cpu-demo", "decoder"), ("gpu", "decoder")]
# and the TLS profile's encoder, with certificates made here: TLS with client certificates required
TLS_STARTED = ("keda-tls", "encoder")


def container_of(profile: str, component: str) -> dict:
    docs = render(profile, "backbone=tiny")
    spec = pod_spec(named(docs, "Deployment", f"{RELEASE}-{component}"))
    (container,) = [c for c in spec["containers"] if vov_service_of(c) == component]
    return container


@pytest.fixture(scope="module")
def tiny_export(tiny_exports):
    return tiny_exports["cpu"]


@pytest.fixture(scope="module")
def triton(tiny_export, tmp_path_factory):
    from vov.serving.triton_server import TritonServer

    server = TritonServer(tiny_export, tmp_path_factory.mktemp("triton"), free_port("127.0.0.1"),
                          free_port("127.0.0.1")).start()
    try:
        server.wait_ready(120)
        yield server
    finally:
        server.stop()


def localise(container: dict, tiny_export: Path, triton_url: str, files: dict[str, Path] | None = None,
             prefixes: dict[str, str] | None = None) -> tuple[list[str], dict[str, str], dict[str, int]]:
    """The container's command line and environment, made to run on this machine's loopback; `files`
    maps paths of the pod to files here, `prefixes` the directories where volumes are mounted."""
    command = [*container["command"], *container.get("args", [])]
    assert command[0] == "python"
    command[0] = sys.executable
    env, ports = {}, {}
    for item in container["env"]:
        name = item["name"]
        if "valueFrom" in item:  # the only reference the chart makes: a thread count from the CPU limit
            ref = item["valueFrom"]["resourceFieldRef"]
            assert ref["resource"] == "limits.cpu" and ref["containerName"] == container["name"]
            cores = float(str(container["resources"]["limits"]["cpu"]).removesuffix("m")) / (
                1000 if str(container["resources"]["limits"]["cpu"]).endswith("m") else 1)
            item = {"name": name, "value": str(max(1, min(os.cpu_count() or 1, -int(-cores // 1))))}
        value = item["value"]
        if name.endswith("_HOST"):
            value = "127.0.0.1"
        elif name.endswith("_PORT") and value != "0":
            ports[name] = free_port("127.0.0.1")
            value = str(ports[name])
        elif name == "VOV_TRITON_URL":
            value = triton_url
        elif name == "VOV_MODEL_REPOSITORY":
            value = str(tiny_export)
        elif name == "VOV_DEVICE":
            value = "cpu"  # no GPU here; test_chart checks that a GPU encoder is told to use it
        elif files and value in files:
            value = str(files[value])
        elif prefixes and any(value.startswith(p) for p in prefixes):
            prefix = next(p for p in prefixes if value.startswith(p))
            value = prefixes[prefix] + value[len(prefix):]
        elif value.startswith("/"):
            raise AssertionError(f"{name}={value}: a path in the image this test does not know how to map")
        env[name] = value
    return command, env, ports


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    """A CA, and a certificate it signed for loopback (server and client use), made with openssl."""
    d = tmp_path_factory.mktemp("tls")

    def openssl(*args):
        result = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=d, timeout=60)
        assert result.returncode == 0, result.stderr

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=vov test CA",
            "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=vov-encoder", "-keyout", "tls.key", "-out", "tls.csr")
    names = ",".join(f"DNS:{RELEASE}-{c}.{NAMESPACE}.svc" for c in ("encoder", "decoder"))
    (d / "ext.cnf").write_text(f"subjectAltName=IP:127.0.0.1,DNS:localhost,{names}\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "ext.cnf", "-out", "tls.crt")
    # where the chart mounts the Secrets -> the files made here
    return {"/etc/vov/tls/tls.crt": d / "tls.crt", "/etc/vov/tls/tls.key": d / "tls.key",
            "/etc/vov/tls/ca.crt": d / "ca.crt", "/etc/vov/client-ca/ca.crt": d / "ca.crt"}


def helm_test_command(profile: str, addresses: dict[str, str], files: dict[str, Path]) -> list[str]:
    """The helm test Pod's command line for `profile`, aimed at local addresses and files."""
    docs = render(profile, "backbone=tiny")
    (check,) = pod_spec(named(docs, "Pod", f"{RELEASE}-test"))["containers"]
    command = [*check["command"], *check["args"]]
    assert command[:2] == ["python", "/opt/vov/test/helm-test.py"]
    local = [sys.executable, str(CHART / "files" / "helm-test.py")]
    for arg in command[2:]:
        flag, _, value = arg.partition("=")
        component = flag.removeprefix("--")
        if component in ("encoder", "decoder"):
            if component in addresses:
                local.append(f"{flag}={addresses[component]}")
        else:
            local.append(f"{flag}={files.get(value, value)}")
    return local


def wait_for_helm_test(command: list[str], process, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode} while starting:\n{log.read_text()[-2000:]}")
        result = subprocess.run([*command, "--timeout", "2"], capture_output=True, text=True, timeout=60)
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not serving after {timeout:.0f} s:\n{result.stdout}\n{log.read_text()[-2000:]}")
        time.sleep(1)


@pytest.fixture(scope="module")
def started(tiny_export, triton, certificates, tmp_path_factory):
    logs = tmp_path_factory.mktemp("entrypoint-logs")
    running = {}
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOV_")}
    try:
        for profile, component in [*STARTED, TLS_STARTED]:
            command, env, ports = localise(container_of(profile, component), tiny_export, triton.grpc_url, certificates)
            log = open(logs / f"{profile}-{component}.log", "wb")
            process = subprocess.Popen(command, env={**base, **env}, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
            log.close()
            prefix = f"VOV_{component.upper()}"
            running[(profile, component)] = {"process": process, "env": env, "ports": ports,
                                             "address": f"127.0.0.1:{ports[f'{prefix}_PORT']}",
                                             "log": logs / f"{profile}-{component}.log"}
        for key, r in running.items():
            if key == TLS_STARTED:
                command = helm_test_command(key[0], {key[1]: r["address"]}, certificates)
                wait_for_helm_test(command, r["process"], r["log"])
                continue
            wait_healthy(r["address"], r["process"], f"{key[1]} of the {key[0]} profile", 90, r["log"])
        yield running
    finally:
        for r in running.values():
            if r["process"].poll() is None:
                r["process"].send_signal(signal.SIGTERM)
        for r in running.values():
            try:
                r["process"].wait(30)
            except subprocess.TimeoutExpired:
                r["process"].kill()
                r["process"].wait()


@pytest.mark.parametrize("profile, component", STARTED)
def test_the_chart_command_serves(started, profile, component):
    r = started[(profile, component)]
    assert r["process"].poll() is None
    # the metrics endpoint is where the chart says (VOV_METRICS_PORT), with the chart's worker count
    port = r["ports"]["VOV_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    workers = re.search(r"^vov_grpc_server_workers (\S+)$", text, re.M)
    assert workers and float(workers.group(1)) == float(r["env"][f"VOV_{component.upper()}_WORKERS"])


def test_the_helm_test_pod_passes_against_the_started_services(started):
    """The helm test Pod's own command, pointed at the services started above."""
    command = helm_test_command("cpu-demo", {c: started[("cpu-demo", c)]["address"] for c in ("encoder", "decoder")}, {})
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("ok  ") == 6 and "every check passed" in result.stdout


def test_the_helm_test_fails_when_a_service_is_not_there(started):
    result = subprocess.run([sys.executable, str(CHART / "files" / "helm-test.py"),
                             f"--decoder=127.0.0.1:{free_port('127.0.0.1')}", "--timeout", "2"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "FAIL decoder" in result.stdout


def test_sigterm_drains_and_exits_cleanly(started):
    r = started[("gpu", "decoder")]
    r["process"].send_signal(signal.SIGTERM)
    assert r["process"].wait(60) == 0
    log = r["log"].read_text()
    assert '"shutting down"' in log and f'"grace_s": {float(r["env"]["VOV_GRACE_SECONDS"])}' in log


@pytest.mark.parametrize("component", ["encoder", "decoder"])
def test_the_image_entrypoint_is_the_chart_command(component):
    dockerfile = (ROOT / "docker" / f"{component}.Dockerfile").read_text()
    entrypoints = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", dockerfile, re.M)
    assert entrypoints, f"docker/{component}.Dockerfile has no exec-form ENTRYPOINT"
    chart = container_of("gpu", component)
    assert json.loads(entrypoints[-1]) == [*chart["command"], *chart.get("args", [])]


def test_the_models_image_entrypoint_is_the_staging_command():
    dockerfile = (ROOT / "docker" / "models.Dockerfile").read_text()
    entrypoint = json.loads(re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", dockerfile, re.M)[-1])
    docs = render("gpu")
    for doc in [named(docs, "StatefulSet", f"{RELEASE}-triton")]:
        (stage,) = [c for c in pod_spec(doc)["initContainers"] if c["name"] == "stage-onnx"]
        assert stage["image"].split(":")[0].endswith("/models")
        assert [*stage["command"], *stage.get("args", [])] == entrypoint
    # the image carries the scripts the chart mounts, under the same names
    for script in re.findall(r"helm/vov/files/(\S+\.sh)", dockerfile):
        assert (CHART / "files" / script).exists()
    # and its export is where the chart looks for it, for any backbone it is built for
    (export_dir,) = re.findall(r"^ENV VOV_EXPORT_DIR=(\S+)$", dockerfile, re.M)
    for backbone in ("embedded", "wan", "image"):
        (stage,) = [c for c in pod_spec(named(render("gpu", f"backbone={backbone}"), "StatefulSet", f"{RELEASE}-triton"))[
            "initContainers"] if c["name"] == "stage-onnx"]
        env = {e["name"]: e["value"] for e in stage["env"]}
        assert env["VOV_EXPORT_DIR"] == export_dir.replace("${BACKBONE}", backbone)


def test_the_tls_profile_requires_tls_and_client_certificates(started, certificates):
    """The TLS profile's encoder, started from the chart's variables with certificates mapped in:
    the helm test Pod's TLS command passes; plaintext, and TLS without a client certificate, fail."""
    r = started[TLS_STARTED]
    command = helm_test_command(TLS_STARTED[0], {"encoder": r["address"]}, certificates)
    assert "--ca=" in " ".join(command) and "--cert=" in " ".join(command)
    passed = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert passed.returncode == 0 and passed.stdout.count("ok  ") == 3, passed.stdout + passed.stderr
    plain = [a for a in command if not a.startswith(("--ca=", "--cert=", "--key="))]
    no_client = [a for a in command if not a.startswith(("--cert=", "--key="))]
    for attempt in (plain, no_client):
        failed = subprocess.run([*attempt, "--timeout", "3"], capture_output=True, text=True, timeout=60)
        assert failed.returncode == 1 and "FAIL encoder" in failed.stdout, failed.stdout


def test_the_tls_readiness_probe_asks_grpc_health_over_tls(started, certificates, tmp_path):
    """The TLS profile's readiness command (files/grpc-health.py from the rendered ConfigMap), run
    against the encoder started with that profile: SERVING over mutual TLS; without the pod's client
    certificate, or against a port with nothing behind it, not ready."""
    docs = render(TLS_STARTED[0], "backbone=tiny")
    script = tmp_path / "grpc-health.py"
    script.write_text(named(docs, "ConfigMap", f"{RELEASE}-probe")["data"]["grpc-health.py"])
    container = container_of(*TLS_STARTED)
    command = container["readinessProbe"]["exec"]["command"]
    r = started[TLS_STARTED]
    chart_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")

    def local(argv):
        out = [sys.executable if a == "python" else str(script) if a.endswith("grpc-health.py") else a for a in argv]
        out = [f"--port={r['ports']['VOV_ENCODER_PORT']}" if a == f"--port={chart_port}" else a for a in out]
        return [f"{a.split('=', 1)[0]}={certificates[a.split('=', 1)[1]]}" if "=/etc/" in a else a for a in out]

    ready = subprocess.run(local(command), capture_output=True, text=True, timeout=30)
    assert ready.returncode == 0 and "SERVING" in ready.stdout, ready.stdout + ready.stderr
    no_cert = [a for a in command if not a.startswith(("--cert=", "--key="))]
    assert subprocess.run(local(no_cert), capture_output=True, timeout=30).returncode == 1
    elsewhere = [f"--port={free_port('127.0.0.1')}" if a.startswith("--port=") else a for a in local(command)]
    assert subprocess.run(elsewhere, capture_output=True, timeout=30).returncode == 1
