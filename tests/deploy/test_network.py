"""The NetworkPolicies as a flow matrix: every flow the services need is allowed, and nothing else.

The pods of a rendered release (from its workloads' labels and ports) and the world around them (a
client, a pod that is no client, Prometheus, the DNS servers of three kinds of cluster, the hub, a
private address in the cluster, the cloud's metadata service) are endpoints; every (source,
destination, port) between them with a vov pod at one end is asked of the policies (netpol.py),
and the allowed set must be exactly the expected one.
"""

from __future__ import annotations

import json

import pytest
from deploy_helpers import RELEASE, of_kind, pod_labels, pod_spec, render, workloads
from netpol import Endpoint, address, allowed, pod

NS = "vov"
CLIENT = pod("client", "apps", {"vov.io/client": "true"})
STRANGER = pod("stranger", "apps", {"app": "other"})
# a pod of a namespace labelled as the keda-tls profile's callers
TEAM_POD = Endpoint("team-pod", "team", {"app": "caller"}, {"kubernetes.io/metadata.name": "team", "vov.io/clients": "true"})
PROMETHEUS = pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
KUBE_DNS = pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, {"dns": 53, "dns-tcp": 53})
NODE_LOCAL_DNS = address("node-local-dns", "169.254.20.10")
OPENSHIFT_DNS = pod("openshift-dns", "openshift-dns", {"dns.operator.openshift.io/daemonset-dns": "default"}, {"dns": 5353})
HUB = address("hub", "18.160.10.20")
PRIVATE = address("in-cluster-address", "10.96.0.10")
METADATA = address("cloud-metadata", "169.254.169.254")
WORLD = [CLIENT, STRANGER, TEAM_POD, PROMETHEUS, KUBE_DNS, NODE_LOCAL_DNS, OPENSHIFT_DNS, HUB, PRIVATE, METADATA]
PORTS = [(53, "UDP"), (53, "TCP"), (5353, "UDP"), (443, "TCP"), (80, "TCP"), (6443, "TCP")]

KUBE_DNS_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                 "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
# the examples values.yaml gives for each kind of cluster
DNS_VARIANTS = {
    "kube-dns": ((), [KUBE_DNS], 53),
    "node-local": ((f'json:networkPolicy.dns.to=[{{"ipBlock": {{"cidr": "169.254.20.10/32"}}}}, {json.dumps(KUBE_DNS_PEER)}]',),
                   [NODE_LOCAL_DNS, KUBE_DNS], 53),
    "openshift": (('json:networkPolicy.dns.to=[{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": '
                   '"openshift-dns"}}, "podSelector": {"matchLabels": {"dns.operator.openshift.io/daemonset-dns": "default"}}}]',
                   'json:networkPolicy.dns.ports=[{"port": 5353, "protocol": "UDP"}, {"port": 5353, "protocol": "TCP"}]'),
                  [OPENSHIFT_DNS], 5353),
}
DOWNLOAD = ("backbone=wan", "model.source=download", "model.download.hubId=Wan-AI/Wan2.1-T2V-1.3B-Diffusers")


def release_pods(docs: list[dict]) -> dict:
    pods = {}
    for doc in workloads(docs):
        ports = {p["name"]: p["containerPort"] for c in pod_spec(doc)["containers"] for p in c.get("ports", [])}
        component = pod_labels(doc)["app.kubernetes.io/component"]
        pods[component] = pod(component, NS, pod_labels(doc), ports)
    return pods


def allowed_flows(docs: list[dict]) -> set[tuple[str, str, int, str]]:
    policies = of_kind(docs, "NetworkPolicy")
    ours = list(release_pods(docs).values())
    flows = set()
    for source in ours + WORLD:
        for destination in ours + WORLD:
            if source is destination or (source not in ours and destination not in ours):
                continue
            ports = sorted(set(PORTS) | {(n, "TCP") for n in destination.ports.values()})
            for port, protocol in ports:
                if allowed(policies, source, destination, port, protocol):
                    flows.add((source.name, destination.name, port, protocol))
    return flows


def expected_flows(docs: list[dict], dns_servers, dns_port: int, clients=(CLIENT,)) -> set[tuple[str, str, int, str]]:
    pods = release_pods(docs)
    flows = set()
    for component in ("encoder", "decoder"):
        if component in pods:
            grpc = pods[component].ports["grpc"]
            flows |= {(c.name, component, grpc, "TCP") for c in (*clients, pods["test"])}
    for component in ("encoder", "decoder", "triton"):
        if component in pods and "metrics" in pods[component].ports:
            flows.add(("prometheus", component, pods[component].ports["metrics"], "TCP"))
    if "triton" in pods:
        flows.add(("decoder", "triton", pods["triton"].ports["grpc"], "TCP"))
    for component in pods:
        if component not in ("triton", "idle-first"):  # Triton resolves and reaches nothing
            flows |= {(component, server.name, dns_port, protocol) for server in dns_servers for protocol in ("UDP", "TCP")}
    if "weights" in pods:
        flows.add(("weights", "hub", 443, "TCP"))
    if "idle-first" in pods:  # the API server (a private address here), and the decoders' stream counts
        flows |= {("idle-first", PRIVATE.name, port, "TCP") for port in (443, 6443)}
        flows.add(("idle-first", "decoder", pods["decoder"].ports["metrics"], "TCP"))
    return flows


@pytest.mark.parametrize("variant", DNS_VARIANTS)
def test_every_needed_flow_is_allowed_and_nothing_else(variant):
    sets, servers, port = DNS_VARIANTS[variant]
    docs = render("default", *DOWNLOAD, *sets)
    assert {"encoder", "decoder", "triton", "test", "weights", "idle-first"} <= set(release_pods(docs))
    assert allowed_flows(docs) == expected_flows(docs, servers, port)


@pytest.mark.parametrize("profile, clients", [("cpu-demo", (CLIENT,)), ("gpu", (CLIENT,)), ("keda-tls", (TEAM_POD,))])
def test_the_profiles_flows(profile, clients):
    docs = render(profile)
    assert allowed_flows(docs) == expected_flows(docs, [KUBE_DNS], 53, clients)


def test_the_matrix_would_see_an_open_egress():
    """The check can fail: a decoder policy with an egress rule open to everywhere."""
    docs = render("default")
    expected = expected_flows(docs, [KUBE_DNS], 53)
    policy = next(p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == f"{RELEASE}-decoder")
    policy["spec"]["egress"].append({"ports": [{"port": 443, "protocol": "TCP"}]})
    extra = allowed_flows(docs) - expected
    assert ("decoder", "hub", 443, "TCP") in extra and ("decoder", "cloud-metadata", 443, "TCP") in extra
