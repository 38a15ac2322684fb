"""Planning a lab from a Cluster: addresses, routes to publish, workloads, and one-line errors."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubeplane.model.objects import (
    Cluster,
    KubeplaneConfiguration,
    LoadBalancerIngress,
    NodeAddress,
    ObjectMeta,
    Service,
    ServiceCIDR,
    Source,
)
from kubeplane.netns.demo_cluster import demo_cluster, demo_node, demo_pod
from kubeplane.netns.plan import LabPlanError, plan_lab


def test_nodes_get_their_internal_ip_the_underlay_and_a_pod_gateway() -> None:
    plan = plan_lab("lab", demo_cluster(nodes=3, pods_per_node=1))
    assert [(n.netns, n.ip, n.pod_cidr, n.gateway_ip) for n in plan.nodes] == [
        ("kp-lab-node-node-1", "198.51.100.2", "10.244.1.0/24", "10.244.1.1"),
        ("kp-lab-node-node-2", "198.51.100.3", "10.244.2.0/24", "10.244.2.1"),
        ("kp-lab-node-node-3", "198.51.100.4", "10.244.3.0/24", "10.244.3.1"),
    ]
    assert (plan.underlay_network, plan.router_ip) == ("198.51.100.0/24", "198.51.100.1")
    assert plan.all_netnses[:2] == ("kp-lab-underlay", "kp-lab-external")
    assert len(plan.all_netnses) == 2 + 3 + 3


def test_router_takes_the_first_address_no_node_uses() -> None:
    first = replace(demo_node(1), addresses=(NodeAddress("InternalIP", "198.51.100.1"),))
    plan = plan_lab("lab", Cluster(nodes=(first, demo_node(2))))
    assert plan.router_ip == "198.51.100.2"  # node-1 took .1, node-2 is at .3


def test_underlay_widens_to_hold_nodes_in_different_slash_24s() -> None:
    far = replace(demo_node(2), addresses=(NodeAddress("InternalIP", "198.51.101.7"),))
    plan = plan_lab("lab", Cluster(nodes=(demo_node(1), far)))
    assert plan.underlay_network == "198.51.100.0/23"


def test_service_cidr_dns_ip_and_domain_come_from_the_cluster() -> None:
    cluster = replace(
        demo_cluster(),
        service_cidrs=(ServiceCIDR(ObjectMeta(name="kubernetes"), ("10.100.0.0/16", "fd00::/108")),),
        kubeplane_config=KubeplaneConfiguration(cluster_domain="corp.local"),
    )
    plan = plan_lab("lab", cluster)
    assert (plan.service_cidrs, plan.dns_ip, plan.cluster_domain) == (
        ("10.100.0.0/16",),
        "10.100.0.10",
        "corp.local",
    )
    assert plan_lab("lab", demo_cluster()).service_cidrs == ("10.96.0.0/12",)


def test_load_balancer_and_external_ips_are_routed_toward_the_first_node() -> None:
    svc = Service(
        meta=ObjectMeta(name="web", namespace="shop"),
        type="LoadBalancer",
        external_ips=("192.0.2.50",),
        load_balancer_ingress=(
            LoadBalancerIngress(ip="192.0.2.80"),
            LoadBalancerIngress(hostname="lb.example"),
        ),
    )
    plan = plan_lab("lab", replace(demo_cluster(), services=(svc,)))
    assert plan.external_routes == ("192.0.2.50", "192.0.2.80")


def test_node_external_ips_are_carried_into_the_plan() -> None:
    node = replace(demo_node(1), addresses=(*demo_node(1).addresses, NodeAddress("ExternalIP", "192.0.2.9")))
    assert plan_lab("lab", Cluster(nodes=(node,))).nodes[0].external_ips == ("192.0.2.9",)


def test_workload_rules_default_echo_tcp_echo_none_and_command() -> None:
    pods = (
        demo_pod("plain", 1, 2),
        demo_pod("raw", 1, 3, annotations={"kubeplane.dev/workload": "tcp-echo"}),
        demo_pod("quiet", 1, 4, annotations={"kubeplane.dev/workload": "none"}),
        demo_pod("listed", 1, 5, annotations={"kubeplane.dev/command": '["nc", "-l", "-k", "9000"]'}),
        demo_pod("split", 1, 6, annotations={"kubeplane.dev/command": "sh -c 'echo hi; sleep 1'"}),
    )
    plan = plan_lab("lab", Cluster(nodes=(demo_node(1),), pods=pods))
    workloads = {p.name: (p.workload.kind, p.workload.command) for p in plan.pods}
    assert workloads == {
        "plain": ("echo", ()),
        "raw": ("tcp-echo", ()),
        "quiet": ("none", ()),
        "listed": ("command", ("nc", "-l", "-k", "9000")),
        "split": ("command", ("sh", "-c", "echo hi; sleep 1")),
    }
    assert [(p.port, p.protocol) for p in plan.pods[0].workload.ports] == [(8080, "TCP"), (5353, "UDP")]


def test_finished_and_unscheduled_pods_get_no_namespace() -> None:
    done = replace(demo_pod("done", 1, 2), phase="Succeeded")
    unscheduled = replace(demo_pod("pending", 1, 3), node_name="")
    plan = plan_lab("lab", Cluster(nodes=(demo_node(1),), pods=(done, unscheduled, demo_pod("up", 1, 4))))
    assert [p.name for p in plan.pods] == ["up"]


def _error(cluster: Cluster) -> str:
    with pytest.raises(LabPlanError) as caught:
        plan_lab("lab", cluster)
    return str(caught.value)


def test_errors_name_the_file_object_and_field() -> None:
    pod = demo_pod("web", 1, 2, namespace="shop")
    pod = replace(pod, meta=replace(pod.meta, source=Source("shop.yaml", 3)), node_name="ghost")
    assert _error(Cluster(nodes=(demo_node(1),), pods=(pod,))) == (
        "shop.yaml#3: Pod shop/web: spec.nodeName: no Node named 'ghost'"
    )


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        (
            replace(demo_pod("web", 1, 2), pod_ips=("10.244.9.2",)),
            "outside node node-1's podCIDR 10.244.1.0/24",
        ),
        (demo_pod("web", 1, 1), "node node-1's pod gateway address"),
        (replace(demo_pod("web", 1, 2), pod_ips=()), "status.podIPs: no IPv4 pod IP"),
        (demo_pod("web", 1, 2, annotations={"kubeplane.dev/workload": "nginx"}), "'nginx' is not one of"),
        (demo_pod("web", 1, 2, annotations={"kubeplane.dev/command": "[1, [2]"}), "kubeplane.dev/command"),
        (demo_pod("web", 1, 2, annotations={"kubeplane.dev/command": "  "}), "empty command"),
    ],
)
def test_pods_the_lab_cannot_build_are_refused(pod, message: str) -> None:
    assert message in _error(Cluster(nodes=(demo_node(1),), pods=(pod,)))


def test_duplicate_pod_ips_and_colliding_namespace_names_are_refused() -> None:
    twins = (demo_pod("a", 1, 2), demo_pod("b", 1, 2))
    assert "10.244.1.2 is also Pod default/a's IP" in _error(Cluster(nodes=(demo_node(1),), pods=twins))
    # namespace "node" + pod "node-1" would be kp-lab-node-node-1, the node's own namespace
    clash = demo_pod("node-1", 1, 2, namespace="node")
    assert "already taken by Node node-1" in _error(Cluster(nodes=(demo_node(1),), pods=(clash,)))


def test_a_cluster_without_nodes_or_with_a_bad_lab_name_is_refused() -> None:
    assert "no Node objects" in _error(Cluster())
    with pytest.raises(ValueError, match="1-8 characters"):
        plan_lab("Bad-Name", demo_cluster())
