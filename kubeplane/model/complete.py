"""From parsed objects to a `Cluster`: what the API server and the cluster would fill in, checked as a whole.

`build_cluster` rejects duplicates (same kind and key, naming both places), takes the single configuration
objects, completes nodes, pods and services (complete_topology.py, complete_services.py), adds the namespaces
objects imply (default, kube-system and every namespace used), drops Endpoints mirrored for Services that
have a selector (as the mirroring controller does), and orders everything by key so equal input gives an
equal snapshot. All cross-object problems are raised together as `ManifestErrors`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TypeVar, cast

from kubeplane.model.complete_services import FamilyMemo, complete_services
from kubeplane.model.complete_topology import complete_nodes, complete_pods
from kubeplane.model.errors import ErrorPlace, ManifestError, raise_if_any
from kubeplane.model.objects import (
    DEFAULT_SERVICE_CIDR,
    Cluster,
    EndpointSlice,
    KubeObject,
    KubeplaneConfiguration,
    KubeProxyConfiguration,
    Namespace,
    Node,
    ObjectMeta,
    Pod,
    Service,
    ServiceCIDR,
)
from kubeplane.model.parse_endpoints import MIRRORED_BY_LABEL, MIRRORING_CONTROLLER
from kubeplane.model.parse_meta import DEFAULT_NAMESPACE

DEFAULT_SERVICE_CIDR_NAME = "kubernetes"
DEFAULT_SERVICE_CIDR_IPV6 = "fd00:10:96::/108"  # kind's and kubeadm's dual-stack examples use this range
SYSTEM_NAMESPACE = "kube-system"
_SINGLETON_KINDS = (KubeProxyConfiguration, KubeplaneConfiguration)

T = TypeVar("T")


def build_cluster(
    objects: Iterable[KubeObject], previous: Cluster | None = None, memo: FamilyMemo | None = None
) -> Cluster:
    """The completed snapshot of `objects`; raises `ManifestErrors` for problems between objects.

    `previous` (the last snapshot served) makes allocation sticky: a service, port or pod keeps the value it
    had there when that value is still free, so editing manifests never renumbers what did not change.
    `memo`, kept by a caller that builds again on every change, makes those builds cheaper (same result).
    """
    errors: list[ManifestError] = []
    unique = _without_duplicates(objects, errors)
    kinds = _ByKind(unique)
    proxy_config = next(iter(kinds.of(KubeProxyConfiguration)), KubeProxyConfiguration())
    kubeplane_config = next(iter(kinds.of(KubeplaneConfiguration)), KubeplaneConfiguration())
    pods = kinds.of(Pod)
    nodes = complete_nodes(kinds.of(Node), pods, proxy_config, errors)
    service_cidrs = tuple(sorted(kinds.of(ServiceCIDR), key=lambda c: c.meta.name)) or (
        _default_service_cidr(nodes),
    )
    completed_pods = complete_pods(pods, nodes, previous, errors)
    services = complete_services(
        kinds.of(Service), service_cidrs, kubeplane_config.dns_service_ip, previous, errors, memo
    )
    slices = _explicit_slices(kinds)
    raise_if_any(errors)
    return Cluster(
        services=services.services,
        endpoint_slices=slices,
        pods=completed_pods,
        nodes=nodes,
        namespaces=_namespaces(unique, kinds),
        service_cidrs=service_cidrs,
        proxy_config=proxy_config,
        kubeplane_config=replace(kubeplane_config, dns_service_ip=services.dns_service_ip),
    )


def _default_service_cidr(nodes: Iterable[Node]) -> ServiceCIDR:
    """The API server's default range, plus an IPv6 one when the nodes are dual-stack (an IPv6 podCIDR),
    so a PreferDualStack Service gets both families without the user declaring a ServiceCIDR."""
    dual_stack = any(":" in cidr for node in nodes for cidr in node.pod_cidrs)
    cidrs = (DEFAULT_SERVICE_CIDR, DEFAULT_SERVICE_CIDR_IPV6) if dual_stack else (DEFAULT_SERVICE_CIDR,)
    return ServiceCIDR(ObjectMeta(name=DEFAULT_SERVICE_CIDR_NAME), cidrs)


class _ByKind:
    """The objects grouped by kind in one pass, in their order (completion reads each kind several times,
    on every change the daemon serves)."""

    def __init__(self, objects: Iterable[KubeObject]) -> None:
        self._lists: dict[type, list[KubeObject]] = {}
        for obj in objects:
            self._lists.setdefault(type(obj), []).append(obj)

    def of(self, kind: type[T]) -> list[T]:
        """A new list of the objects of `kind` (KubeObject kinds do not subclass each other)."""
        return cast(list[T], list(self._lists.get(kind, ())))


def _without_duplicates(objects: Iterable[KubeObject], errors: list[ManifestError]) -> list[KubeObject]:
    """The first of each (kind, key); every later one is an error naming where the first was defined."""
    first_by_identity: dict[tuple[str, str], KubeObject] = {}
    for obj in objects:
        kind = type(obj).__name__
        singleton = isinstance(obj, _SINGLETON_KINDS)
        identity = (kind, "" if singleton else obj.meta.key)
        first = first_by_identity.get(identity)
        if first is None:
            first_by_identity[identity] = obj
            continue
        what = f"only one {kind} may be given" if singleton else f"duplicate {kind}"
        place = ErrorPlace.of(obj.meta.source, kind, obj.meta.key)
        errors.append(ManifestError(place, "", f"{what}, also defined at {first.meta.source or '<unknown>'}"))
    return list(first_by_identity.values())


def _explicit_slices(kinds: _ByKind) -> tuple[EndpointSlice, ...]:
    """Slices from manifests, minus those mirrored from legacy Endpoints of a Service that has a selector:
    the mirroring controller skips those, the endpoints controller owns that Service's slices."""
    with_selector = {s.meta.key for s in kinds.of(Service) if s.selector and s.type != "ExternalName"}
    kept = (
        s
        for s in kinds.of(EndpointSlice)
        if not (
            s.meta.labels.get(MIRRORED_BY_LABEL) == MIRRORING_CONTROLLER
            and f"{s.meta.namespace}/{s.service_name}" in with_selector
        )
    )
    return tuple(sorted(kept, key=lambda s: s.meta.key))


def _namespaces(objects: Iterable[KubeObject], kinds: _ByKind) -> tuple[Namespace, ...]:
    given = {obj.meta.name: obj for obj in kinds.of(Namespace)}
    used = {obj.meta.namespace for obj in objects if obj.meta.namespace}
    names = sorted(used | set(given) | {DEFAULT_NAMESPACE, SYSTEM_NAMESPACE})
    return tuple(given.get(name) or Namespace(ObjectMeta(name=name)) for name in names)
