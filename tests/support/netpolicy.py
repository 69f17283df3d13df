"""Who the NetworkPolicies of a set of manifests let connect to whom: Kubernetes' rules for
ingress and egress (a pod no policy of a direction selects is open that way; else a rule of one
that selects it must allow the peer and the port), for the checks of deploy/k8s
(tests/integration/test_k8s_manifests.py). Pods are (namespace, labels); a namespace's labels
are its `kubernetes.io/metadata.name`, as Kubernetes sets it.
"""

from __future__ import annotations

from typing import Any

Pod = tuple[str, dict[str, str]]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector's verdict on these labels (an empty selector selects everything)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    tests = {
        "In": lambda value, values: value in values,
        "NotIn": lambda value, values: value not in values,
        "Exists": lambda value, _: value is not None,
        "DoesNotExist": lambda value, _: value is None,
    }
    return all(
        tests[e["operator"]](labels.get(e["key"]), e.get("values", []))
        for e in selector.get("matchExpressions", [])
    )


def may_connect(docs: list[dict[str, Any]], src: Pod, dst: Pod, port: int) -> bool:
    """Whether the NetworkPolicies let a pod (namespace, labels) open `port` on another: both its
    egress and the other's ingress must allow it (no policy of a type: that direction is open)."""

    def allowed(direction: str, pod: Pod, peer: Pod) -> bool:
        policies = [
            p
            for p in docs
            if p["kind"] == "NetworkPolicy"
            if p["metadata"]["namespace"] == pod[0]
            and selects(p["spec"]["podSelector"], pod[1])
            and direction in p["spec"]["policyTypes"]
        ]
        if not policies:
            return True
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for policy in policies:
            for rule in policy["spec"].get(key, []):
                ports = [p["port"] for p in rule.get("ports", [])]
                if ports and port not in ports:
                    continue
                peers = rule.get(peers_key)
                if not peers or any(peer_matches(p, policy["metadata"]["namespace"], peer) for p in peers):
                    return True
        return False

    return allowed("Egress", src, dst) and allowed("Ingress", dst, src)


def peer_matches(peer: dict[str, Any], policy_namespace: str, pod: Pod) -> bool:
    """Whether a rule's peer names this pod: a podSelector alone means the policy's namespace."""
    if "ipBlock" in peer:
        return False  # our pods' addresses are private: outside every ipBlock these policies name
    namespace_ok = (
        selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": pod[0]})
        if "namespaceSelector" in peer
        else pod[0] == policy_namespace
    )
    return namespace_ok and selects(peer.get("podSelector", {}), pod[1])
