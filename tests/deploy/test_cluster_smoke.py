"""Installs the chart's manifests into a real cluster and waits for readiness, when there is one.

Needs a kubeconfig (KUBECONFIG or ~/.kube/config) whose cluster can pull the vov images: the
profile is the CPU demo (no GPU), plus the values file named by VOV_SMOKE_VALUES (image names of
your registry, for instance). Without a kubeconfig the test is skipped and says so; no API server
can be installed on the machines this suite normally runs on.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from deploy_helpers import CHART, HERE, PROFILES, RELEASE, deploy_python, helm, run


def kubeconfig() -> Path | None:
    for candidate in [*os.environ.get("KUBECONFIG", "").split(os.pathsep), str(Path.home() / ".kube" / "config")]:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.mark.skipif(kubeconfig() is None, reason="no kubeconfig (KUBECONFIG or ~/.kube/config): no cluster to install into")
def test_the_cpu_profile_installs_and_becomes_ready(tmp_path):
    namespace = f"vov-smoke-{uuid.uuid4().hex[:8]}"
    args = [helm(), "template", RELEASE, str(CHART), "--namespace", namespace, "-f", str(PROFILES["cpu-demo"])]
    if os.environ.get("VOV_SMOKE_VALUES"):
        args += ["-f", os.environ["VOV_SMOKE_VALUES"]]
    rendered = run(args)
    assert rendered.returncode == 0, rendered.stderr
    (tmp_path / "manifests.yaml").write_text(rendered.stdout)
    result = run([deploy_python(), str(HERE / "tools" / "cluster_smoke.py"), "--manifests", str(tmp_path / "manifests.yaml"),
                  "--namespace", namespace, "--timeout", os.environ.get("VOV_SMOKE_TIMEOUT", "600")], timeout=1200)
    report = json.loads(result.stdout) if result.stdout.strip() else {"errors": [result.stderr]}
    assert result.returncode == 0 and not report["errors"], json.dumps(report, indent=1)
    assert {f"{RELEASE}-encoder", f"{RELEASE}-decoder"} <= set(report["ready"])
    assert report["test"]["phase"] == "Succeeded"
