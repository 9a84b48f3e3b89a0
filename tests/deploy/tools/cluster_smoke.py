"""Installs rendered manifests into a real cluster, waits for readiness, runs the helm test Pod.

Run with the interpreter that has the kubernetes client (.venv-deploy), with a kubeconfig:
  python cluster_smoke.py --manifests FILE --namespace NS [--timeout SECONDS] [--keep]
The namespace is created (it must not exist) and deleted at the end unless --keep. Objects that are
Helm hooks run in Helm's order: hooks other than tests are left out (a plain install of the CPU
profile has none), the test Pod and its ConfigMap are created once every Deployment is ready.
Custom resources whose CRD the cluster lacks are reported and left out.
Prints one JSON object; exit status 0 when every Deployment became ready and the test Pod succeeded.
"""

import argparse
import json
import sys
import time

import yaml
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifests", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    config.load_kube_config()
    api = client.ApiClient()
    dynamic = DynamicClient(api)
    core = client.CoreV1Api(api)
    with open(args.manifests) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    report = {"created": [], "left_out": [], "ready": [], "test": None, "errors": []}
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=args.namespace, labels={"pod-security.kubernetes.io/enforce": "restricted"})))
    try:
        tests = []
        for doc in docs:
            hook = (doc["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
            if hook == "test":
                tests.append(doc)
                continue
            if hook:
                report["left_out"].append(f"{doc['kind']}/{doc['metadata']['name']} (hook {hook})")
                continue
            try:
                resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            except ResourceNotFoundError:
                report["left_out"].append(f"{doc['kind']}/{doc['metadata']['name']} (no such API in this cluster)")
                continue
            resource.create(body=doc, namespace=args.namespace if resource.namespaced else None)
            report["created"].append(f"{doc['kind']}/{doc['metadata']['name']}")
        apps = client.AppsV1Api(api)
        deadline = time.monotonic() + args.timeout
        waiting = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
        while waiting and time.monotonic() < deadline:
            for name in sorted(waiting):
                d = apps.read_namespaced_deployment(name, args.namespace)
                if (d.status.ready_replicas or 0) >= max(1, d.spec.replicas or 1):
                    waiting.discard(name)
                    report["ready"].append(name)
            time.sleep(3)
        if waiting:
            report["errors"].append(f"not ready after {args.timeout:.0f} s: {sorted(waiting)}")
        else:
            for doc in tests:
                dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"]).create(
                    body=doc, namespace=args.namespace)
            pods = [d["metadata"]["name"] for d in tests if d["kind"] == "Pod"]
            for name in pods:
                while time.monotonic() < deadline:
                    phase = core.read_namespaced_pod(name, args.namespace).status.phase
                    if phase in ("Succeeded", "Failed"):
                        break
                    time.sleep(2)
                log = core.read_namespaced_pod_log(name, args.namespace)
                report["test"] = {"pod": name, "phase": phase, "log": log[-4000:]}
                if phase != "Succeeded":
                    report["errors"].append(f"test Pod {name}: {phase}")
    except Exception as e:  # reported, then the namespace is removed
        report["errors"].append(f"{type(e).__name__}: {e}")
    finally:
        if not args.keep:
            core.delete_namespace(args.namespace)
    json.dump(report, sys.stdout, indent=1)
    return 0 if not report["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
