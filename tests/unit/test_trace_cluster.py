"""Explain end to end with the real renderer: Cluster in, plan_node + render_iptables, walk, verdicts out.

Two nodes (a: 198.51.100.2, pods 10.244.1.0/24; b: 198.51.100.3, pods 10.244.2.0/24), cluster CIDR
10.244.0.0/16. shop/web is a NodePort (30080) with one endpoint per node; shop/loc a NodePort (30081) with
externalTrafficPolicy=Local whose only endpoint is on b; shop/empty has no endpoints; shop/lb a LoadBalancer
(192.0.2.80) admitting 203.0.113.0/28 only. Every trace is on node a.
"""

from __future__ import annotations

import pytest

from kubeplane.model.objects import (
    SERVICE_NAME_LABEL,
    Cluster,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    KubeProxyConfiguration,
    LoadBalancerIngress,
    Node,
    NodeAddress,
    ObjectMeta,
    ObjectReference,
    Pod,
    Service,
    ServicePort,
)
from kubeplane.trace.cluster_trace import explain_in_cluster
from kubeplane.trace.explain import ExplainOptions
from kubeplane.trace.packet import Packet, UnknownNode
from kubeplane.trace.result import Explanation

NODE_A = "198.51.100.2"
WEB_1, WEB_2, CLIENT = "10.244.1.7", "10.244.2.9", "10.244.1.5"


def node(name: str, ip: str, cidr: str) -> Node:
    return Node(meta=ObjectMeta(name=name), pod_cidrs=(cidr,), addresses=(NodeAddress("InternalIP", ip),))


def pod(name: str, node_name: str, ip: str, app: str) -> Pod:
    return Pod(
        meta=ObjectMeta(name=name, namespace="shop", labels={"app": app}), node_name=node_name, pod_ips=(ip,)
    )


def service(name: str, **spec: object) -> Service:
    node_port = spec.pop("node_port", None)
    port = ServicePort(80, name="http", target_port=8080, node_port=node_port)  # type: ignore[arg-type]
    return Service(meta=ObjectMeta(name=name, namespace="shop"), ports=(port,), **spec)  # type: ignore[arg-type]


def endpoints(service_name: str, *members: tuple[str, str, str]) -> EndpointSlice:
    return EndpointSlice(
        meta=ObjectMeta(
            name=f"{service_name}-1", namespace="shop", labels={SERVICE_NAME_LABEL: service_name}
        ),
        endpoints=tuple(
            Endpoint(addresses=(ip,), node_name=n, target_ref=ObjectReference("Pod", p, "shop"))
            for ip, n, p in members
        ),
        ports=(EndpointPort(port=8080, name="http"),),
    )


WEB_ENDPOINTS = ((WEB_1, "a", "web-1"), (WEB_2, "b", "web-2"))
CLUSTER = Cluster(
    services=(
        service(
            "web", type="NodePort", selector={"app": "web"}, cluster_ips=("10.96.12.40",), node_port=30080
        ),
        service(
            "loc",
            type="NodePort",
            selector={"app": "web2"},
            cluster_ips=("10.96.12.41",),
            node_port=30081,
            external_traffic_policy="Local",
        ),
        service("empty", selector={"app": "none"}, cluster_ips=("10.96.12.42",)),
        service(
            "lb",
            type="LoadBalancer",
            selector={"app": "web"},
            cluster_ips=("10.96.12.43",),
            node_port=30083,
            load_balancer_ingress=(LoadBalancerIngress(ip="192.0.2.80"),),
            load_balancer_source_ranges=("203.0.113.0/28",),
        ),
    ),
    endpoint_slices=(
        endpoints("web", *WEB_ENDPOINTS),
        endpoints("loc", (WEB_2, "b", "web-2")),
        endpoints("lb", *WEB_ENDPOINTS),
    ),
    pods=(
        pod("client", "a", CLIENT, "client"),
        pod("web-1", "a", WEB_1, "web"),
        pod("web-2", "b", WEB_2, "web"),
    ),
    nodes=(node("a", NODE_A, "10.244.1.0/24"), node("b", "198.51.100.3", "10.244.2.0/24")),
    proxy_config=KubeProxyConfiguration(cluster_cidr="10.244.0.0/16"),
)


def trace(src: str, dst: str, dport: int, **options: object) -> Explanation:
    return explain_in_cluster(CLUSTER, "a", Packet(src, 40000, dst, dport), ExplainOptions(**options))  # type: ignore[arg-type]


def test_cluster_ip_from_a_pod_reaches_both_endpoints_without_masquerade() -> None:
    document = trace(CLIENT, "10.96.12.40", 80).to_json()
    assert document["source"] == {"ip": CLIENT, "kind": "pod"}
    assert document["verdict"] == "DNAT"
    assert document["endpoints"] == [
        {"endpoint": f"{WEB_1}:8080", "probability": 0.5},
        {"endpoint": f"{WEB_2}:8080", "probability": 0.5},
    ]
    assert document["masquerade"] is False


def test_node_port_from_an_external_client_is_masqueraded_to_the_outgoing_interface_address() -> None:
    explanation = trace("203.0.113.10", NODE_A, 30080)
    assert explanation.source.kind == "external"
    assert explanation.verdict == "DNAT"
    assert explanation.masquerade is True
    sources = {a.dnat: a.packet.src for a in explanation.alternatives}
    assert sources == {(WEB_1, 8080): "10.244.1.1", (WEB_2, 8080): NODE_A}


def test_hairpin_to_the_sending_pod_is_masqueraded_to_the_pod_gateway() -> None:
    explanation = trace(WEB_1, "10.96.12.40", 80)
    hairpin = [a for a in explanation.alternatives if a.dnat == (WEB_1, 8080)]
    assert len(hairpin) == 1 and hairpin[0].packet.src == "10.244.1.1"
    other = [a for a in explanation.alternatives if a.dnat == (WEB_2, 8080)]
    assert other[0].masqueraded is False


def test_external_traffic_policy_local_drops_on_a_node_without_local_endpoints() -> None:
    explanation = trace("203.0.113.10", NODE_A, 30081)
    assert explanation.verdict == "DROP"
    assert explanation.primary.ended_by is not None
    assert explanation.primary.ended_by.comment == "shop/loc:http has no local endpoints"


def test_external_traffic_policy_local_still_serves_pods_through_the_cluster_endpoints() -> None:
    assert [e.endpoint for e in trace(CLIENT, NODE_A, 30081).endpoints] == [f"{WEB_2}:8080"]


def test_service_without_endpoints_is_rejected() -> None:
    explanation = trace(CLIENT, "10.96.12.42", 80)
    assert explanation.verdict == "REJECT"
    assert explanation.primary.ended_by is not None
    assert explanation.primary.ended_by.comment == "shop/empty:http has no endpoints"


def test_load_balancer_source_range_drops_an_unlisted_client() -> None:
    explanation = trace("203.0.113.20", "192.0.2.80", 80)
    assert explanation.verdict == "DROP"
    assert (
        explanation.primary.ended_by is not None
        and explanation.primary.ended_by.chain == "KUBE-PROXY-FIREWALL"
    )


def test_load_balancer_source_range_admits_a_listed_client() -> None:
    assert trace("203.0.113.10", "192.0.2.80", 80).verdict == "DNAT"


def test_node_itself_reaching_a_cluster_ip_starts_at_output_and_is_masqueraded() -> None:
    explanation = trace(NODE_A, "10.96.12.40", 80)
    assert explanation.source.kind == "node"
    assert explanation.primary.steps[0].hook == "OUTPUT"
    assert explanation.masquerade is True


def test_unknown_node_is_refused_with_the_known_ones() -> None:
    with pytest.raises(UnknownNode, match="nodes: a, b"):
        explain_in_cluster(CLUSTER, "zz", Packet(CLIENT, 40000, "10.96.12.40", 80))


# --- IPVS mode: the IPVS backend's virtual servers, ipsets and iptables rules ---------------------------


def trace_ipvs(src: str, dst: str, dport: int, **options: object) -> Explanation:
    packet = Packet(src, 40000, dst, dport)
    return explain_in_cluster(CLUSTER, "a", packet, ExplainOptions(**options), mode="ipvs")  # type: ignore[arg-type]


def test_ipvs_cluster_ip_is_scheduled_over_every_real_server() -> None:
    document = trace_ipvs(CLIENT, "10.96.12.40", 80).to_json()
    assert document["mode"] == "ipvs" and document["verdict"] == "DNAT"
    assert [(e["endpoint"], e["probability"]) for e in document["endpoints"]] == [
        (f"{WEB_1}:8080", 0.5),
        (f"{WEB_2}:8080", 0.5),
    ]
    ipvs = [p for p in document["path"] if p["table"] == "ipvs"]
    assert [(p["hook"], p["chain"], p["comment"]) for p in ipvs] == [
        ("INPUT", "TCP 10.96.12.40:80", "shop/web:http")
    ]
    assert document["masquerade"] is False


def test_ipvs_node_port_from_outside_is_marked_by_the_bitmap_set_and_masqueraded() -> None:
    explanation = trace_ipvs("203.0.113.10", NODE_A, 30080)
    assert explanation.verdict == "DNAT" and explanation.masquerade is True
    marks = [s for s in explanation.primary.steps if s.matched and s.chain == "KUBE-NODE-PORT"]
    assert marks and marks[0].comment == "Kubernetes nodeport TCP port for masquerade purpose"


def test_ipvs_virtual_server_without_real_servers_rejects() -> None:
    explanation = trace_ipvs(CLIENT, "10.96.12.42", 80)
    assert explanation.verdict == "REJECT"
    assert explanation.primary.ended_by is not None and explanation.primary.ended_by.table == "ipvs"


def test_ipvs_unused_port_on_a_service_address_is_rejected_by_the_ipvs_filter() -> None:
    explanation = trace_ipvs(CLIENT, "10.96.12.40", 81)
    assert explanation.verdict == "REJECT"
    assert (
        explanation.primary.ended_by is not None and explanation.primary.ended_by.chain == "KUBE-IPVS-FILTER"
    )


def test_ipvs_load_balancer_source_ranges_drop_and_admit_by_cidr_set() -> None:
    assert trace_ipvs("203.0.113.20", "192.0.2.80", 80).verdict == "DROP"
    assert trace_ipvs("203.0.113.10", "192.0.2.80", 80).verdict == "DNAT"


def test_ipvs_established_packet_keeps_its_real_server() -> None:
    explanation = trace_ipvs(CLIENT, "10.96.12.40", 80, ct_state="ESTABLISHED")
    actions = [s.action for a in explanation.alternatives for s in a.steps if s.table == "ipvs"]
    assert len(actions) == 2 and all("IPVS entry of this ESTABLISHED connection" in a for a in actions)
