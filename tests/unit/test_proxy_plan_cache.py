"""The per-node PlanCache replans exactly the services whose inputs changed; its plans equal fresh ones."""

from __future__ import annotations

from dataclasses import replace

from proxy_builders import make_cluster, make_endpoint, make_node, make_service, make_slice

from kubeplane.model.objects import Cluster, KubeProxyConfiguration
from kubeplane.proxy.plan import PlanCache, plan_node
from kubeplane.store import ClusterStore


def _cluster(web_ip: str = "10.244.1.5", db_node: str = "node-a") -> Cluster:
    services = (
        make_service("web", "10.96.0.10"),
        make_service("db", "10.96.0.11"),
        make_service("cache", "10.96.0.12", internal_traffic_policy="Local"),
    )
    slices = (
        make_slice("web", (make_endpoint(web_ip, "node-a"), make_endpoint("10.244.2.5", "node-b"))),
        make_slice("db", (make_endpoint("10.244.1.6", db_node),)),
        make_slice("cache", (make_endpoint("10.244.1.7", "node-a"),)),
    )
    return make_cluster(services, slices)


def _warm(cluster: Cluster) -> PlanCache:
    cache = PlanCache()
    plan_node(cluster, "node-a", cache)
    return cache


def test_first_plan_plans_every_proxied_service() -> None:
    cache = PlanCache()
    plan_node(_cluster(), "node-a", cache)
    assert set(cache.replanned) == {"ns1/web", "ns1/db", "ns1/cache"}


def test_same_snapshot_replans_nothing_and_reuses_the_port_plans() -> None:
    cluster = _cluster()
    cache = PlanCache()
    first = plan_node(cluster, "node-a", cache)
    second = plan_node(cluster, "node-a", cache)
    assert cache.replanned == ()
    assert all(a is b for a, b in zip(first.service_ports, second.service_ports, strict=True))


def test_changed_slice_replans_only_its_service() -> None:
    before, after = _cluster(), _cluster(web_ip="10.244.1.9")
    slices = (after.endpoint_slices[0], *before.endpoint_slices[1:])
    after = replace(after, services=before.services, endpoint_slices=slices)
    cache = _warm(before)
    plan = plan_node(after, "node-a", cache)
    assert cache.replanned == ("ns1/web",)
    assert plan == plan_node(after, "node-a")


def test_changed_service_replans_only_that_service() -> None:
    before = _cluster()
    db = replace(before.services[1], session_affinity="ClientIP")
    after = replace(before, services=(before.services[0], db, before.services[2]))
    cache = _warm(before)
    plan = plan_node(after, "node-a", cache)
    assert cache.replanned == ("ns1/db",)
    assert plan == plan_node(after, "node-a")


def test_equal_but_rebuilt_objects_are_reused() -> None:
    cache = _warm(_cluster())
    plan_node(_cluster(), "node-a", cache)  # every object a new, equal instance
    assert cache.replanned == ()


def test_new_and_deleted_services_are_planned_and_forgotten() -> None:
    before = _cluster()
    extra = make_service("extra", "10.96.0.13")
    after = replace(before, services=(*before.services[1:], extra))
    cache = _warm(before)
    plan = plan_node(after, "node-a", cache)
    assert cache.replanned == ("ns1/extra",)
    assert {sp.name for sp in plan.service_ports} == {"db", "cache", "extra"}
    plan_node(before, "node-a", cache)
    assert cache.replanned == ("ns1/web",)


def test_changed_node_replans_every_service() -> None:
    before = _cluster()
    nodes = (replace(before.nodes[0], pod_cidrs=("10.244.9.0/24",)), before.nodes[1])
    after = replace(before, nodes=nodes)
    cache = _warm(before)
    plan = plan_node(after, "node-a", cache)
    assert set(cache.replanned) == {"ns1/web", "ns1/db", "ns1/cache"}
    assert plan == plan_node(after, "node-a")


def test_other_node_changing_replans_nothing() -> None:
    before = _cluster()
    nodes = (before.nodes[0], make_node("node-b", "198.51.100.9", "10.244.2.0/24"))
    cache = _warm(before)
    plan_node(replace(before, nodes=nodes), "node-a", cache)
    assert cache.replanned == ()


def test_changed_proxy_config_replans_every_service() -> None:
    before = _cluster()
    after = replace(
        before, proxy_config=KubeProxyConfiguration(cluster_cidr="10.244.0.0/16", masquerade_all=True)
    )
    cache = _warm(before)
    plan = plan_node(after, "node-a", cache)
    assert set(cache.replanned) == {"ns1/web", "ns1/db", "ns1/cache"}
    assert plan == plan_node(after, "node-a")


def test_endpoint_moving_node_changes_the_local_set_through_the_cache() -> None:
    cache = _warm(_cluster(db_node="node-a"))
    plan = plan_node(_cluster(db_node="node-b"), "node-a", cache)
    db = next(sp for sp in plan.service_ports if sp.name == "db")
    assert cache.replanned == ("ns1/db",)
    assert not db.endpoints[0].is_local


def test_store_reuses_unchanged_instances_so_the_cache_compares_by_identity() -> None:
    store = ClusterStore(_cluster())
    first = store.cluster
    store.replace(_cluster(web_ip="10.244.1.9"))
    second = store.cluster
    assert second.services[0] is first.services[0]
    assert second.endpoint_slices[1] is first.endpoint_slices[1]
    assert second.endpoint_slices[0] is not first.endpoint_slices[0]
    assert second.nodes[0] is first.nodes[0] and second.proxy_config is first.proxy_config
    assert second == _cluster(web_ip="10.244.1.9")


def test_port_order_is_reused_while_the_services_are_the_same_and_redone_when_one_is_added() -> None:
    before = _cluster()
    cache = _warm(before)
    ordering = cache.ordering(before.services)
    slices_changed = replace(_cluster(web_ip="10.244.1.9"), services=before.services)
    plan_node(slices_changed, "node-a", cache)
    assert cache.ordering(before.services) is ordering
    added = make_service("api", "10.96.0.13")
    grown = replace(before, services=(added, *before.services))
    plan = plan_node(grown, "node-a", cache)
    assert [sp.name for sp in plan.service_ports] == ["api", "cache", "db", "web"]
    assert plan == plan_node(grown, "node-a")
