"""The PromQL behind the autoscaling and the alerts, checked and unit-tested by promtool.

The rules are the rendered PrometheusRule's groups; KEDA's query and prometheus-adapter's query
(its metricsQuery template filled in as the adapter does for two pods) are added as recording rules
so that promtool tests them on the same series (promtool/rules_test.yaml).
"""

from __future__ import annotations

import shutil

import yaml
from deploy_helpers import HERE, RELEASE, named, promtool, render, run


def write_rules(directory):
    gpu = render("gpu")
    rules = named(gpu, "PrometheusRule", RELEASE)["spec"]
    (directory / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    keda = named(render("keda-tls"), "ScaledObject", f"{RELEASE}-decoder")["spec"]["triggers"][0]["metadata"]["query"]
    adapter = yaml.safe_load(named(gpu, "ConfigMap", f"{RELEASE}-adapter-rules")["data"]["rules.yaml"])["rules"][0]
    series = adapter["seriesQuery"].split("{")[0]
    filled = (adapter["metricsQuery"].replace("<<.Series>>", series)
              .replace("<<.LabelMatchers>>", 'namespace="vov",pod=~"vov-decoder-a|vov-decoder-b"')
              .replace("<<.GroupBy>>", "pod"))
    queries = {"groups": [{"name": "queries", "rules": [{"record": "keda:decoder_streams", "expr": keda},
                                                         {"record": "adapter:decoder_streams", "expr": filled}]}]}
    (directory / "queries.yaml").write_text(yaml.safe_dump(queries, sort_keys=False))
    return len([r for g in rules["groups"] for r in g["rules"]])


def test_promtool_checks_the_rules(tmp_path):
    count = write_rules(tmp_path)
    result = run([promtool(), "check", "rules", str(tmp_path / "rules.yaml"), str(tmp_path / "queries.yaml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {count} rules found" in result.stdout + result.stderr


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
    changed = text.replace("keda:decoder_streams'\n            value: 8", "keda:decoder_streams'\n            value: 9")
    assert changed != text
    (tmp_path / "rules_test.yaml").write_text(changed)
    result = run([promtool(), "test", "rules", str(tmp_path / "rules_test.yaml")])
    assert result.returncode != 0
