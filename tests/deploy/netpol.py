"""Kubernetes NetworkPolicy semantics, enough to ask of rendered policies whether one flow is allowed.

A pod is an `Endpoint` with a namespace, labels and named container ports; an address outside the
cluster's pods (the hub, a node-local DNS cache) is an `Endpoint` with an IP only. A flow is allowed
when the source may send it (no policy selects the source for Egress, or one of its egress rules
matches the destination and port) and the destination may receive it (likewise for Ingress).
Pods are matched by selectors only and addresses by ipBlock only, as the API documents for pod IPs
being implementation-defined. Ports match by number or by the destination's port name, with TCP as
the default protocol; an absent ports list matches every port, an absent peer list every peer.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from deploy_helpers import matches


@dataclass(frozen=True)
class Endpoint:
    name: str
    namespace: str = ""
    labels: dict = field(default_factory=dict)
    namespace_labels: dict = field(default_factory=dict)
    ports: dict = field(default_factory=dict)  # port name -> number
    ip: str = ""

    @property
    def is_pod(self) -> bool:
        return not self.ip


def pod(name: str, namespace: str, labels: dict, ports: dict | None = None) -> Endpoint:
    return Endpoint(name, namespace, dict(labels), {"kubernetes.io/metadata.name": namespace}, ports or {})


def address(name: str, ip: str) -> Endpoint:
    return Endpoint(name, ip=ip)


def _peer_matches(peer: dict, policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if other.is_pod:
            return False
        ip = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and \
            not any(ip in ipaddress.ip_network(e) for e in block.get("except", []))
    if not other.is_pod:
        return False
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or matches(peer["podSelector"], other.labels)


def _port_matches(rule_ports: list | None, port: int, protocol: str, destination: Endpoint) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        wanted = p.get("port")
        if wanted is None or wanted == port or (isinstance(wanted, str) and destination.ports.get(wanted) == port):
            return True
    return False


def _selected(policy: dict, endpoint: Endpoint, direction: str) -> bool:
    spec = policy["spec"]
    types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))
    return endpoint.is_pod and direction in types and endpoint.namespace == policy["metadata"]["namespace"] \
        and matches(spec["podSelector"], endpoint.labels)


def _side_allows(policies: list[dict], me: Endpoint, other: Endpoint, port: int, protocol: str, direction: str,
                 destination: Endpoint) -> bool:
    mine = [p for p in policies if _selected(p, me, direction)]
    if not mine:
        return True
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in mine:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if peers is not None and not any(_peer_matches(peer, policy["metadata"]["namespace"], other) for peer in peers):
                continue
            if _port_matches(rule.get("ports"), port, protocol, destination):
                return True
    return False


def allowed(policies: list[dict], source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> bool:
    return _side_allows(policies, source, destination, port, protocol, "Egress", destination) and \
        _side_allows(policies, destination, source, port, protocol, "Ingress", destination)
