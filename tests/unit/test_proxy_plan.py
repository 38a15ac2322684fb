"""The per-node plan: which service ports are proxied and how their endpoints are categorised."""

from __future__ import annotations

import dataclasses

import pytest
from proxy_builders import make_cluster, make_endpoint, make_node, make_service, make_slice

from kubeplane.model.objects import Endpoint, LoadBalancerIngress, Service
from kubeplane.proxy.plan import ServicePortPlan, UnknownNodeError, plan_node


def _port(
    service: Service, endpoints: tuple[Endpoint, ...], node: str = "node-a", **config: object
) -> ServicePortPlan:
    cluster = make_cluster((service,), (make_slice(service.meta.name, endpoints),), **config)
    (sp,) = plan_node(cluster, node).ports_for("IPv4")
    return sp


def _ips(endpoints: tuple) -> list[str]:  # type: ignore[type-arg]
    return [ep.ip for ep in endpoints]


def test_absent_conditions_mean_ready_and_serving() -> None:
    sp = _port(make_service("s", "10.96.0.1"), (make_endpoint("10.244.1.1", "node-a"),))
    (ep,) = sp.endpoints
    assert (ep.ready, ep.serving, ep.terminating, ep.is_local) == (True, True, False, True)
    assert _ips(sp.categories.cluster) == ["10.244.1.1"]


def test_ready_endpoints_win_over_serving_terminating_ones() -> None:
    eps = (
        make_endpoint("10.244.1.1", "node-a", ready=False, serving=True, terminating=True),
        make_endpoint("10.244.2.1", "node-b", ready=True),
    )
    assert _ips(_port(make_service("s", "10.96.0.1"), eps).categories.cluster) == ["10.244.2.1"]


def test_serving_terminating_endpoints_are_used_when_none_is_ready() -> None:
    eps = (
        make_endpoint("10.244.1.1", "node-a", ready=False, serving=True, terminating=True),
        make_endpoint("10.244.2.1", "node-b", ready=False, serving=False, terminating=True),
        make_endpoint("10.244.2.2", "node-b", ready=False),
    )
    cats = _port(make_service("s", "10.96.0.1"), eps).categories
    assert _ips(cats.cluster) == ["10.244.1.1"]
    assert cats.has_any


def test_no_usable_endpoint_means_no_endpoints_at_all() -> None:
    eps = (make_endpoint("10.244.2.2", "node-b", ready=False),)
    cats = _port(make_service("s", "10.96.0.1"), eps).categories
    assert (cats.cluster, cats.has_any) == ((), False)


def test_local_policy_falls_back_to_local_terminating_even_if_remote_is_ready() -> None:
    svc = make_service("s", "10.96.0.1", internal_traffic_policy="Local")
    eps = (
        make_endpoint("10.244.1.1", "node-a", ready=False, serving=True, terminating=True),
        make_endpoint("10.244.2.1", "node-b"),
    )
    cats = _port(svc, eps).categories
    assert (_ips(cats.local), cats.cluster, cats.has_any) == (["10.244.1.1"], (), True)


def test_external_local_policy_keeps_cluster_set_for_internal_traffic() -> None:
    svc = make_service("s", "10.96.0.1", type="NodePort", node_port=30001, external_traffic_policy="Local")
    eps = (make_endpoint("10.244.1.1", "node-a"), make_endpoint("10.244.2.1", "node-b"))
    cats = _port(svc, eps, node="node-b").categories
    assert _ips(cats.cluster) == ["10.244.1.1", "10.244.2.1"]
    assert _ips(cats.local) == ["10.244.2.1"]
    assert _ips(cats.reachable) == ["10.244.1.1", "10.244.2.1"]


def test_external_local_policy_is_ignored_for_cluster_ip_services() -> None:
    sp = _port(
        make_service("s", "10.96.0.1", external_traffic_policy="Local"),
        (make_endpoint("10.244.2.1", "node-b"),),
    )
    assert not sp.external_policy_local and not sp.uses_local_endpoints


def _zone_cluster_nodes() -> tuple:  # type: ignore[type-arg]
    return (
        make_node("node-a", "198.51.100.2", "10.244.1.0/24", zone="z1"),
        make_node("node-b", "198.51.100.3", "10.244.2.0/24", zone="z2"),
    )


def _hinted(service: Service, endpoints: tuple[Endpoint, ...], node: str) -> ServicePortPlan:
    cluster = make_cluster(
        (service,), (make_slice(service.meta.name, endpoints),), nodes=_zone_cluster_nodes()
    )
    (sp,) = plan_node(cluster, node).ports_for("IPv4")
    return sp


def test_zone_hints_restrict_cluster_set_to_own_zone() -> None:
    eps = (
        make_endpoint("10.244.1.1", "node-a", zones=("z1",)),
        make_endpoint("10.244.2.1", "node-b", zones=("z2",)),
        make_endpoint("10.244.2.2", "node-b", ready=False),
    )
    assert _ips(_hinted(make_service("s", "10.96.0.1"), eps, "node-b").categories.cluster) == ["10.244.2.1"]


def test_hints_are_ignored_unless_every_ready_endpoint_has_one() -> None:
    eps = (make_endpoint("10.244.1.1", "node-a", zones=("z1",)), make_endpoint("10.244.2.1", "node-b"))
    assert len(_hinted(make_service("s", "10.96.0.1"), eps, "node-a").categories.cluster) == 2


def test_hints_are_ignored_when_none_names_this_zone() -> None:
    eps = (
        make_endpoint("10.244.1.1", "node-a", zones=("z1",)),
        make_endpoint("10.244.1.2", "node-a", zones=("z1",)),
    )
    assert len(_hinted(make_service("s", "10.96.0.1"), eps, "node-b").categories.cluster) == 2


def test_node_hints_win_over_zone_hints() -> None:
    eps = (
        make_endpoint("10.244.1.1", "node-a", zones=("z1",), nodes=("node-a",)),
        make_endpoint("10.244.1.2", "node-a", zones=("z1",), nodes=("node-x",)),
    )
    assert _ips(_hinted(make_service("s", "10.96.0.1"), eps, "node-a").categories.cluster) == ["10.244.1.1"]


def test_hints_do_not_restrict_the_local_set() -> None:
    svc = make_service("s", "10.96.0.1", internal_traffic_policy="Local")
    eps = (
        make_endpoint("10.244.1.1", "node-a", zones=("z2",)),
        make_endpoint("10.244.2.1", "node-b", zones=("z2",)),
    )
    assert _ips(_hinted(svc, eps, "node-a").categories.local) == ["10.244.1.1"]


def test_duplicate_addresses_are_merged_keeping_the_local_copy() -> None:
    svc = make_service("s", "10.96.0.1")
    slices = (
        make_slice("s", (make_endpoint("10.244.1.1", "node-b"),)),
        make_slice("s", (make_endpoint("10.244.1.1", "node-a"),), suffix="b"),
    )
    (sp,) = plan_node(make_cluster((svc,), slices), "node-a").ports_for("IPv4")
    assert [(ep.ip, ep.is_local) for ep in sp.endpoints] == [("10.244.1.1", True)]


def test_endpoints_match_service_ports_by_name_and_protocol() -> None:
    svc = make_service("s", "10.96.0.1", port_name="http")
    slices = (
        make_slice("s", (make_endpoint("10.244.1.1", "node-a"),), port_name="other"),
        make_slice("s", (make_endpoint("10.244.1.2", "node-a"),), port=8080, port_name="http", suffix="b"),
        make_slice(
            "s", (make_endpoint("10.244.1.3", "node-a"),), port_name="http", protocol="UDP", suffix="c"
        ),
    )
    (sp,) = plan_node(make_cluster((svc,), slices), "node-a").ports_for("IPv4")
    assert [ep.address for ep in sp.endpoints] == ["10.244.1.2:8080"]


def test_headless_external_name_and_proxy_mode_ingress_are_left_out() -> None:
    headless = dataclasses.replace(make_service("h", "10.96.0.2"), headless=True, cluster_ips=())
    ext_name = dataclasses.replace(make_service("e", "10.96.0.3"), type="ExternalName", cluster_ips=())
    lb = make_service(
        "lb",
        "10.96.0.4",
        type="LoadBalancer",
        node_port=30004,
        load_balancer_ingress=(
            LoadBalancerIngress(ip="192.0.2.1"),
            LoadBalancerIngress(ip="192.0.2.2", ip_mode="Proxy"),
        ),
    )
    (sp,) = plan_node(make_cluster((headless, ext_name, lb), ()), "node-a").ports_for("IPv4")
    assert (sp.name, sp.load_balancer_ips) == ("lb", ("192.0.2.1",))


def test_families_are_planned_apart() -> None:
    svc = dataclasses.replace(make_service("d", "10.96.0.5"), cluster_ips=("10.96.0.5", "fd00::5"))
    slices = (
        make_slice("d", (make_endpoint("10.244.1.1", "node-a"),)),
        make_slice("d", (make_endpoint("fd00:244::1", "node-a"),), address_type="IPv6", suffix="b"),
    )
    plan = plan_node(make_cluster((svc,), slices), "node-a")
    (v4,) = plan.ports_for("IPv4")
    (v6,) = plan.ports_for("IPv6")
    assert (v4.cluster_ip, _ips(v4.endpoints)) == ("10.96.0.5", ["10.244.1.1"])
    assert (v6.cluster_ip, _ips(v6.endpoints)) == ("fd00::5", ["fd00:244::1"])


def test_health_check_node_port_only_for_local_load_balancers() -> None:
    lb = make_service("lb", "10.96.0.6", type="LoadBalancer", node_port=30006, health_check_node_port=32006)
    lb_local = dataclasses.replace(
        lb, meta=dataclasses.replace(lb.meta, name="lbl"), external_traffic_policy="Local"
    )
    ports = plan_node(make_cluster((lb, lb_local), ()), "node-a").ports_for("IPv4")
    assert {sp.name: sp.health_check_node_port for sp in ports} == {"lb": None, "lbl": 32006}


def test_node_and_config_facts_are_carried() -> None:
    cluster = make_cluster((), (), cluster_cidr="10.244.0.0/16,fd00:244::/56", masquerade_bit=13)
    plan = plan_node(cluster, "node-b")
    assert (plan.node_ip("IPv4"), plan.local_cidr("IPv6"), plan.masquerade_mark) == (
        "198.51.100.3",
        "fd00:244::/56",
        "0x2000",
    )


def test_node_cidr_detect_local_uses_the_node_pod_cidr() -> None:
    plan = plan_node(make_cluster((), (), detect_local_mode="NodeCIDR"), "node-b")
    assert plan.local_cidr("IPv4") == "10.244.2.0/24"


def test_unknown_node_is_an_error() -> None:
    with pytest.raises(UnknownNodeError):
        plan_node(make_cluster((), ()), "nope")
