"""Planning a dual-stack lab: IPv6 addresses, routes and workloads beside the IPv4 ones; what it refuses."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest

from kubeplane.loader import load_cluster
from kubeplane.model.objects import Cluster, NodeAddress
from kubeplane.netns import names
from kubeplane.netns.demo_cluster import demo_cluster
from kubeplane.netns.etcfiles import render_pod_hosts
from kubeplane.netns.plan import LabPlanError, plan_lab
from kubeplane.netns.state import LabState, StateStore
from kubeplane.netns.workloads import echo_identity

EXAMPLE = Path(__file__).parents[2] / "examples" / "dual-stack"


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_cluster([EXAMPLE]).cluster


def _error(cluster: Cluster) -> str:
    with pytest.raises(LabPlanError) as caught:
        plan_lab("lab", cluster)
    return str(caught.value)


def test_nodes_get_an_ipv6_address_pod_cidr_and_gateway_beside_the_ipv4_ones(cluster: Cluster) -> None:
    plan = plan_lab("lab", cluster)
    assert [(n.ip, n.ip6, n.pod_cidr6, n.gateway_ip6) for n in plan.nodes] == [
        ("198.51.100.2", "2001:db8:100::2", "fd00:10:244:1::/64", "fd00:10:244:1::1"),
        ("198.51.100.3", "2001:db8:100::3", "fd00:10:244:2::/64", "fd00:10:244:2::1"),
    ]
    assert (plan.underlay_network6, plan.router_ip6, plan.external_ip6) == (
        "2001:db8:100::/64",
        "2001:db8:100::1",
        "2001:db8:113::10",
    )
    assert plan.dual_stack


def test_pods_carry_both_ips_and_their_workloads_listen_on_both(cluster: Cluster) -> None:
    plan = plan_lab("lab", cluster)
    for pod in plan.pods:
        source = next(p for p in cluster.pods if p.meta.name == pod.name)
        assert pod.ips == source.pod_ips
        assert pod.workload.pod_ip6 == pod.ip6 and pod.ip6 is not None
        assert ipaddress.ip_address(pod.ip6) in ipaddress.ip_network(str(plan.node(pod.node).pod_cidr6))


def test_ipv6_service_cidrs_and_load_balancer_ips_are_routed_in_a_dual_stack_lab(cluster: Cluster) -> None:
    plan = plan_lab("lab", cluster)
    assert plan.service_cidrs == ("10.96.0.0/12", "fd00:10:96::/108")
    assert plan.external_routes == ("192.0.2.10", "2001:db8:200::10")
    assert plan.dns_ip == "10.96.0.10"


def test_an_ipv4_only_cluster_plans_exactly_as_before() -> None:
    plan = plan_lab("lab", demo_cluster(nodes=2, pods_per_node=1))
    assert not plan.dual_stack and plan.external_ip6 is None and plan.underlay_network6 is None
    assert all(n.ip6 is None and n.pod_cidr6 is None and n.gateway_ip6 is None for n in plan.nodes)
    assert all(p.ip6 is None and p.workload.pod_ip6 is None and p.ips == (p.ip,) for p in plan.pods)


def test_ipv6_extras_are_dropped_from_a_lab_whose_nodes_have_no_ipv6_address() -> None:
    base = demo_cluster(nodes=1, pods_per_node=1)
    node = replace(
        base.nodes[0], addresses=(*base.nodes[0].addresses, NodeAddress("ExternalIP", "2001:db8::9"))
    )
    plan = plan_lab("lab", replace(base, nodes=(node,)))
    assert plan.nodes[0].external_ips == () and plan.service_cidrs == ("10.96.0.0/12",)


def test_host_network_pods_take_both_node_addresses(cluster: Cluster) -> None:
    pod = replace(cluster.pods[0], host_network=True)
    planned = plan_lab("lab", replace(cluster, pods=(pod,))).pods[0]
    assert planned.ips == ("198.51.100.2", "2001:db8:100::2")
    assert planned.netns == names.node_netns("lab", "node-a")


def test_ipv6_pod_ip_outside_the_node_pod_cidr_or_on_its_gateway_is_refused(cluster: Cluster) -> None:
    pod = cluster.pods[0]
    outside = replace(pod, pod_ips=(pod.pod_ips[0], "fd00:10:244:9::5"))
    assert "fd00:10:244:9::5 is outside node node-a's podCIDR fd00:10:244:1::/64" in _error(
        replace(cluster, pods=(outside,))
    )
    gateway = replace(pod, pod_ips=(pod.pod_ips[0], "fd00:10:244:1::1"))
    assert "fd00:10:244:1::1 is node node-a's pod gateway address" in _error(
        replace(cluster, pods=(gateway,))
    )


def test_duplicate_ipv6_pod_ips_are_refused(cluster: Cluster) -> None:
    first, second = cluster.pods[0], cluster.pods[1]
    twin = replace(second, pod_ips=(second.pod_ips[0], first.pod_ips[1]))
    assert f"{first.pod_ips[1]} is also Pod demo/{first.meta.name}'s IP" in _error(
        replace(cluster, pods=(first, twin))
    )


def test_ipv6_pod_cidr_without_an_ipv6_internal_ip_is_refused(cluster: Cluster) -> None:
    node = replace(cluster.nodes[0], addresses=(NodeAddress("InternalIP", "198.51.100.2"),))
    message = _error(replace(cluster, nodes=(node, cluster.nodes[1])))
    assert "Node node-a: status.addresses: no IPv6 InternalIP to route its IPv6 podCIDR" in message


def test_ipv6_pod_on_a_node_without_an_ipv6_pod_cidr_is_refused(cluster: Cluster) -> None:
    node = replace(cluster.nodes[0], pod_cidrs=cluster.nodes[0].pod_cidrs[:1])
    message = _error(replace(cluster, nodes=(node, cluster.nodes[1])))
    assert "spec.nodeName: node node-a has no IPv6 podCIDR" in message


def test_dual_stack_plan_survives_the_state_file(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(names, "STATE_ROOT", tmp_path)
    plan = plan_lab("lab", cluster)
    store = StateStore("lab")
    store.save(LabState("lab", plan.all_netnses, plan=plan))
    assert store.load().plan == plan


def test_hosts_file_has_one_line_per_pod_ip(cluster: Cluster) -> None:
    pod = plan_lab("lab", cluster).pods[0]
    lines = render_pod_hosts(pod, "cluster.local").splitlines()
    assert lines[-2:] == [f"{pod.ip}\t{pod.hostname}", f"{pod.ip6}\t{pod.hostname}"]


def test_echo_reports_the_pod_ip_of_the_family_the_client_came_in_on(cluster: Cluster) -> None:
    workload = plan_lab("lab", cluster).pods[0].workload
    over_v6 = echo_identity(workload, 8080, ("fd00:10:244:2::7", 40000))
    over_v4 = echo_identity(workload, 8080, ("10.244.2.7", 40000))
    assert (over_v6["podIP"], over_v6["client"]) == (workload.pod_ip6, "[fd00:10:244:2::7]:40000")
    assert (over_v4["podIP"], over_v4["client"]) == (workload.pod_ip, "10.244.2.7:40000")


def test_demo_cluster_dual_stack_mirrors_ipv4_host_numbers_in_ipv6() -> None:
    plan = plan_lab("lab", demo_cluster(nodes=2, pods_per_node=11, dual_stack=True))
    assert [(n.ip6, n.pod_cidr6) for n in plan.nodes] == [
        ("2001:db8:100::2", "fd00:10:244:1::/64"),
        ("2001:db8:100::3", "fd00:10:244:2::/64"),
    ]
    last = plan.pods[-1]
    assert (last.name, last.ip, last.ip6) == ("echo-2-10", "10.244.2.12", "fd00:10:244:2::c")
