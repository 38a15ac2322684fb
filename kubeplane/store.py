"""The cluster store: the current snapshot, a version counter, and precise change sets for subscribers.

Sources hand the store whole `Cluster` snapshots (a manifest tree re-read, an API server cache published);
consumers want to know what changed so they sync only that, as kube-proxy's change trackers do. `replace`
therefore diffs the new snapshot against the current one object by object, per kind and `namespace/name`
key, using dataclass equality (an object moved to another file is not a change: `ObjectMeta.source` is not
compared).

Subscribers (one proxy per node, DNS, the lab) call `subscribe()` and read `ChangeSet`s from the returned
`asyncio.Queue`. The first item a subscriber sees is the whole current state as additions (unless the store is
still empty), so "bootstrap" and "update" are one code path. A slow consumer may drain several change sets
at once and `coalesce` them into one. Everything runs on one event loop; the store holds no locks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Literal, TypeVar, cast

from kubeplane.model.objects import Cluster, EndpointSlice, KubeObject, Service

log = logging.getLogger(__name__)

Kind = Literal[
    "Service",
    "EndpointSlice",
    "Pod",
    "Node",
    "Namespace",
    "ServiceCIDR",
    "KubeProxyConfiguration",
    "KubeplaneConfiguration",
]
ChangeAction = Literal["added", "updated", "deleted"]
T = TypeVar("T", bound=KubeObject)

# Kinds whose change invalidates every service's rules (node addresses, NodePort addresses, local detection,
# DNS settings): consumers resync everything instead of tracking fine-grained effects.
FULL_RESYNC_KINDS: frozenset[Kind] = frozenset({"Node", "KubeProxyConfiguration", "KubeplaneConfiguration"})


@dataclass(frozen=True)
class ObjectChange:
    """One object that differs between two snapshots: `old` is None when added, `new` is None when deleted."""

    kind: Kind
    key: str
    old: KubeObject | None
    new: KubeObject | None

    @property
    def action(self) -> ChangeAction:
        if self.old is None:
            return "added"
        if self.new is None:
            return "deleted"
        return "updated"


@dataclass(frozen=True)
class ChangeSet:
    """What changed from `previous` (at `previous_version`) to `cluster` (at `version`), by kind and key.

    An empty change set (falsy) means the snapshots are equal; the store then keeps its version.
    """

    previous_version: int
    version: int
    previous: Cluster = field(repr=False)
    cluster: Cluster = field(repr=False)
    changes: tuple[ObjectChange, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.changes)

    def of_kind(self, kind: Kind) -> tuple[ObjectChange, ...]:
        return tuple(change for change in self.changes if change.kind == kind)

    def keys(self, kind: Kind, action: ChangeAction | None = None) -> frozenset[str]:
        """Keys of `kind` that changed, optionally only those `added`, `updated` or `deleted`."""
        return frozenset(
            change.key
            for change in self.changes
            if change.kind == kind and (action is None or change.action == action)
        )

    @property
    def needs_full_resync(self) -> bool:
        """Nodes or configuration changed, or this is a first state (from version 0): sync everything."""
        if self.previous_version == 0 and self.changes:
            return True
        return any(change.kind in FULL_RESYNC_KINDS for change in self.changes)

    @property
    def affected_service_keys(self) -> frozenset[str]:
        """`namespace/name` of each Service whose proxying may differ: it or one of its slices changed.

        A slice counts for the service named by its `kubernetes.io/service-name` label, before and after the
        change (a relabelled slice affects both services). Slices without that label serve no service.
        """
        affected: set[str] = set()
        for change in self.changes:
            for obj in (change.old, change.new):
                if isinstance(obj, Service):
                    affected.add(obj.meta.key)
                elif isinstance(obj, EndpointSlice) and obj.service_name:
                    affected.add(f"{obj.meta.namespace}/{obj.service_name}")
        return frozenset(affected)


def objects_by_kind(cluster: Cluster) -> dict[Kind, Mapping[str, KubeObject]]:
    """Every object of `cluster`, per kind, by key (`namespace/name`, or `name` when cluster-scoped)."""
    collections: dict[Kind, Sequence[KubeObject]] = {
        "Service": cluster.services,
        "EndpointSlice": cluster.endpoint_slices,
        "Pod": cluster.pods,
        "Node": cluster.nodes,
        "Namespace": cluster.namespaces,
        "ServiceCIDR": cluster.service_cidrs,
        "KubeProxyConfiguration": (cluster.proxy_config,),
        "KubeplaneConfiguration": (cluster.kubeplane_config,),
    }
    return {kind: {obj.meta.key: obj for obj in objects} for kind, objects in collections.items()}


def diff_clusters(previous: Cluster, current: Cluster) -> tuple[ObjectChange, ...]:
    """Per-object differences between two snapshots, sorted by kind (in `Kind` order) and key."""
    if previous is current:
        return ()
    before, after = objects_by_kind(previous), objects_by_kind(current)
    changes: list[ObjectChange] = []
    for kind, old_objects in before.items():
        new_objects = after[kind]
        # Most objects of a snapshot are the previous one's instances (completion and `reuse_unchanged`
        # keep them): identity settles those without comparing fields, and only changed keys are sorted.
        changed = [
            key
            for key in old_objects.keys() | new_objects.keys()
            if old_objects.get(key) is not new_objects.get(key)
            and old_objects.get(key) != new_objects.get(key)
        ]
        for key in sorted(changed):
            changes.append(
                ObjectChange(kind=kind, key=key, old=old_objects.get(key), new=new_objects.get(key))
            )
    return tuple(changes)


def reuse_unchanged(previous: Cluster, current: Cluster, changes: Sequence[ObjectChange]) -> Cluster:
    """`current` with each object that `changes` does not list replaced by its instance in `previous`.

    Consumers that remember what they derived from an object (the proxy's per-service plans) can then tell
    an unchanged object by identity, which costs nothing, instead of comparing it field by field. The
    reused instance equals the new one; only `ObjectMeta.source`, which equality ignores, may be older.
    """
    changed: dict[Kind, set[str]] = {}
    for change in changes:
        changed.setdefault(change.kind, set()).add(change.key)
    before = objects_by_kind(previous)

    def reused(kind: Kind, objects: tuple[T, ...]) -> tuple[T, ...]:
        old, keys = before[kind], changed.get(kind, set())
        if not old or all(obj.meta.key in keys for obj in objects):
            return objects
        return tuple(obj if obj.meta.key in keys else cast(T, old[obj.meta.key]) for obj in objects)

    candidate = replace(
        current,
        services=reused("Service", current.services),
        endpoint_slices=reused("EndpointSlice", current.endpoint_slices),
        pods=reused("Pod", current.pods),
        nodes=reused("Node", current.nodes),
        namespaces=reused("Namespace", current.namespaces),
        service_cidrs=reused("ServiceCIDR", current.service_cidrs),
        proxy_config=current.proxy_config if "KubeProxyConfiguration" in changed else previous.proxy_config,
        kubeplane_config=(
            current.kubeplane_config if "KubeplaneConfiguration" in changed else previous.kubeplane_config
        ),
    )
    if all(getattr(candidate, f.name) is getattr(current, f.name) for f in fields(Cluster)):
        return current
    return candidate


def coalesce(change_sets: Iterable[ChangeSet]) -> ChangeSet | None:
    """One change set spanning consecutive ones (from the first's previous to the last's cluster).

    Returns None for no input. Objects changed and changed back cancel out, as in kube-proxy's trackers.
    """
    ordered = list(change_sets)
    if not ordered:
        return None
    first, last = ordered[0], ordered[-1]
    return ChangeSet(
        previous_version=first.previous_version,
        version=last.version,
        previous=first.previous,
        cluster=last.cluster,
        changes=diff_clusters(first.previous, last.cluster),
    )


class ClusterStore:
    """The current snapshot and its version; `replace` diffs, bumps the version and notifies subscribers."""

    def __init__(self, cluster: Cluster | None = None) -> None:
        self._cluster = Cluster()
        self._version = 0
        self._subscribers: list[asyncio.Queue[ChangeSet]] = []
        if cluster is not None:
            self.replace(cluster)

    @property
    def cluster(self) -> Cluster:
        return self._cluster

    @property
    def version(self) -> int:
        """0 while empty; +1 for every `replace` that changed something."""
        return self._version

    def replace(self, cluster: Cluster) -> ChangeSet:
        """Make `cluster` current and return what changed; subscribers receive it when it is not empty."""
        changes = diff_clusters(self._cluster, cluster)
        previous, previous_version = self._cluster, self._version
        if not changes:
            return ChangeSet(previous_version, previous_version, previous, previous)
        cluster = reuse_unchanged(previous, cluster, changes)
        self._cluster, self._version = cluster, previous_version + 1
        change_set = ChangeSet(previous_version, self._version, previous, cluster, changes)
        log.info(
            "store replaced version=%d changes=%d services_affected=%d full_resync=%s",
            self._version,
            len(changes),
            len(change_set.affected_service_keys),
            change_set.needs_full_resync,
        )
        for queue in self._subscribers:
            queue.put_nowait(change_set)
        return change_set

    def subscribe(self) -> asyncio.Queue[ChangeSet]:
        """A queue of every future change set, primed with the current state as additions when not empty."""
        queue: asyncio.Queue[ChangeSet] = asyncio.Queue()
        if self._version > 0:
            empty = Cluster()
            queue.put_nowait(
                ChangeSet(0, self._version, empty, self._cluster, diff_clusters(empty, self._cluster))
            )
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[ChangeSet]) -> None:
        """Stop delivering to `queue` (a no-op when it is not subscribed)."""
        if queue in self._subscribers:
            self._subscribers.remove(queue)
