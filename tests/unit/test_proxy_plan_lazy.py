"""LazyPortPlans hands out a node's port plans in plan_node's order, planning each service when reached."""

from __future__ import annotations

from dataclasses import replace

import pytest
from proxy_builders import make_cluster, make_endpoint, make_service, make_slice

from kubeplane.model.objects import Cluster, ServicePort
from kubeplane.proxy import plan as plan_module
from kubeplane.proxy.plan import PlanCache, plan_node, plan_node_lazily


def _tricky_cluster() -> Cluster:
    """Names whose port strings sort across service boundaries (`b` against `b-c`, `b0`, `bz`), unnamed
    ports, several protocols, and a dual-stack service, listed out of order."""
    services = (
        make_service("bz", "10.96.0.14", port_name="", namespace="a"),
        make_service(
            "b",
            "10.96.0.11",
            namespace="a",
            port_name="web",
            extra_ports=(
                ServicePort(port=53, protocol="UDP", name="dns", target_port=53),
                ServicePort(port=53, protocol="TCP", name="dns", target_port=53),
            ),
        ),
        make_service("b-c", "10.96.0.12", namespace="a", port_name="x"),
        make_service("b0", "10.96.0.13", namespace="a", port_name="0"),
        replace(make_service("dual", "fd00::15", namespace="a"), cluster_ips=("fd00::15", "10.96.0.15")),
        replace(make_service("none", "10.96.0.16", namespace="a"), cluster_ips=(), headless=True),
    )
    slices = (
        make_slice("b", (make_endpoint("10.244.1.5", "node-a"),), namespace="a", port_name="web"),
        make_slice("b-c", (make_endpoint("10.244.2.5", "node-b"),), namespace="a", port_name="x"),
        make_slice("dual", (make_endpoint("fd00:244::5", "node-a"),), namespace="a", address_type="IPv6"),
    )
    return make_cluster(services, slices)


def test_lazy_ports_come_in_plan_node_order_across_name_prefixes_and_families() -> None:
    cluster = _tricky_cluster()
    expected = plan_node(cluster, "node-a").service_ports
    facts, lazy = plan_node_lazily(cluster, "node-a")
    assert facts.service_ports == ()
    assert (*lazy.family("IPv4"), *lazy.family("IPv6")) == expected
    assert lazy.all() == expected
    assert [sp.name_string for sp in expected if sp.family == "IPv4"] == [
        "a/b-c:x",
        "a/b0:0",
        "a/b:dns",
        "a/b:dns",
        "a/b:web",
        "a/bz",
        "a/dual:p80",
    ]


def test_a_service_is_planned_only_when_its_first_port_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    planned: list[str] = []
    original = plan_module._planned

    def counting(*args: object) -> object:
        planned.append(args[0].meta.name)  # type: ignore[attr-defined]
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(plan_module, "_planned", counting)
    _, lazy = plan_node_lazily(_tricky_cluster(), "node-a")
    ports = lazy.family("IPv4")
    assert next(ports).name_string == "a/b-c:x"
    assert planned == ["b-c"]
    lazy.all()
    assert sorted(planned) == ["b", "b-c", "b0", "bz", "dual"]


def test_lazy_round_leaves_the_cache_as_an_eager_one() -> None:
    cluster = _tricky_cluster()
    cache = PlanCache()
    _, lazy = plan_node_lazily(cluster, "node-a", cache)
    list(lazy.family("IPv4"))
    first = lazy.all()
    assert set(cache.replanned) == {"a/b", "a/b-c", "a/b0", "a/bz", "a/dual"}
    again = plan_node(cluster, "node-a", cache)
    assert cache.replanned == ()
    assert all(a is b for a, b in zip(first, again.service_ports, strict=True))
