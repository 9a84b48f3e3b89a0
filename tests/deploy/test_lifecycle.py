"""Install, upgrade, rollout and uninstall, read from the rendered manifests: rules whose breach
deadlocks a release on a real cluster and that no schema sees.

- Hooks: every hook states a delete policy that replaces it on the next run; no claim is a hook
  (Helm's before-hook-creation would delete it on the next install whatever resource-policy says);
  no hook mounts a ReadWriteOnce claim that a running workload mounts (Multi-Attach on another node,
  and Helm waits for its timeout); no hook asks for a GPU (a hook that only finds its plans would hold
  a GPU the running pods need).
- Rollouts of GPU workloads never need a second GPU on a node (no surge).
- Plans survive: their claims are ordinary objects kept on uninstall, or a StatefulSet's claims that
  outlive it.
"""

from __future__ import annotations

import pytest
from deploy_helpers import (PROFILES, RELEASE, claims_of, gpu_requests, hook_events, of_kind, pod_spec, render,
                            workloads)

# the profiles, plus settings that turn on what no profile shows
CASES = [(p, ()) for p in PROFILES] + [("default", ("plans.volume.mode=shared", "plans.volume.accessModes={ReadWriteMany}"))]


def rwx_claims(docs: list[dict]) -> set[str]:
    """Claims rendered here that several nodes may mount at once."""
    return {d["metadata"]["name"] for d in of_kind(docs, "PersistentVolumeClaim")
            if {"ReadWriteMany", "ReadOnlyMany"} & set(d["spec"]["accessModes"])}


def hook_problems(docs: list[dict]) -> list[str]:
    """What is wrong with the hooks of one rendered release (empty: nothing)."""
    problems = []
    running = {c for d in workloads(docs) if not hook_events(d) and d["kind"] != "Pod" for c in claims_of(d)}
    shared_ok = rwx_claims(docs)
    for doc in docs:
        events = hook_events(doc)
        if not events:
            continue
        where = f"{doc['kind']} {doc['metadata']['name']}"
        policy = {p.strip() for p in doc["metadata"]["annotations"].get("helm.sh/hook-delete-policy", "").split(",")}
        if "before-hook-creation" not in policy:
            problems.append(f"{where}: no before-hook-creation delete policy")
        if doc["kind"] == "PersistentVolumeClaim":
            problems.append(f"{where}: a claim made by a hook is deleted by the next install's hook run")
        if pod_spec(doc) is None:
            continue
        for claim in claims_of(doc) & running:
            if claim not in shared_ok:
                problems.append(f"{where}: mounts claim {claim}, which a running workload holds ReadWriteOnce")
        spec = pod_spec(doc)
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            if gpu_requests(c):
                problems.append(f"{where}: container {c['name']} asks for a GPU")
    return problems


@pytest.mark.parametrize("profile, sets", CASES)
def test_hooks_cannot_deadlock_an_install_or_upgrade(profile, sets):
    docs = render(profile, *sets)
    assert any(hook_events(d) for d in docs), "the helm test hooks at least"
    assert hook_problems(docs) == []


def test_the_hook_lint_finds_the_old_plan_build_hook():
    """The lint can fail: the pre-upgrade plan Job this chart used to ship, against a running Triton."""
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "vov-models", "annotations": {"helm.sh/hook": "pre-install",
                                                                "helm.sh/resource-policy": "keep"}},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}}}
    volumes = [{"name": "models", "persistentVolumeClaim": {"claimName": "vov-models"}}]
    gpu = {"limits": {"nvidia.com/gpu": 1}, "requests": {"nvidia.com/gpu": 1}}
    pod = {"volumes": volumes, "containers": [{"name": "build-plans", "resources": gpu}]}
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "vov-plan-build", "annotations": {"helm.sh/hook": "pre-install,pre-upgrade"}},
           "spec": {"template": {"spec": pod}}}
    triton = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "vov-triton"},
              "spec": {"template": {"spec": {"volumes": volumes, "containers": [{"name": "triton", "resources": gpu}]}}}}
    problems = hook_problems([claim, job, triton])
    assert len(problems) == 5, problems  # two missing policies, the claim, the shared claim, the GPU
    assert any("ReadWriteOnce" in p for p in problems) and any("asks for a GPU" in p for p in problems)


@pytest.mark.parametrize("profile, sets", CASES)
def test_gpu_workloads_roll_out_without_a_second_gpu(profile, sets):
    for doc in workloads(render(profile, *sets)):
        spec = pod_spec(doc)
        if not any(gpu_requests(c) for c in [*spec.get("initContainers", []), *spec["containers"]]):
            continue
        where = doc["metadata"]["name"]
        if doc["kind"] == "Deployment":
            strategy = doc["spec"]["strategy"]
            assert strategy["type"] == "Recreate" or str(strategy["rollingUpdate"]["maxSurge"]) in ("0", "0%"), where
        else:
            # a StatefulSet replaces one pod at a time, deleting it before its successor is created
            assert doc["kind"] == "StatefulSet", where
            assert doc["spec"]["updateStrategy"]["type"] == "RollingUpdate", where
            assert "maxUnavailable" not in doc["spec"]["updateStrategy"].get("rollingUpdate", {}), where


@pytest.mark.parametrize("profile, sets", CASES)
def test_plan_volumes_outlive_the_release(profile, sets):
    docs = render(profile, *sets)
    tritons = [d for d in workloads(docs) if d["metadata"]["name"] == f"{RELEASE}-triton"]
    for triton in tritons:
        mounted = {v["name"] for v in pod_spec(triton)["volumes"]}
        templates = {t["metadata"]["name"] for t in triton["spec"].get("volumeClaimTemplates", [])}
        assert "plans" in mounted ^ templates  # from the shared claim or from a template, never both
        if templates:
            # the StatefulSet's claims are not release objects: kept when it is deleted or scaled down,
            # and found again by the pod of the same ordinal after a reinstall
            assert triton["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    for claim in of_kind(docs, "PersistentVolumeClaim"):
        annotations = claim["metadata"].get("annotations") or {}
        assert "helm.sh/hook" not in annotations and annotations.get("helm.sh/resource-policy") == "keep"
