"""detectLocalMode BridgeInterface and InterfaceNamePrefix: the plan's local detector, the iptables and IPVS
mode rules that use it (kube-proxy's LocalTrafficDetector: `-i BRIDGE` / `-i PREFIX+` and their negations),
and the trace walker deciding those matches from the interface a packet arrives on."""

from __future__ import annotations

import pytest
from proxy_builders import make_cluster, make_endpoint, make_node, make_service, make_slice

from kubeplane.model.objects import Cluster, LoadBalancerIngress
from kubeplane.proxy.iptables.chains import external_chain, service_chain
from kubeplane.proxy.iptables.render import render_iptables
from kubeplane.proxy.ipvs.desired import desired_ipvs_state
from kubeplane.proxy.ipvs.iptables_rules import render_ipvs_iptables
from kubeplane.proxy.plan import plan_node
from kubeplane.trace.explain import ExplainOptions, explain_packet
from kubeplane.trace.packet import Interfaces, NodeContext, Packet, SourceInfo
from kubeplane.trace.ruleset import parse_ruleset

NODE_IP = "198.51.100.2"
CLUSTER_IP_MATCH = '-m comment --comment "ns1/web:p80 cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80'
SVC = service_chain("ns1/web:p80", "tcp")
LB_SVC = service_chain("ns1/lb:p80", "tcp")
LB_EXT = external_chain("ns1/lb:p80", "tcp")
PREFIX = {"detect_local_mode": "InterfaceNamePrefix", "detect_local_interface_name_prefix": "veth"}
BRIDGE = {"detect_local_mode": "BridgeInterface", "detect_local_bridge_interface": "cbr0"}


def cluster(**config: object) -> Cluster:
    services = (
        make_service("web", "10.96.0.10"),
        make_service(
            "lb",
            "10.96.0.11",
            type="LoadBalancer",
            node_port=30080,
            external_traffic_policy="Local",
            load_balancer_ingress=(LoadBalancerIngress(ip="192.0.2.10"),),
        ),
    )
    slices = (
        make_slice("web", (make_endpoint("10.244.2.5", "node-b"),)),
        make_slice("lb", (make_endpoint("10.244.1.5", "node-a"),)),
    )
    nodes = (
        make_node("node-a", NODE_IP, "10.244.1.0/24"),
        make_node("node-b", "198.51.100.3", "10.244.2.0/24"),
    )
    return make_cluster(services, slices, nodes, **config)


def nat_rules(**config: object) -> list[str]:
    return render_iptables(plan_node(cluster(**config), "node-a")).nat.splitlines()


@pytest.mark.parametrize(
    ("config", "if_local"),
    [
        (PREFIX, "-i veth+"),
        (BRIDGE, "-i cbr0"),
        ({"detect_local_mode": "NodeCIDR"}, "-s 10.244.1.0/24"),
        ({"detect_local_mode": "ClusterCIDR"}, "-s 10.244.0.0/16"),
    ],
)
def test_plan_carries_the_detector_of_each_mode(config: dict[str, object], if_local: str) -> None:
    plan = plan_node(cluster(**config), "node-a")
    assert (plan.if_local("IPv4"), plan.if_not_local("IPv4")) == (if_local, f"! {if_local}")


def test_interface_modes_match_no_source_cidr_even_with_a_cluster_cidr() -> None:
    plan = plan_node(cluster(**PREFIX), "node-a")
    assert plan.local_cidrs == ()
    assert not [
        line for line in nat_rules(**PREFIX) if "-s 10.244.0.0/16" in line or "-s 10.244.1.0/24" in line
    ]


def test_cluster_cidr_mode_without_a_cluster_cidr_has_no_detector() -> None:
    plan = plan_node(cluster(cluster_cidr=""), "node-a")
    assert (plan.if_local("IPv4"), plan.if_not_local("IPv4")) == (None, None)
    assert not [
        line for line in nat_rules(cluster_cidr="") if line.startswith(f"-A {SVC} ") and "MASQ" in line
    ]


@pytest.mark.parametrize(("config", "interface"), [(PREFIX, "veth+"), (BRIDGE, "cbr0")])
def test_cluster_ip_masquerades_traffic_not_arriving_from_the_pod_interfaces(
    config: dict[str, object], interface: str
) -> None:
    assert f"-A {SVC} {CLUSTER_IP_MATCH} ! -i {interface} -j KUBE-MARK-MASQ" in nat_rules(**config)


@pytest.mark.parametrize(("config", "interface"), [(PREFIX, "veth+"), (BRIDGE, "cbr0")])
def test_external_local_policy_sends_pod_traffic_to_the_cluster_chain_by_interface(
    config: dict[str, object], interface: str
) -> None:
    expected = (
        f'-A {LB_EXT} -m comment --comment "pod traffic for ns1/lb:p80 external destinations" '
        f"-i {interface} -j {LB_SVC}"
    )
    assert expected in nat_rules(**config)


@pytest.mark.parametrize(("config", "interface"), [(PREFIX, "veth+"), (BRIDGE, "cbr0")])
def test_ipvs_mode_masquerades_cluster_ip_traffic_not_from_the_pod_interfaces(
    config: dict[str, object], interface: str
) -> None:
    plan = plan_node(cluster(mode="ipvs", **config), "node-a")
    rules = render_ipvs_iptables(plan, desired_ipvs_state(plan, "IPv4")).nat_rules
    assert [line for line in rules if "KUBE-CLUSTER-IP" in line and "MARK-MASQ" in line] == [
        f'-A KUBE-SERVICES ! -i {interface} -m comment --comment "Kubernetes service cluster ip + port for '
        'masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ'
    ]


def explain_web(src: str, kind: str, in_interface: str | None) -> bool:
    """Whether a connection from `src` to the `web` ClusterIP on node-a is masqueraded."""
    rendered = render_iptables(plan_node(cluster(**PREFIX), "node-a"))
    context = NodeContext(
        "node-a",
        (NODE_IP,),
        ("10.244.1.0/24",),
        masquerade_address=NODE_IP,
        interfaces=Interfaces(pod_side="veth+", uplink="eth0"),
    )
    source = SourceInfo(src, kind, f"{kind} {src}", on_this_node=kind == "node")  # type: ignore[arg-type]
    packet = Packet(src, 40000, "10.96.0.10", 80, "tcp")
    options = ExplainOptions(in_interface=in_interface)
    return explain_packet(parse_ruleset(rendered.text), context, packet, source, options).masquerade


def test_trace_matches_interface_prefixes_to_decide_masquerade() -> None:
    assert explain_web("10.244.1.7", "pod", "vethab12cd") is False
    assert explain_web("10.244.1.7", "pod", "eth0") is True  # a pod address, but not from a pod interface
    assert explain_web("203.0.113.9", "external", "eth0") is True


def test_trace_of_node_traffic_has_no_input_interface_so_it_is_not_local() -> None:
    assert explain_web(NODE_IP, "node", None) is True
