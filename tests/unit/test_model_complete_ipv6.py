"""Dual-stack defaults of node and pod completion: IPv6 podCIDRs, InternalIPs and pod addresses."""

from __future__ import annotations

import ipaddress
import textwrap

from kubeplane.model.complete import build_cluster
from kubeplane.model.objects import Cluster
from kubeplane.model.parse import parse_text

PROXY = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"


def _cluster(*docs: str) -> Cluster:
    text = "\n---\n".join(textwrap.dedent(d) for d in docs)
    return build_cluster(parse_text(text, "test.yaml").objects)


def _node(name: str, body: str = "") -> str:
    return f"apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n{body}"


def _pod(name: str, node: str) -> str:
    spec = f"spec: {{nodeName: {node}, containers: [{{name: c}}]}}"
    return f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\n{spec}"


def test_ipv6_cluster_cidr_gives_each_node_a_slash_64_and_an_ipv6_internal_ip() -> None:
    cluster = _cluster(PROXY + "clusterCIDR: 10.244.0.0/16,fd00:10:244::/56", _node("b"), _node("a"))
    assert [(n.meta.name, n.internal_ips, n.pod_cidrs) for n in cluster.nodes] == [
        ("a", ("198.51.100.2", "2001:db8:100::2"), ("10.244.1.0/24", "fd00:10:244:1::/64")),
        ("b", ("198.51.100.3", "2001:db8:100::3"), ("10.244.2.0/24", "fd00:10:244:2::/64")),
    ]


def test_ipv4_only_cluster_gets_no_ipv6_defaults() -> None:
    cluster = _cluster(PROXY + "clusterCIDR: 10.244.0.0/16", _node("a"), _pod("p", "a"))
    assert cluster.nodes[0].internal_ips == ("198.51.100.2",)
    assert cluster.nodes[0].pod_cidrs == ("10.244.1.0/24",)
    assert len(cluster.pods[0].pod_ips) == 1


def test_a_node_declaring_an_ipv6_pod_cidr_makes_the_others_dual_stack_from_the_default_range() -> None:
    given = _node("a", "spec: {podCIDRs: [10.244.7.0/24, 'fd00:10:244:7::/64']}\n")
    cluster = _cluster(given, _node("b"))
    assert [n.pod_cidrs for n in cluster.nodes] == [
        ("10.244.7.0/24", "fd00:10:244:7::/64"),
        ("10.244.2.0/24", "fd00:10:244:2::/64"),
    ]
    assert [n.internal_ips[1] for n in cluster.nodes] == ["2001:db8:100::2", "2001:db8:100::3"]


def test_given_ipv6_values_are_kept_and_skipped_by_the_defaults() -> None:
    a = _node(
        "a",
        "spec: {podCIDRs: [10.244.1.0/24, 'fd00:10:244:2::/64']}\n"
        "status: {addresses: [{type: InternalIP, address: 198.51.100.2}, "
        "{type: InternalIP, address: '2001:db8:100::3'}, {type: Hostname, address: a}]}\n",
    )
    cluster = _cluster(PROXY + "clusterCIDR: 10.244.0.0/16,fd00:10:244::/56", a, _node("b"))
    node_a, node_b = cluster.nodes
    assert [(x.type, x.address) for x in node_a.addresses] == [
        ("InternalIP", "198.51.100.2"),
        ("InternalIP", "2001:db8:100::3"),
        ("Hostname", "a"),
    ]
    assert node_b.internal_ips == ("198.51.100.3", "2001:db8:100::4")
    assert node_b.pod_cidrs == ("10.244.2.0/24", "fd00:10:244:3::/64")


def test_pods_get_a_short_ipv6_address_from_their_node_pod_cidr() -> None:
    pods = [_pod(f"p{i}", "a") for i in range(30)]
    cluster = _cluster(PROXY + "clusterCIDR: 10.244.0.0/16,fd00:10:244::/56", _node("a"), *pods)
    addresses = [ipaddress.ip_address(p.pod_ips[1]) for p in cluster.pods]
    assert len(set(addresses)) == 30
    first = ipaddress.ip_network("fd00:10:244:1::/120")
    assert all(a in first and int(a) - int(first.network_address) >= 2 for a in addresses)
    assert all(ipaddress.ip_address(p.pod_ips[0]).version == 4 for p in cluster.pods)


def test_host_network_pods_take_both_node_addresses() -> None:
    host = "apiVersion: v1\nkind: Pod\nmetadata: {name: agent}\n"
    host += "spec: {nodeName: a, hostNetwork: true, containers: [{name: c}]}"
    cluster = _cluster(PROXY + "clusterCIDR: 10.244.0.0/16,fd00:10:244::/56", _node("a"), host)
    assert cluster.pods[0].pod_ips == ("198.51.100.2", "2001:db8:100::2")


def test_dual_stack_nodes_give_the_default_service_cidr_an_ipv6_range_for_prefer_dual_stack() -> None:
    service = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
        "spec: {ipFamilyPolicy: PreferDualStack, ports: [{port: 80}]}"
    )
    cluster = _cluster(PROXY + "clusterCIDR: 10.244.0.0/16,fd00:10:244::/56", _node("a"), service)
    assert cluster.service_cidrs[0].cidrs == ("10.96.0.0/12", "fd00:10:96::/108")
    (web,) = (s for s in cluster.services if s.meta.name == "web")
    assert [ipaddress.ip_address(ip).version for ip in web.cluster_ips] == [4, 6]
    assert ipaddress.ip_address(web.cluster_ips[1]) in ipaddress.ip_network("fd00:10:96::/108")


def test_ipv4_only_nodes_keep_the_single_family_default_service_cidr() -> None:
    cluster = _cluster(_node("a"))
    assert cluster.service_cidrs[0].cidrs == ("10.96.0.0/12",)
