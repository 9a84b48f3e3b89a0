"""Idle decoder pods go first on scale-down: each pod's deletion cost is its open decode streams.

  python deletion-cost.py --selector app.kubernetes.io/instance=vov,app.kubernetes.io/component=decoder \
      --metrics-port 9090 --methods Decompress,Edit [--interval 5] [--once]

Every interval, for each running pod the selector names in this namespace: read its /metrics, count
its open decode streams (vov_grpc_server_in_flight and vov_grpc_server_queued of the Decoder's
decode methods: served or waiting for a worker) and, when that
differs from the pod's annotation controller.kubernetes.io/pod-deletion-cost, patch the annotation.
The ReplicaSet controller removes pods of the lowest cost first, so a scale-down takes idle pods and
leaves busy ones streaming. A pod whose metrics do not answer keeps its cost.

Runs in the decoder image with the Python standard library and the pod's service account (a token
allowed to list and patch pods of its namespace), against the API server named by the
KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT variables every pod gets.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
STREAMS = re.compile(r'^vov_grpc_server_(?:in_flight|queued)\{([^}]*)\}\s+(\S+)$', re.M)


class Api:
    def __init__(self, server: str, account: str):
        self.server, self.account = server.rstrip("/"), account
        self.context = ssl.create_default_context(cafile=os.path.join(account, "ca.crt"))

    def request(self, method: str, path: str, body: dict | None = None, content_type: str = "application/json"):
        with open(os.path.join(self.account, "token")) as f:  # read each time: the token is rotated
            token = f.read().strip()
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.server + path, data=data, method=method,
                                         headers={"Authorization": f"Bearer {token}", "Content-Type": content_type,
                                                  "Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=10, context=self.context) as reply:
            return json.loads(reply.read() or b"{}")


def open_streams(address: str, port: int, methods: set[str]) -> int | None:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/metrics", timeout=2) as reply:
            text = reply.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return None
    total = 0.0
    for labels, value in STREAMS.findall(text):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields.get("grpc_service") == "vov.v1.Decoder" and fields.get("grpc_method") in methods:
            total += float(value)
    return int(total)


def update(api: Api, namespace: str, selector: str, port: int, methods: set[str]) -> dict[str, int]:
    """One pass; returns the costs it set, by pod name."""
    query = urllib.parse.urlencode({"labelSelector": selector})
    pods = api.request("GET", f"/api/v1/namespaces/{namespace}/pods?{query}").get("items", [])
    changed = {}
    for pod in pods:
        meta, status = pod.get("metadata", {}), pod.get("status", {})
        if status.get("phase") != "Running" or not status.get("podIP") or meta.get("deletionTimestamp"):
            continue
        streams = open_streams(status["podIP"], port, methods)
        if streams is None or (meta.get("annotations") or {}).get(ANNOTATION) == str(streams):
            continue
        api.request("PATCH", f"/api/v1/namespaces/{namespace}/pods/{meta['name']}",
                    {"metadata": {"annotations": {ANNOTATION: str(streams)}}}, "application/merge-patch+json")
        changed[meta["name"]] = streams
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--selector", required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--methods", default="Decompress,Edit")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--account", default=ACCOUNT, help="the service account's token, ca.crt and namespace")
    args = parser.parse_args(argv)
    server = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}"
    with open(os.path.join(args.account, "namespace")) as f:
        namespace = f.read().strip()
    api, methods = Api(server, args.account), set(args.methods.split(","))
    while True:
        try:
            changed = update(api, namespace, args.selector, args.metrics_port, methods)
            if changed:
                print(json.dumps({"msg": "deletion costs set", "pods": changed}), flush=True)
        except (urllib.error.URLError, OSError, ValueError) as e:
            print(json.dumps({"msg": "pass failed", "error": str(e)[:300]}), file=sys.stderr, flush=True)
            if args.once:
                return 1
        if args.once:
            return 0
        time.sleep(args.interval)


if __name__ == "__main__":
    sys.exit(main())
