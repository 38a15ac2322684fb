"""The store turns snapshot replacement into precise change sets and delivers them to subscribers."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from kubeplane.model.objects import (
    SERVICE_NAME_LABEL,
    Cluster,
    Endpoint,
    EndpointSlice,
    KubeProxyConfiguration,
    Node,
    ObjectMeta,
    Pod,
    Service,
    ServicePort,
    Source,
)
from kubeplane.store import ChangeSet, ClusterStore, coalesce, diff_clusters


def service(name: str, port: int = 80, namespace: str = "shop") -> Service:
    return Service(meta=ObjectMeta(name=name, namespace=namespace), ports=(ServicePort(port=port),))


def endpoint_slice(name: str, service_name: str, address: str, namespace: str = "shop") -> EndpointSlice:
    meta = ObjectMeta(name=name, namespace=namespace, labels={SERVICE_NAME_LABEL: service_name})
    return EndpointSlice(meta=meta, endpoints=(Endpoint(addresses=(address,)),))


def pod(name: str, ip: str) -> Pod:
    return Pod(meta=ObjectMeta(name=name, namespace="shop"), pod_ips=(ip,))


BASE = Cluster(
    services=(service("web"), service("db", 5432)),
    endpoint_slices=(endpoint_slice("web-abcde", "web", "10.244.1.5"),),
    pods=(pod("web-1", "10.244.1.5"),),
    nodes=(Node(meta=ObjectMeta(name="node-a")),),
)


def store_at(cluster: Cluster) -> ClusterStore:
    return ClusterStore(cluster)


def test_replacing_with_an_equal_snapshot_yields_an_empty_change_set_and_keeps_the_version() -> None:
    store = store_at(BASE)
    equal_copy = replace(BASE, services=tuple(reversed(BASE.services)))
    change_set = store.replace(equal_copy)
    assert not change_set
    assert change_set.changes == ()
    assert store.version == 1
    assert change_set.version == change_set.previous_version == 1


def test_an_object_moved_to_another_file_is_not_a_change() -> None:
    moved = replace(BASE.services[0], meta=replace(BASE.services[0].meta, source=Source("other.yaml", 3)))
    change_set = store_at(BASE).replace(replace(BASE, services=(moved, BASE.services[1])))
    assert not change_set


def test_added_updated_and_deleted_objects_are_reported_per_kind_with_old_and_new() -> None:
    store = store_at(BASE)
    new_web = service("web", 8080)
    new_pod = pod("web-2", "10.244.1.6")
    change_set = store.replace(replace(BASE, services=(new_web,), pods=(BASE.pods[0], new_pod)))

    assert store.version == 2
    assert (change_set.previous_version, change_set.version) == (1, 2)
    assert change_set.keys("Service", "updated") == {"shop/web"}
    assert change_set.keys("Service", "deleted") == {"shop/db"}
    assert change_set.keys("Pod", "added") == {"shop/web-2"}
    assert change_set.keys("Node") == frozenset()
    updated = next(c for c in change_set.of_kind("Service") if c.key == "shop/web")
    assert (updated.old, updated.new) == (BASE.services[0], new_web)
    deleted = next(c for c in change_set.of_kind("Service") if c.key == "shop/db")
    assert (deleted.action, deleted.old, deleted.new) == ("deleted", BASE.services[1], None)
    (added,) = change_set.of_kind("Pod")
    assert (added.action, added.old, added.new) == ("added", None, new_pod)
    assert store.cluster is change_set.cluster
    assert change_set.previous is BASE


def test_changes_are_ordered_by_kind_then_key() -> None:
    cluster = Cluster(services=(service("b"), service("a")), pods=(pod("p", "10.244.1.9"),))
    changes = diff_clusters(Cluster(), cluster)
    assert [(c.kind, c.key) for c in changes] == [
        ("Service", "shop/a"),
        ("Service", "shop/b"),
        ("Pod", "shop/p"),
    ]


def test_slice_change_marks_its_service_affected_and_not_a_full_resync() -> None:
    store = store_at(BASE)
    moved = endpoint_slice("web-abcde", "web", "10.244.1.7")
    change_set = store.replace(replace(BASE, endpoint_slices=(moved,)))
    assert change_set.keys("EndpointSlice", "updated") == {"shop/web-abcde"}
    assert change_set.affected_service_keys == {"shop/web"}
    assert not change_set.needs_full_resync


def test_relabelled_slice_affects_both_the_old_and_the_new_service() -> None:
    relabelled = endpoint_slice("web-abcde", "db", "10.244.1.5")
    change_set = store_at(BASE).replace(replace(BASE, endpoint_slices=(relabelled,)))
    assert change_set.affected_service_keys == {"shop/web", "shop/db"}


def test_pod_only_change_affects_no_service_directly() -> None:
    change_set = store_at(BASE).replace(replace(BASE, pods=()))
    assert change_set.keys("Pod", "deleted") == {"shop/web-1"}
    assert change_set.affected_service_keys == frozenset()


def test_node_or_proxy_config_change_forces_a_full_resync() -> None:
    store = store_at(BASE)
    with_node = store.replace(replace(BASE, nodes=(*BASE.nodes, Node(meta=ObjectMeta(name="node-b")))))
    assert with_node.needs_full_resync
    masquerade_all = store.replace(
        replace(store.cluster, proxy_config=KubeProxyConfiguration(masquerade_all=True))
    )
    assert masquerade_all.keys("KubeProxyConfiguration", "updated") == {"kube-proxy"}
    assert masquerade_all.needs_full_resync


def test_first_state_is_a_full_resync() -> None:
    change_set = ClusterStore().replace(BASE)
    assert change_set.previous_version == 0
    assert change_set.needs_full_resync


async def test_subscriber_is_primed_with_the_current_state_then_receives_each_change() -> None:
    store = store_at(BASE)
    queue = store.subscribe()
    primed = queue.get_nowait()
    assert (primed.previous_version, primed.version) == (0, 1)
    assert primed.keys("Service", "added") == {"shop/web", "shop/db"}
    assert primed.cluster is BASE

    store.replace(replace(BASE, pods=()))
    store.replace(replace(BASE, pods=()))  # equal: not delivered
    update = await asyncio.wait_for(queue.get(), timeout=1)
    assert update.keys("Pod", "deleted") == {"shop/web-1"}
    assert queue.empty()


def test_empty_store_subscriber_starts_with_nothing_and_unsubscribe_stops_delivery() -> None:
    store = ClusterStore()
    queue = store.subscribe()
    assert queue.empty()
    store.replace(BASE)
    assert queue.qsize() == 1
    store.unsubscribe(queue)
    store.replace(Cluster())
    assert queue.qsize() == 1


def test_coalesced_change_sets_cancel_a_change_and_its_revert() -> None:
    store = store_at(BASE)
    change_sets: list[ChangeSet] = [
        store.replace(replace(BASE, pods=())),
        store.replace(replace(BASE, services=(service("web"),), pods=())),
        store.replace(replace(BASE, services=(service("web"),))),
    ]
    merged = coalesce(change_sets)
    assert merged is not None
    assert (merged.previous_version, merged.version) == (1, 4)
    assert [(c.kind, c.key, c.action) for c in merged.changes] == [("Service", "shop/db", "deleted")]
    assert coalesce([]) is None
