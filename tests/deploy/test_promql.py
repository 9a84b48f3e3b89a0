"""The PromQL behind the autoscaling, the alerts and the dashboard, checked and unit-tested by promtool.

The rules are the rendered PrometheusRule's groups (the gpu profile, with a weights download and
cert-manager on, so that every alert renders); KEDA's queries (keda-tls), prometheus-adapter's
queries (their metricsQuery filled in as the adapter does for two pods) and every query of the
Grafana dashboard are added as recording rules, so that promtool parses all of them and unit-tests
them on the same series (promtool/rules_test.yaml). Every decode RPC of the proto is in every query
of the decoder's load.
"""

from __future__ import annotations

import json
import re
import shutil

import yaml
from deploy_helpers import HERE, RELEASE, ROOT, named, of_kind, promtool, render, run

ALERTING = ("gpu", "backbone=wan", "model.source=download", "model.download.hubId=Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            "tls.enabled=true", "tls.certManager.enabled=true", "tls.certManager.issuerRef.name=vov-ca")


def decode_rpcs() -> set[str]:
    """The Decoder RPCs that stream a decode: the server-streaming ones of proto/vov/v1/codec.proto."""
    proto = (ROOT / "proto" / "vov" / "v1" / "codec.proto").read_text()
    body = re.search(r"service Decoder \{(.*?)\n\}", proto, re.S).group(1)
    return set(re.findall(r"rpc (\w+)\([^)]*\) returns \(stream ", body))


def fill(rule: dict, pods: str) -> str:
    series = rule["seriesQuery"].split("{")[0]
    return (rule["metricsQuery"].replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", f'namespace="vov",pod=~"{pods}"').replace("<<.GroupBy>>", "pod"))


def dashboard_queries(docs) -> list[str]:
    (config,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == f"{RELEASE}-dashboard"]
    (text,) = config["data"].values()
    return [t["expr"] for panel in json.loads(text)["panels"] for t in panel["targets"]]


def write_rules(directory):
    docs = render(*ALERTING)
    rules = named(docs, "PrometheusRule", RELEASE)["spec"]
    (directory / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    keda = {d["metadata"]["name"].removeprefix(f"{RELEASE}-"): d["spec"]["triggers"][0]["metadata"]["query"]
            for d in of_kind(render("keda-tls"), "ScaledObject")}
    adapter = yaml.safe_load(named(docs, "ConfigMap", f"{RELEASE}-prometheus-adapter")["data"]["config.yaml"])["rules"]
    by_name = {r["name"]["as"]: r for r in adapter}
    queries = [{"record": "keda:decoder_streams", "expr": keda["decoder"]},
               {"record": "keda:triton_queue", "expr": keda["triton"]},
               {"record": "adapter:decoder_streams", "expr": fill(by_name["vov_decoder_streams_in_flight"], "vov-decoder-a|vov-decoder-b")},
               {"record": "adapter:triton_queue", "expr": fill(by_name["vov_triton_queue_seconds_per_request"], "vov-triton-0|vov-triton-1")}]
    queries += [{"record": f"dashboard:panel_{i}", "expr": q} for i, q in enumerate(dashboard_queries(docs))]
    (directory / "queries.yaml").write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": queries}]}, sort_keys=False))
    return len([r for g in rules["groups"] for r in g["rules"]]) + len(queries)


def test_every_decode_rpc_served_or_queued_is_in_every_load_query():
    rpcs = decode_rpcs()
    assert rpcs == {"Decompress", "Edit"}
    docs = render(*ALERTING)
    rules = named(docs, "PrometheusRule", RELEASE)["spec"]["groups"]
    load = [r["expr"] for g in rules for r in g["rules"] if "vov_grpc_server_in_flight" in r["expr"]]
    load += [d["spec"]["triggers"][0]["metadata"]["query"] for d in of_kind(render("keda-tls"), "ScaledObject")
             if "vov_grpc_server_in_flight" in d["spec"]["triggers"][0]["metadata"]["query"]]
    load += [r["expr"] for g in rules for r in g["rules"] if "vov_grpc_server_handled_total" in r["expr"]
             or "vov_grpc_server_handling_seconds" in r["expr"]]
    assert len(load) >= 6
    streams = [expr for expr in load if "vov_grpc_server_in_flight" in expr]
    assert streams and all("vov_grpc_server_queued" in expr for expr in streams), "calls waiting for a worker are load"
    for expr in load:
        methods = set()
        for matcher in re.findall(r'grpc_method(=~?)"([^"]*)"', expr):
            methods |= set(matcher[1].split("|"))
        assert rpcs <= methods, expr


def test_promtool_checks_every_rule_and_query(tmp_path):
    count = write_rules(tmp_path)
    result = run([promtool(), "check", "rules", str(tmp_path / "rules.yaml"), str(tmp_path / "queries.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).count("SUCCESS") == 2 and count > 30


def test_the_dashboard_reads_only_series_that_exist():
    """Each series a panel reads is recorded by the chart's rules, exported by the services, one of
    Triton's metrics, or one of kube-state-metrics'."""
    from vov_services import metrics

    docs = render(*ALERTING)
    recorded = {r["record"] for g in named(docs, "PrometheusRule", RELEASE)["spec"]["groups"] for r in g["rules"] if "record" in r}
    exported = {m.name for m in metrics.REGISTRY.collect()}
    exported |= {f"{n}{suffix}" for n in exported for suffix in ("_total", "_bytes", "_bucket")}
    triton = {"nv_inference_request_success", "nv_inference_queue_duration_us", "nv_gpu_utilization",
              "nv_gpu_memory_used_bytes"}  # the first two are seen from a real Triton (test_triton_drain)
    kube_state = {"kube_deployment_status_replicas", "kube_statefulset_status_replicas_ready"}
    for expr in dashboard_queries(docs):
        for name in re.findall(r"\b([a-z_:]+)\{", expr):
            assert name in recorded | exported | triton | kube_state, (name, expr)


def test_promtool_unit_tests_pass(tmp_path):
    write_rules(tmp_path)
    shutil.copy(HERE / "promtool" / "rules_test.yaml", tmp_path / "rules_test.yaml")
    result = run([promtool(), "test", "rules", str(tmp_path / "rules_test.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_a_wrong_expectation_fails_the_unit_tests(tmp_path):
    """The unit tests can fail: the same file with one expected value changed."""
    write_rules(tmp_path)
    text = (HERE / "promtool" / "rules_test.yaml").read_text()
    changed = text.replace("keda:decoder_streams'\n            value: 10", "keda:decoder_streams'\n            value: 8")
    assert changed != text
    (tmp_path / "rules_test.yaml").write_text(changed)
    result = run([promtool(), "test", "rules", str(tmp_path / "rules_test.yaml")])
    assert result.returncode != 0
