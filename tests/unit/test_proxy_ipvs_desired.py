"""The IPVS mode's desired state, computed from the shared plan without a kernel."""

from __future__ import annotations

from proxy_builders import make_cluster, make_endpoint, make_service, make_slice

from kubeplane.model.objects import LoadBalancerIngress, Node, NodeAddress, ObjectMeta, Service
from kubeplane.proxy.ipvs import ipsets as names
from kubeplane.proxy.ipvs.desired import desired_ipvs_state
from kubeplane.proxy.ipvs.state import IpvsState, RealServer, VirtualServerKey, VirtualService
from kubeplane.proxy.plan import plan_node

NODE_A_IP = "198.51.100.2"


def state_of(
    services: tuple[Service, ...], slices: tuple, node: str = "node-a", **config: object
) -> IpvsState:
    scheduler = str(config.pop("ipvs_scheduler", "rr"))
    cluster = make_cluster(services, slices, **config)
    return desired_ipvs_state(plan_node(cluster, node), "IPv4", scheduler)


def service(state: IpvsState, address: str, port: int, protocol: str = "TCP") -> VirtualService:
    return next(vs for vs in state.services if vs.key == VirtualServerKey(protocol, address, port))  # type: ignore[arg-type]


def reals(vs: VirtualService) -> list[str]:
    return [str(r) for r in vs.real_servers]


WEB = make_service("web", "10.96.0.20", 80, target_port=8080)
WEB_SLICE = make_slice(
    "web",
    (
        make_endpoint("10.244.1.2", "node-a"),
        make_endpoint("10.244.2.2", "node-b"),
        make_endpoint("10.244.1.3", "node-a", ready=False, serving=True, terminating=True),
    ),
    8080,
)


def test_cluster_ip_gets_a_bound_virtual_server_with_the_ready_endpoints() -> None:
    state = state_of((WEB,), (WEB_SLICE,))
    vs = service(state, "10.96.0.20", 80)
    assert vs.server.scheduler == "rr" and vs.server.bind and vs.server.persistence_timeout is None
    assert reals(vs) == ["10.244.1.2:8080", "10.244.2.2:8080"]
    assert all(r.weight == 1 for r in vs.real_servers)
    assert state.bound_addresses == ("10.96.0.20",)
    assert state.ipset(names.CLUSTER_IP).entries == ("10.96.0.20,tcp:80",)
    assert state.ipset(names.IPVS_IPS).entries == ("10.96.0.20",)


def test_terminating_endpoints_serve_only_when_none_is_ready() -> None:
    only_terminating = make_slice(
        "web", (make_endpoint("10.244.1.3", "node-a", ready=False, serving=True, terminating=True),), 8080
    )
    assert reals(service(state_of((WEB,), (only_terminating,)), "10.96.0.20", 80)) == ["10.244.1.3:8080"]


def test_scheduler_comes_from_the_configuration_and_maglev_hashes_the_source_port() -> None:
    assert (
        service(state_of((WEB,), (WEB_SLICE,), ipvs_scheduler="wlc"), "10.96.0.20", 80).server.scheduler
        == "wlc"
    )
    assert (
        service(state_of((WEB,), (WEB_SLICE,), ipvs_scheduler=""), "10.96.0.20", 80).server.scheduler == "rr"
    )
    maglev = service(state_of((WEB,), (WEB_SLICE,), ipvs_scheduler="mh"), "10.96.0.20", 80).server
    assert maglev.source_port_hash and maglev.flags == 0x10


def test_client_ip_affinity_makes_the_virtual_server_persistent() -> None:
    sticky = make_service(
        "web", "10.96.0.20", 80, target_port=8080, session_affinity="ClientIP", session_affinity_timeout=600
    )
    server = service(state_of((sticky,), (WEB_SLICE,)), "10.96.0.20", 80).server
    assert server.persistence_timeout == 600 and server.flags == 0x1


def test_local_endpoints_are_in_the_loop_back_set_for_hairpin_masquerade() -> None:
    state = state_of((WEB,), (WEB_SLICE,))
    assert state.ipset(names.LOOP_BACK).entries == (
        "10.244.1.2,tcp:8080,10.244.1.2",
        "10.244.1.3,tcp:8080,10.244.1.3",
    )


def test_node_port_gets_an_unbound_virtual_server_per_node_ip_and_a_bitmap_entry() -> None:
    np = make_service("np", "10.96.0.21", 80, target_port=8080, type="NodePort", node_port=30080)
    np_slice = make_slice("np", WEB_SLICE.endpoints, 8080)
    state = state_of((np,), (np_slice,))
    vs = service(state, NODE_A_IP, 30080)
    assert not vs.server.bind
    assert reals(vs) == ["10.244.1.2:8080", "10.244.2.2:8080"]
    assert state.ipset(names.NODE_PORT_TCP).entries == ("30080",)
    assert state.ipset(names.NODE_PORT_LOCAL_TCP).entries == ()
    assert NODE_A_IP not in state.bound_addresses


def test_node_port_addresses_select_the_node_ips() -> None:
    np = make_service("np", "10.96.0.21", 80, target_port=8080, type="NodePort", node_port=30080)
    node = Node(
        meta=ObjectMeta(name="node-a"),
        pod_cidrs=("10.244.1.0/24",),
        addresses=(NodeAddress("InternalIP", NODE_A_IP), NodeAddress("InternalIP", "192.168.7.2")),
    )
    cluster = make_cluster((np,), (), nodes=(node,), node_port_addresses=("192.168.0.0/16",))
    state = desired_ipvs_state(plan_node(cluster, "node-a"), "IPv4")
    assert [str(vs.key) for vs in state.services] == ["TCP 10.96.0.21:80", "TCP 192.168.7.2:30080"]


def test_udp_and_sctp_node_ports_use_their_own_sets() -> None:
    udp = make_service("dns", "10.96.0.30", 53, protocol="UDP", type="NodePort", node_port=30053)
    sctp = make_service("sig", "10.96.0.31", 9000, protocol="SCTP", type="NodePort", node_port=30090)
    state = state_of((udp, sctp), ())
    assert state.ipset(names.NODE_PORT_UDP).entries == ("30053",)
    assert state.ipset(names.NODE_PORT_SCTP).entries == (f"{NODE_A_IP},sctp:30090",)
    assert service(state, NODE_A_IP, 30053, "UDP").key.protocol == "UDP"


def test_external_local_policy_uses_local_endpoints_and_the_local_sets() -> None:
    lb = make_service(
        "lb",
        "10.96.0.22",
        80,
        target_port=8080,
        type="LoadBalancer",
        node_port=30081,
        external_traffic_policy="Local",
        health_check_node_port=32081,
        load_balancer_ingress=(LoadBalancerIngress(ip="192.0.2.10"),),
    )
    state = state_of((lb,), (make_slice("lb", WEB_SLICE.endpoints, 8080),))
    assert reals(service(state, "192.0.2.10", 80)) == ["10.244.1.2:8080"]
    assert reals(service(state, NODE_A_IP, 30081)) == ["10.244.1.2:8080"]
    assert reals(service(state, "10.96.0.22", 80)) == ["10.244.1.2:8080", "10.244.2.2:8080"]
    assert state.ipset(names.NODE_PORT_LOCAL_TCP).entries == ("30081",)
    assert state.ipset(names.LOAD_BALANCER_LOCAL).entries == ("192.0.2.10,tcp:80",)
    assert state.ipset(names.HEALTH_CHECK_NODE_PORT).entries == ("32081",)


def test_external_local_policy_without_local_endpoints_falls_back_to_cluster_endpoints() -> None:
    np = make_service(
        "np",
        "10.96.0.23",
        80,
        target_port=8080,
        type="NodePort",
        node_port=30082,
        external_traffic_policy="Local",
    )
    remote_only = make_slice("np", (make_endpoint("10.244.2.2", "node-b"),), 8080)
    assert reals(service(state_of((np,), (remote_only,)), NODE_A_IP, 30082)) == ["10.244.2.2:8080"]


def test_internal_local_policy_sends_cluster_ip_traffic_to_local_endpoints_only() -> None:
    itp = make_service("itp", "10.96.0.24", 80, target_port=8080, internal_traffic_policy="Local")
    state = state_of((itp,), (make_slice("itp", WEB_SLICE.endpoints, 8080),))
    assert reals(service(state, "10.96.0.24", 80)) == ["10.244.1.2:8080"]
    assert reals(
        service(state_of((itp,), (make_slice("itp", WEB_SLICE.endpoints, 8080),), "node-b"), "10.96.0.24", 80)
    ) == ["10.244.2.2:8080"]


def test_external_ips_go_to_the_external_sets_and_node_ips_are_not_rebound() -> None:
    ext = make_service("ext", "10.96.0.25", 80, target_port=8080, external_ips=("192.0.2.30", NODE_A_IP))
    state = state_of((ext,), (make_slice("ext", WEB_SLICE.endpoints, 8080),))
    assert state.ipset(names.EXTERNAL_IP).entries == ("192.0.2.30,tcp:80", f"{NODE_A_IP},tcp:80")
    assert state.bound_addresses == ("10.96.0.25", "192.0.2.30")
    assert not service(state, NODE_A_IP, 80).server.bind


def test_source_ranges_fill_the_firewall_sets_and_block_the_node_when_it_is_outside() -> None:
    def lb(ranges: tuple[str, ...]) -> Service:
        return make_service(
            "fw",
            "10.96.0.26",
            80,
            target_port=8080,
            type="LoadBalancer",
            node_port=30083,
            load_balancer_ingress=(LoadBalancerIngress(ip="192.0.2.20"),),
            load_balancer_source_ranges=ranges,
        )

    outside = state_of((lb(("203.0.113.10/32",)),), ())
    assert outside.ipset(names.LOAD_BALANCER_FW).entries == ("192.0.2.20,tcp:80",)
    assert outside.ipset(names.LOAD_BALANCER_SOURCE_CIDR).entries == ("192.0.2.20,tcp:80,203.0.113.10",)
    assert [(b.address, b.port) for b in outside.blocked_node_access] == [("192.0.2.20", 80)]
    inside = state_of((lb(("198.51.100.0/24",)),), ())
    assert inside.blocked_node_access == ()
    assert inside.ipset(names.LOAD_BALANCER_SOURCE_IP).entries == ("192.0.2.20,tcp:80,192.0.2.20",)


def test_ipv6_state_uses_the_kube_6_sets() -> None:
    v6 = Service(
        meta=ObjectMeta(name="v6", namespace="ns1"),
        cluster_ips=("fd00:10:96::20",),
        ip_families=("IPv6",),
        ports=WEB.ports,
        selector={"app": "v6"},
    )
    state = desired_ipvs_state(plan_node(make_cluster((v6,), ()), "node-a"), "IPv6")
    assert state.ipset("KUBE-6-CLUSTER-IP").entries == ("fd00:10:96::20,tcp:80",)
    assert "KUBE-6-LOAD-BALANCER-SOURCE-CID" in [s.name for s in state.ipsets]  # cut to 31 characters
    assert state.services[0].real_servers == ()


def test_equal_plans_give_equal_states() -> None:
    assert state_of((WEB,), (WEB_SLICE,)) == state_of((WEB,), (WEB_SLICE,))
    assert RealServer("10.0.0.1", 80) < RealServer("10.0.0.2", 80)
