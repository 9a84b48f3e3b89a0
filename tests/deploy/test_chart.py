"""The chart, offline: strict lint, schema validation of every rendered object for two Kubernetes
versions, custom resources against their CRDs, refused values, and structural rules that a schema
cannot express (selectors that match, ports that exist, the autoscaler's target, GPU limits)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from deploy_helpers import (CHART, CRD_KINDS, HERE, KUBERNETES_VERSIONS, NAMESPACE, NODE_MODULES, PROFILES, RELEASE,
                            deploy_python, helm, matches, named, need, of_kind, pod_labels, pod_spec, render,
                            run, vov_service_of, workload, workloads)

# ------------------------------------------------------------------------------------ lint and render


@pytest.mark.parametrize("profile", PROFILES)
def test_lint_strict(profile):
    args = [helm(), "lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    if PROFILES[profile]:
        args += ["-f", str(PROFILES[profile])]
    result = run(args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_every_profile_renders_the_objects_it_promises():
    kinds = {p: {d["kind"] for d in render(p)} for p in PROFILES}
    assert {"cpu-demo", "gpu", "mig", "keda-tls"} <= set(PROFILES)
    for profile, found in kinds.items():
        assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "ServiceAccount", "Pod"} <= found, profile
    assert "HorizontalPodAutoscaler" in kinds["gpu"] and "ScaledObject" not in kinds["gpu"]
    assert "ScaledObject" in kinds["keda-tls"] and "HorizontalPodAutoscaler" not in kinds["keda-tls"]
    assert {"StatefulSet", "PersistentVolumeClaim", "ServiceMonitor", "PodMonitor", "PrometheusRule"} <= kinds["gpu"]
    assert "StatefulSet" in kinds["default"] and "PersistentVolumeClaim" not in kinds["default"]  # claims per replica
    assert not any("triton" in d["metadata"]["name"] for d in render("cpu-demo"))


# ------------------------------------------------------------------------------------ Kubernetes schemas


def k8s_validate(files, versions=KUBERNETES_VERSIONS, skip_kinds=CRD_KINDS) -> dict:
    args = [deploy_python(), str(HERE / "tools" / "k8s_validate.py")]
    for v in versions:
        args += ["--version", v]
    for k in skip_kinds:
        args += ["--skip-kind", k]
    result = run([*args, *map(str, files)])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_object_is_valid_for_kubernetes_1_29_and_1_33(rendered_dir):
    files = sorted(rendered_dir.glob("*.yaml"))
    report = k8s_validate(files)
    core = sum(1 for f in files for d in yaml.safe_load_all(f.read_text()) if d and d["kind"] not in CRD_KINDS)
    assert report["checked"] == core * len(KUBERNETES_VERSIONS)
    assert report["errors"] == [], json.dumps(report["errors"], indent=1)


def test_the_validator_refuses_unknown_kinds_fields_and_removed_apis(tmp_path):
    """The check above can fail: a typo in a kind, an unknown field and an API removed in 1.26."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all([
        {"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "typo"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "field"},
         "spec": {"ports": [{"port": 80, "appProtocoll": "grpc"}]}},
        {"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "old"},
         "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 2}},
    ]))
    report = k8s_validate([bad])
    failed = {(e["name"], e["version"]) for e in report["errors"]}
    assert failed == {(n, v) for n in ("typo", "field", "old") for v in KUBERNETES_VERSIONS}


# ------------------------------------------------------------------------------------ custom resources


def crd_validate(docs: list[dict]) -> dict:
    node = need(subprocess.run(["sh", "-c", "command -v node"], capture_output=True, text=True).stdout.strip() or None,
                "node")
    need(NODE_MODULES / "@kubernetes-models" / "keda", "@kubernetes-models/keda")
    need(NODE_MODULES / "@kubernetes-models" / "prometheus-operator", "@kubernetes-models/prometheus-operator")
    need(NODE_MODULES / "@kubernetes-models" / "cert-manager", "@kubernetes-models/cert-manager")
    result = run([node, str(HERE / "tools" / "crd_validate.mjs"), str(NODE_MODULES)], input=json.dumps(docs))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_custom_resources_match_their_crd_schemas():
    docs = [d for p in PROFILES for d in render(p) if d["kind"] in CRD_KINDS]
    assert {d["kind"] for d in docs} == set(CRD_KINDS)
    report = crd_validate(docs)
    assert report["checked"] == len(docs)
    assert report["errors"] == [], json.dumps(report["errors"], indent=1)


def test_the_crd_check_refuses_a_broken_scaled_object_and_an_unknown_kind():
    scaled = named(render("keda-tls"), "ScaledObject", f"{RELEASE}-decoder")
    broken = json.loads(json.dumps(scaled))
    broken["spec"]["minReplicaCount"] = "two"
    del broken["spec"]["triggers"][0]["type"]
    unknown = {"apiVersion": "monitoring.coreos.com/v1", "kind": "Probe", "metadata": {"name": "p"}, "spec": {}}
    report = crd_validate([broken, unknown])
    assert len(report["errors"]) == 2
    assert "minReplicaCount" in report["errors"][0]["error"] or "type" in report["errors"][0]["error"]


# ------------------------------------------------------------------------------------ refused values


def template_error(*args: str) -> str:
    result = run([helm(), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args])
    assert result.returncode != 0, "helm accepted values it should refuse"
    return result.stderr


def test_a_bad_values_file_is_refused_with_each_field_named():
    message = template_error("-f", str(HERE / "bad-values.yaml"))
    for field in ("autoscaling.mode", "encoder.gpu.resourceName", "images.triton.tag",
                  "containerSecurityContext.readOnlyRootFilesystem", "decoder.port", "decoder.engine",
                  "encoder.resources: limits is required"):
        assert field in message, f"{field} not named in:\n{message}"


@pytest.mark.parametrize("sets, words", [
    (["decoder.autoscaling.minReplicas=6", "decoder.autoscaling.maxReplicas=3"], "maxReplicas (3) is below minReplicas (6)"),
    (["tls.enabled=true"], "tls.enabled needs tls.secretName"),
    (["decoder.engine=triton", "triton.enabled=false"], "enable Triton or set decoder.engine=onnxruntime"),
    (["images.encoder.tag=latest"], "images.encoder.tag is 'latest'"),
    (["plans.volume.mode=shared"], "needs ReadWriteMany"),
    (["triton.autoscaling.minReplicas=5"], "triton.autoscaling.maxReplicas (4) is below minReplicas (5)"),
    (["autoscaling.mode=keda", "autoscaling.keda.authentication.mode=bearer"], "needs autoscaling.keda.authentication.secretName"),
    (["tls.triton.mutual=true"], "tls.triton.mutual needs tls.triton.enabled=true"),
    (["decoder.pixelStepsPerSecond=1000000", "limits.maxWork=600000000"], "decoder.graceSeconds (120) must be at least"),
    (["tls.enabled=true", "tls.certManager.enabled=true"], "needs tls.certManager.issuerRef.name"),
    (["plans.build.enabled=false"], "plans.build.enabled must be true"),
    (["plans.volume.existingClaim=mine"], "set plans.volume.mode=shared"),
    (["encoder.gpu.resourceName=nvidia.com/mig-1g.10gb", "encoder.gpu.count=2"], "one MIG slice only"),
    (["encoder.gpu.count=2"], "encoder.gpu.count is 2, but a encoder pod uses one GPU"),
    (["triton.gpu.count=4"], "triton.gpu.count is 4, but a triton pod uses one GPU"),
    (["triton.user=null"], "triton: user is required"),
    (["triton.user=0"], "triton.user: Must be greater than or equal to 1"),
    (["podSecurityContext.runAsUser=0"], "podSecurityContext.runAsUser: Must be greater than or equal to 1"),
    (["decoder.autoscaling.minReplicas=1"], "must be below decoder.autoscaling.minReplicas"),
])
def test_cross_field_rules_fail_with_a_readable_message(sets, words):
    message = template_error(*[a for s in sets for a in ("--set", s)])
    assert words in message, message


# ------------------------------------------------------------------------------------ structure


def metric_names(query: str) -> set[str]:
    """The metrics a PromQL query reads: selectors by name (`name{`) and by a `__name__` pattern of alternatives."""
    names = set(re.findall(r"\b((?:vov|nv)_[a-z_]+)\{", query))
    for pattern in re.findall(r'__name__=~"([^"]*)"', query):
        names |= set(pattern.split("|"))
    return names


@pytest.mark.parametrize("profile", PROFILES)
def test_the_autoscalers_target_their_workloads_on_served_metrics(profile):
    """The decoder is scaled on its open decode streams, Triton on its queue time, never on CPU; each
    autoscaler's metric is one the adapter's configuration serves (HPA) or a query KEDA runs, over
    series the rules record from metrics the services and Triton export."""
    docs = render(profile)
    scalers = of_kind(docs, "HorizontalPodAutoscaler") + of_kind(docs, "ScaledObject")
    expected = {"decoder": "Deployment", "triton": "StatefulSet"}
    found = {}
    for scaler in scalers:
        target = scaler["spec"]["scaleTargetRef"]
        component = target["name"].removeprefix(f"{RELEASE}-")
        assert target["apiVersion"] == "apps/v1" and target["kind"] == expected[component]
        assert "replicas" not in workload(docs, target["name"])["spec"], "an autoscaled workload leaves replicas to it"
        assert "cpu" not in json.dumps(scaler).lower(), "no autoscaler here is driven by CPU use"
        found[component] = scaler
    for component, kind in expected.items():
        if any(d["metadata"]["name"] == f"{RELEASE}-{component}" for d in workloads(docs)) and component not in found:
            assert "replicas" in workload(docs, f"{RELEASE}-{component}")["spec"]
    if not found:
        return
    from vov_services import metrics  # the services' metrics: the decoder's signal is one of them
    exported = {m.name for m in metrics.REGISTRY.collect()}
    rules = {r["record"]: r["expr"] for g in named(docs, "PrometheusRule", RELEASE)["spec"]["groups"] for r in g["rules"]
             if "record" in r}
    if found and all(s["kind"] == "HorizontalPodAutoscaler" for s in found.values()):
        adapter = named(docs, "ConfigMap", f"{RELEASE}-prometheus-adapter")
        assert adapter["metadata"]["namespace"] == "monitoring"
        served = {r["name"]["as"]: r for r in yaml.safe_load(adapter["data"]["config.yaml"])["rules"]}
        assert yaml.safe_load(adapter["data"]["values.yaml"])["rules"]["custom"] == list(served.values())
        for component, scaler in found.items():
            rule = served[scaler["spec"]["metrics"][0]["pods"]["metric"]["name"]]
            recorded = rules[rule["seriesQuery"].split("{")[0]]
            names = metric_names(recorded)
            assert names and {n for n in names if n.startswith("vov_")} <= exported, names
            assert names == ({"vov_grpc_server_in_flight", "vov_grpc_server_queued"} if component == "decoder"
                             else {"nv_inference_queue_duration_us", "nv_inference_request_success"})
    else:
        for component, scaler in found.items():
            (trigger,) = scaler["spec"]["triggers"]
            assert trigger["metricType"] == "AverageValue" and scaler["spec"]["fallback"]["replicas"] >= 1
            names = metric_names(trigger["metadata"]["query"])
            assert names and {n for n in names if n.startswith("vov_")} <= exported


@pytest.mark.parametrize("profile", PROFILES)
def test_selectors_match_the_pods_they_mean(profile):
    docs = render(profile)
    pods = {d["metadata"]["name"]: pod_labels(d) for d in workloads(docs)}
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        hit = [n for n, labels in pods.items() if matches(pdb["spec"]["selector"], labels)]
        assert hit == [pdb["metadata"]["name"]], f"PDB {pdb['metadata']['name']} selects {hit}"
    for svc in of_kind(docs, "Service"):
        hit = [n for n, labels in pods.items() if matches({"matchLabels": svc["spec"]["selector"]}, labels)]
        assert len(hit) == 1, f"Service {svc['metadata']['name']} selects {hit}"
        ports = {p["name"]: p["containerPort"] for c in pod_spec(workload(docs, hit[0]))["containers"]
                 for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, f"{svc['metadata']['name']}: no container port {p['targetPort']}"
            if p["name"] == "grpc":
                assert p["appProtocol"] == "grpc"
    for policy in of_kind(docs, "NetworkPolicy"):
        hit = [n for n, labels in pods.items() if matches(policy["spec"]["podSelector"], labels)]
        assert hit, f"NetworkPolicy {policy['metadata']['name']} selects no pod"
    for monitor in of_kind(docs, "ServiceMonitor"):
        services = [s for s in of_kind(docs, "Service") if matches(monitor["spec"]["selector"], s["metadata"]["labels"])]
        assert {s["metadata"]["name"] for s in services} >= {f"{RELEASE}-encoder", f"{RELEASE}-decoder"}
        for s in services:
            assert "metrics" in {p["name"] for p in s["spec"]["ports"]}


@pytest.mark.parametrize("profile", PROFILES)
def test_probes_use_ports_the_containers_open(profile):
    for doc in workloads(render(profile)):
        for c in pod_spec(doc)["containers"]:
            names = {p["name"] for p in c.get("ports", [])}
            numbers = {p["containerPort"] for p in c.get("ports", [])}
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                if doc["kind"] == "Deployment":
                    assert probe, f"{doc['metadata']['name']}/{c['name']} has no {kind}"
                if not probe:
                    continue
                handler = next(v for k, v in probe.items() if k in ("grpc", "httpGet", "tcpSocket", "exec"))
                if "port" in handler:
                    assert handler["port"] in (names | numbers), f"{doc['metadata']['name']}/{c['name']} {kind}"


@pytest.mark.parametrize("profile", PROFILES)
def test_gpu_limits_where_the_profile_asks_for_gpus(profile):
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    override = yaml.safe_load(PROFILES[profile].read_text()) if PROFILES[profile] else {}
    docs = render(profile)
    for component in ("encoder", "triton"):
        gpu = {**values[component]["gpu"], **(override.get(component, {}).get("gpu", {}))}
        found = [d for d in workloads(docs) if d["metadata"]["name"] == f"{RELEASE}-{component}"]
        if not found:
            continue
        spec = pod_spec(found[0])
        container = spec["containers"][0]
        gpu_limits = {k: v for k, v in container["resources"]["limits"].items() if k.startswith("nvidia.com/")}
        if component == "encoder":  # a fit runs on the GPU the pod is given, else on the CPU
            device = {e["name"]: e.get("value") for e in container["env"]}["VOV_DEVICE"]
            assert device == ("cuda" if gpu["enabled"] else "cpu")
        if gpu["enabled"]:
            assert gpu_limits == {gpu["resourceName"]: gpu["count"]}
            assert container["resources"]["requests"][gpu["resourceName"]] == gpu["count"]
            assert spec.get("nodeSelector") and any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", []))
        else:
            assert not gpu_limits and not spec.get("nodeSelector")
        # the plan build runs in the Triton pod, on the GPU that pod holds
        for init in spec.get("initContainers", []):
            init_gpus = {k: v for k, v in init["resources"]["limits"].items() if k.startswith("nvidia.com/")}
            assert init_gpus in ({}, gpu_limits), (component, init["name"])


@pytest.mark.parametrize("profile, sets", [(p, ()) for p in PROFILES] + [("default", ("openshift=true",))])
def test_every_pod_runs_under_the_restricted_profile_with_bounded_resources(profile, sets):
    openshift = "openshift=true" in sets
    for doc in workloads(render(profile, *sets)):
        spec = pod_spec(doc)
        where = doc["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        # never root; and under OpenShift no fixed IDs at all (its SCC assigns them)
        contexts = [spec["securityContext"], *[c["securityContext"] for c in [*spec.get("initContainers", []), *spec["containers"]]]]
        for context in contexts:
            for key in ("runAsUser", "runAsGroup", "fsGroup"):
                assert (key not in context) if openshift else context.get(key, 1) >= 1, (where, key, context.get(key))
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), (where, c["name"])
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", (where, c["name"])
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][bound]), (where, c["name"], bound)
            # a read-only root: whatever the container writes goes to a mounted volume
            assert any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])), (where, c["name"])


@pytest.mark.parametrize("profile", PROFILES)
def test_termination_grace_covers_the_drain_and_the_services_grace(profile):
    for doc in of_kind(render(profile), "Deployment"):
        spec = pod_spec(doc)
        for c in spec["containers"]:
            if not vov_service_of(c):
                continue
            env = {e["name"]: e.get("value") for e in c["env"]}
            sleep = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
            assert sleep > 0
            assert spec["terminationGracePeriodSeconds"] > sleep + float(env["VOV_GRACE_SECONDS"])


def test_triton_runs_the_official_image_with_its_named_ports():
    for profile in PROFILES:
        docs = render(profile)
        tritons = [d for d in workloads(docs) if d["metadata"]["name"] == f"{RELEASE}-triton"]
        for triton in tritons:
            c = pod_spec(triton)["containers"][0]
            assert re.fullmatch(r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-py3", c["image"])
            assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
            assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 300
            decoder = next(x for x in pod_spec(named(docs, "Deployment", f"{RELEASE}-decoder"))["containers"])
            env = {e["name"]: e.get("value") for e in decoder["env"]}
            assert env["VOV_TRITON_URL"] == f"dns:///{RELEASE}-triton-headless.{NAMESPACE}.svc.cluster.local:8001"


@pytest.mark.parametrize("profile", PROFILES)
def test_only_readiness_follows_the_services_health(profile):
    """Health turns NOT_SERVING while a pod drains or its Triton is down: that must take the pod out
    of the Service (readiness), never restart it (liveness) and cut its streams. With TLS, readiness
    still asks gRPC health (over TLS, with the pod's certificate under mutual TLS), never a TCP check."""
    tls = (yaml.safe_load(PROFILES[profile].read_text()) if PROFILES[profile] else {}).get("tls", {})
    for doc in of_kind(render(profile), "Deployment"):
        for c in pod_spec(doc)["containers"]:
            if not vov_service_of(c):
                continue
            assert "grpc" not in c["livenessProbe"] and "grpc" not in c["startupProbe"]
            ready = c["readinessProbe"]
            assert "tcpSocket" not in ready
            if not tls.get("enabled"):
                assert ready["grpc"]["port"] == next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
                continue
            command = ready["exec"]["command"]
            assert command[:2] == ["python", "/opt/vov/probe/grpc-health.py"] and "--ca=/etc/vov/tls/ca.crt" in command
            assert ("--cert=/etc/vov/tls/tls.crt" in command) == bool(tls.get("clientCASecretName"))
            assert any(m["mountPath"] == "/opt/vov/probe" for m in c["volumeMounts"])


def test_cert_manager_certificates_cover_every_tls_secret_the_pods_mount():
    docs = render("keda-tls")
    certificates = {c["spec"]["secretName"]: c["spec"] for c in of_kind(docs, "Certificate")}
    mounted = {v["secret"]["secretName"] for d in workloads(docs) for v in pod_spec(d).get("volumes", []) if "secret" in v}
    assert mounted - {"vov-clients-ca"} == set(certificates)  # the clients' CA is theirs, not the chart's
    services = certificates["vov-services-tls"]
    for name in (f"{RELEASE}-encoder.{NAMESPACE}.svc", f"{RELEASE}-decoder.{NAMESPACE}.svc",
                 f"{RELEASE}-decoder-headless.{NAMESPACE}.svc"):
        assert name in services["dnsNames"]
    assert {"server auth", "client auth"} <= set(services["usages"])  # the probe presents it under mutual TLS
    assert f"{RELEASE}-triton.{NAMESPACE}.svc" in certificates["vov-triton-tls"]["dnsNames"]
    assert f"{RELEASE}-triton-headless.{NAMESPACE}.svc.cluster.local" in certificates["vov-triton-tls"]["dnsNames"]
    assert certificates[f"{RELEASE}-triton-client-tls"]["usages"][-1] == "client auth"
    for spec in certificates.values():
        assert spec["issuerRef"]["name"] == "vov-ca" and spec["privateKey"]["rotationPolicy"] == "Always"
    # renewals reach the pods: whole Secret volumes (never subPath mounts, which do not update)
    for d in workloads(docs):
        for c in [*pod_spec(d).get("initContainers", []), *pod_spec(d)["containers"]]:
            assert all("subPath" not in m for m in c.get("volumeMounts", [])), c["name"]
    # decoder-to-Triton mutual TLS is wired on both ends
    triton = pod_spec(workload(docs, f"{RELEASE}-triton"))["containers"][0]["args"]
    assert "--grpc-use-ssl-mutual=true" in triton and "--grpc-root-cert=/etc/triton/tls/ca.crt" in triton
    decoder = {e["name"]: e.get("value") for e in pod_spec(workload(docs, f"{RELEASE}-decoder"))["containers"][0]["env"]}
    assert decoder["VOV_TRITON_TLS_CERT"] == "/etc/vov/triton-client/tls.crt" and "VOV_TRITON_TLS_CA" in decoder


@pytest.mark.parametrize("profile", PROFILES)
def test_thread_pools_follow_the_containers_cpu_limit(profile):
    """torch and ONNX Runtime would size their pools from the node's cores: the chart gives each
    service its own CPU limit (whole cores) unless a count is set."""
    for doc in of_kind(render(profile), "Deployment"):
        for c in pod_spec(doc)["containers"]:
            if not vov_service_of(c):
                continue
            env = {e["name"]: e for e in c["env"]}
            for name in ("VOV_TORCH_THREADS", "VOV_ORT_THREADS"):
                if name in env:
                    ref = env[name]["valueFrom"]["resourceFieldRef"]
                    assert ref == {"containerName": c["name"], "resource": "limits.cpu", "divisor": "1"}
    docs = render(profile, "decoder.torchThreads=3")
    (decoder,) = pod_spec(named(docs, "Deployment", f"{RELEASE}-decoder"))["containers"]
    assert {e["name"]: e.get("value") for e in decoder["env"]}["VOV_TORCH_THREADS"] == "3"
