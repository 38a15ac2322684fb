"""Endpoint facts and kube-proxy's CategorizeEndpoints, as pure functions over frozen values.

Every proxy mode routes a service port to one of two endpoint sets: the "cluster" set (used by
Cluster traffic policies) and the "local" set (Local policies). Choosing them is where readiness,
terminating fallback and topology hints meet, so it lives here once and every backend consumes the
result through the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

PREFER_SAME_NODE = "PreferSameNode"
PREFER_SAME_ZONE = "PreferSameZone"
NO_HINTS: frozenset[str] = frozenset()


class EndpointPlan(NamedTuple):
    """One backend address of a service port as this node sees it.

    `ready`/`serving`/`terminating` already read absent conditions as kube-proxy does: ready and
    serving unless stated false, terminating only when stated true. A NamedTuple rather than a frozen
    dataclass because plans hold 100k of them and a tuple is several times cheaper to build.
    """

    ip: str
    port: int
    node: str | None
    is_local: bool
    ready: bool
    serving: bool
    terminating: bool
    zone_hints: frozenset[str] = NO_HINTS
    node_hints: frozenset[str] = NO_HINTS

    @property
    def address(self) -> str:
        """`ip:port` (`[ip]:port` for IPv6): kube-proxy's endpoint string, used in chain hashes and DNAT."""
        # A colon can only appear in an IPv6 address; parsing every address costs too much at 100k endpoints.
        if ":" in self.ip:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class EndpointCategories:
    """The result of categorisation for one service port.

    `has_any` is kube-proxy's hasAnyEndpoints: some endpoint anywhere in the cluster is usable (ready,
    or serving+terminating when nothing is ready), which decides REJECT versus DROP.
    `reachable` is the union of the two sets: the endpoints that get a KUBE-SEP chain on this node.
    """

    cluster: tuple[EndpointPlan, ...]
    local: tuple[EndpointPlan, ...]
    reachable: tuple[EndpointPlan, ...]
    has_any: bool


def topology_mode(endpoints: tuple[EndpointPlan, ...], node_name: str, zone: str | None) -> str:
    """Which hint kind applies: PreferSameNode, PreferSameZone, or "" (ignore hints).

    Hints count only when every ready endpoint carries one of that kind and at least one of them names
    this node (or its zone); node hints win over zone hints. Non-ready endpoints are not looked at.
    """
    all_node_hints = all_zone_hints = True
    node_hit = zone_hit = False
    for endpoint in endpoints:
        if not endpoint.ready:
            continue
        if not endpoint.node_hints:
            all_node_hints = False
        elif node_name in endpoint.node_hints:
            node_hit = True
        if not endpoint.zone_hints:
            all_zone_hints = False
        elif zone is not None and zone in endpoint.zone_hints:
            zone_hit = True
    if all_node_hints and node_hit:
        return PREFER_SAME_NODE
    if all_zone_hints and zone_hit:
        return PREFER_SAME_ZONE
    return ""


def _available_for_topology(endpoint: EndpointPlan, mode: str, node_name: str, zone: str | None) -> bool:
    if mode == PREFER_SAME_NODE:
        return node_name in endpoint.node_hints
    if mode == PREFER_SAME_ZONE:
        return zone is not None and zone in endpoint.zone_hints
    return True


def categorize_endpoints(
    endpoints: tuple[EndpointPlan, ...],
    *,
    uses_cluster: bool,
    uses_local: bool,
    node_name: str,
    zone: str | None,
) -> EndpointCategories:
    """kube-proxy's CategorizeEndpoints: ready endpoints first, else serving+terminating ones.

    The cluster set honours topology hints; the local set does not (hints are about spreading over the
    cluster). Both fall back to serving+terminating endpoints only when no ready endpoint exists in that
    set's scope (cluster-wide, or on this node). Input order is kept, so callers that pass endpoints
    sorted by address get sorted sets back.
    """
    cluster: tuple[EndpointPlan, ...] = ()
    has_any = False
    if uses_cluster:
        mode = topology_mode(endpoints, node_name, zone)
        cluster = tuple(
            ep for ep in endpoints if ep.ready and _available_for_topology(ep, mode, node_name, zone)
        )
        if not cluster:
            cluster = tuple(ep for ep in endpoints if ep.serving and ep.terminating)
        has_any = bool(cluster)
    if not uses_local:
        return EndpointCategories(cluster=cluster, local=(), reachable=cluster, has_any=has_any)

    local_ready = local_terminating = False
    for ep in endpoints:
        if ep.ready:
            has_any = True
            local_ready = local_ready or ep.is_local
        elif ep.serving and ep.terminating:
            has_any = True
            local_terminating = local_terminating or ep.is_local
    local: tuple[EndpointPlan, ...] = ()
    if local_ready:
        local = tuple(ep for ep in endpoints if ep.is_local and ep.ready)
    elif local_terminating:
        local = tuple(ep for ep in endpoints if ep.is_local and ep.serving and ep.terminating)

    if not uses_cluster:
        reachable = local
    elif not local:
        reachable = cluster
    else:
        chosen = {ep.address for ep in cluster} | {ep.address for ep in local}
        reachable = tuple(ep for ep in endpoints if ep.address in chosen)
    return EndpointCategories(cluster=cluster, local=local, reachable=reachable, has_any=has_any)
