"""Scaling that sees its signal and removes the right pods: monitors Prometheus selects, KEDA that
survives a Prometheus outage and authenticates, PDBs that let unhealthy pods go, and the idle-first
controller (files/deletion-cost.py) run against a stand-in API server and two decoder pods' metrics.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer

import pytest
from deploy_helpers import PROFILES, RELEASE, named, of_kind, pod_spec, render, workload, workloads


def test_monitors_and_rules_carry_the_kube_prometheus_stack_label_by_default():
    docs = render("default")
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        for doc in of_kind(docs, kind):
            assert doc["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind
    (dashboard,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == f"{RELEASE}-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


@pytest.mark.parametrize("profile", PROFILES)
def test_pdbs_let_unhealthy_pods_go(profile):
    for pdb in of_kind(render(profile), "PodDisruptionBudget"):
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow", pdb["metadata"]["name"]


def test_keda_holds_its_fallback_and_authenticates():
    docs = render("keda-tls")
    (auth,) = of_kind(docs, "TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "bearerToken", "name": "vov-prometheus-token", "key": "bearerToken"}]
    scaled = {d["spec"]["scaleTargetRef"]["kind"]: d["spec"] for d in of_kind(docs, "ScaledObject")}
    assert set(scaled) == {"Deployment", "StatefulSet"}
    for spec in scaled.values():
        (trigger,) = spec["triggers"]
        assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
        assert trigger["metadata"]["authModes"] == "bearer" and trigger["metricType"] == "AverageValue"
        assert spec["fallback"]["failureThreshold"] >= 1 and spec["fallback"]["replicas"] >= 1
    assert scaled["Deployment"]["fallback"]["replicas"] == 10


def test_only_the_idle_first_controller_talks_to_the_api_server():
    docs = render("default")
    for doc in workloads(docs):
        spec = pod_spec(doc)
        assert spec.get("automountServiceAccountToken") is False, doc["metadata"]["name"]
        token = [v for v in spec.get("volumes", []) if any("serviceAccountToken" in s for s in v.get("projected", {}).get("sources", []))]
        assert bool(token) == (doc["metadata"]["name"] == f"{RELEASE}-idle-first"), doc["metadata"]["name"]
    (role,) = of_kind(docs, "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch"]}]
    assert not of_kind(docs, "ClusterRole")
    assert not [d for d in of_kind(render("cpu-demo"), "Deployment") if d["metadata"]["name"].endswith("idle-first")]


# ------------------------------------------------------------------------------------ deletion costs


class FakeApi(BaseHTTPRequestHandler):
    pods: list[dict] = []
    patches: list[tuple[str, dict, str]] = []
    auth: list[str] = []

    def log_message(self, *args):
        pass

    def _json(self, data: dict) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.auth.append(self.headers.get("Authorization", ""))
        assert self.path.startswith("/api/v1/namespaces/vov/pods?labelSelector=")
        self._json({"items": self.pods})

    def do_PATCH(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name = self.path.rsplit("/", 1)[1]
        self.patches.append((name, body, self.headers["Content-Type"]))
        for pod in self.pods:
            if pod["metadata"]["name"] == name:
                pod["metadata"].setdefault("annotations", {}).update(body["metadata"]["annotations"])
        self._json({})


def metrics_server(address: str, port: int, streams: dict[str, int], queued: dict[str, int] = {}) -> HTTPServer:
    """A decoder pod's /metrics: `streams` served and `queued` waiting, by method."""
    class Metrics(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            text = ""
            for gauge, counts in (("vov_grpc_server_in_flight", streams), ("vov_grpc_server_queued", queued)):
                text += f"# TYPE {gauge} gauge\n" + "".join(
                    f'{gauge}{{grpc_method="{m}",grpc_service="vov.v1.Decoder"}} {n}.0\n' for m, n in counts.items())
            body = text.encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((address, port), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture()
def api(tmp_path):
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path, timeout=60)

    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=api", "-keyout", "key.pem",
            "-out", "ca.crt", "-addext", "subjectAltName=IP:127.0.0.1")
    account = tmp_path / "account"
    account.mkdir()
    (account / "ca.crt").write_bytes((tmp_path / "ca.crt").read_bytes())
    (account / "token").write_text("token-1\n")
    (account / "namespace").write_text("vov")
    server = HTTPServer(("127.0.0.1", 0), FakeApi)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "ca.crt", tmp_path / "key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, account
    server.shutdown()


def test_the_idle_decoder_pods_get_the_lowest_deletion_cost(api, tmp_path):
    server, account = api
    docs = render("default")
    (container,) = pod_spec(workload(docs, f"{RELEASE}-idle-first"))["containers"]
    script = tmp_path / "deletion-cost.py"
    script.write_text(named(docs, "ConfigMap", f"{RELEASE}-idle-first")["data"]["deletion-cost.py"])
    port = int(next(a.split("=")[1] for a in container["command"] if a.startswith("--metrics-port=")))
    busy = metrics_server("127.0.0.2", port, {"Decompress": 2, "Edit": 1, "ListModels": 4}, {"Decompress": 2})
    idle = metrics_server("127.0.0.3", port, {"Decompress": 0})
    FakeApi.pods = [
        {"metadata": {"name": "vov-decoder-busy"}, "status": {"phase": "Running", "podIP": "127.0.0.2"}},
        {"metadata": {"name": "vov-decoder-idle", "annotations": {"controller.kubernetes.io/pod-deletion-cost": "5"}},
         "status": {"phase": "Running", "podIP": "127.0.0.3"}},
        {"metadata": {"name": "vov-decoder-gone"}, "status": {"phase": "Running", "podIP": "127.0.0.4"}},
        {"metadata": {"name": "vov-decoder-new"}, "status": {"phase": "Pending"}},
    ]
    FakeApi.patches, FakeApi.auth = [], []
    command = [sys.executable if a == "python" else str(script) if a.endswith("deletion-cost.py") else a
               for a in container["command"]] + ["--once", f"--account={account}"]
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(server.server_address[1]),
           "PATH": "/usr/bin:/bin"}
    try:
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stdout + first.stderr
        costs = {name: body["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
                 for name, body, _ in FakeApi.patches}
        # the busy pod (3 decode streams served and 2 waiting; ListModels is no load) outranks the idle
        # one; a pod whose metrics do not answer, or that does not run, keeps its cost
        assert costs == {"vov-decoder-busy": "5", "vov-decoder-idle": "0"}
        assert {kind for _, _, kind in FakeApi.patches} == {"application/merge-patch+json"}
        assert FakeApi.auth == ["Bearer token-1"]
        # nothing changed: nothing patched
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 0 and len(FakeApi.patches) == 2
    finally:
        busy.shutdown()
        idle.shutdown()
