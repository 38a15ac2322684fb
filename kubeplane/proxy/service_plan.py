"""How one service port is proxied on one node: its ServicePortPlan and the planning that builds it.

The per-service half of kubeplane.proxy.plan (which re-exports these names): a service's port plans depend
only on the Service, its EndpointSlices and the node, which is what lets the PlanCache reuse them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from kubeplane.model.objects import EndpointSlice, IPFamily, Node, Protocol, Service, ServicePort
from kubeplane.proxy.endpoints import NO_HINTS, EndpointCategories, EndpointPlan, categorize_endpoints


def ip_family(address: str) -> IPFamily:
    """The family of an address or CIDR (`10.0.0.1`, `fd00::/64`)."""
    return "IPv6" if ":" in address else "IPv4"


@dataclass(frozen=True)
class ServicePortPlan:
    """One proxied (service, port, family) as this node must implement it.

    `cluster_ip` is the service's cluster IP of `family`; `external_ips`, `load_balancer_ips` and
    `load_balancer_source_ranges` are already filtered to `family` (LB ingress with ipMode Proxy is
    left out, as kube-proxy does). `affinity_timeout` is None unless sessionAffinity is ClientIP.
    `external_policy_local` is only true for NodePort/LoadBalancer services with eTP=Local;
    `health_check_node_port` only for LoadBalancer services with eTP=Local.
    `endpoints` holds every known endpoint of the port (sorted by `ip:port`, deduplicated);
    `categories` holds the cluster and local sets chosen from them.
    """

    namespace: str
    name: str
    port_name: str
    protocol: Protocol
    family: IPFamily
    cluster_ip: str
    port: int
    node_port: int | None
    external_ips: tuple[str, ...]
    load_balancer_ips: tuple[str, ...]
    load_balancer_source_ranges: tuple[str, ...]
    affinity_timeout: int | None
    external_policy_local: bool
    internal_policy_local: bool
    health_check_node_port: int | None
    endpoints: tuple[EndpointPlan, ...]
    categories: EndpointCategories

    @property
    def service_key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def name_string(self) -> str:
        """kube-proxy's ServicePortName string: `ns/svc:port`, or `ns/svc` when the port is unnamed."""
        suffix = f":{self.port_name}" if self.port_name else ""
        return f"{self.namespace}/{self.name}{suffix}"

    @property
    def identity(self) -> tuple[str, str, IPFamily]:
        """What tells two plans' entries for the same service port apart: name string, protocol, family."""
        return (self.name_string, self.protocol, self.family)

    @property
    def cluster_endpoints(self) -> tuple[EndpointPlan, ...]:
        """Endpoints for Cluster traffic policies (ready, else serving+terminating; topology applied)."""
        return self.categories.cluster

    @property
    def local_endpoints(self) -> tuple[EndpointPlan, ...]:
        """This node's endpoints for Local traffic policies (empty unless a Local policy applies)."""
        return self.categories.local

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.load_balancer_ips or self.external_ips)

    @property
    def uses_cluster_endpoints(self) -> bool:
        return self._sets_used[0]

    @property
    def uses_local_endpoints(self) -> bool:
        return self._sets_used[1]

    @property
    def _sets_used(self) -> tuple[bool, bool]:
        return _endpoint_sets_used(
            self.externally_accessible, self.internal_policy_local, self.external_policy_local
        )


def plan_service(svc: Service, slices: tuple[EndpointSlice, ...], node: Node) -> tuple[ServicePortPlan, ...]:
    """The port plans of `svc` on `node`: per family it has a cluster IP of, each port in order."""
    ports: list[ServicePortPlan] = []
    for family in ("IPv4", "IPv6"):
        cluster_ip = next((ip for ip in svc.cluster_ips if ip_family(ip) == family), None)
        if cluster_ip is None:
            continue
        for svc_port in svc.ports:
            ports.append(_plan_service_port(svc, svc_port, family, cluster_ip, slices, node))
    return tuple(ports)


def _plan_service_port(
    svc: Service,
    svc_port: ServicePort,
    family: IPFamily,
    cluster_ip: str,
    slices: Sequence[EndpointSlice],
    node: Node,
) -> ServicePortPlan:
    external_ips = tuple(ip for ip in svc.external_ips if ip_family(ip) == family)
    lb_ips = tuple(
        ing.ip
        for ing in svc.load_balancer_ingress
        if ing.ip and ing.ip_mode != "Proxy" and ip_family(ing.ip) == family
    )
    source_ranges = tuple(
        str(ipaddress.ip_network(r.strip(), strict=False))
        for r in svc.load_balancer_source_ranges
        if r.strip() and ip_family(r) == family
    )
    external_type = svc.type in ("NodePort", "LoadBalancer")
    etp_local = external_type and svc.external_traffic_policy == "Local"
    health_port = svc.health_check_node_port if svc.type == "LoadBalancer" and etp_local else None
    node_port = svc_port.node_port or None
    internal_local = svc.internal_traffic_policy == "Local"
    endpoints = _endpoints_for_port(svc_port, family, slices, node.meta.name)
    uses_cluster, uses_local = _endpoint_sets_used(
        bool(node_port or lb_ips or external_ips), internal_local, etp_local
    )
    return ServicePortPlan(
        namespace=svc.meta.namespace,
        name=svc.meta.name,
        port_name=svc_port.name,
        protocol=svc_port.protocol,
        family=family,
        cluster_ip=cluster_ip,
        port=svc_port.port,
        node_port=node_port,
        external_ips=external_ips,
        load_balancer_ips=lb_ips,
        load_balancer_source_ranges=source_ranges,
        affinity_timeout=svc.session_affinity_timeout if svc.session_affinity == "ClientIP" else None,
        external_policy_local=etp_local,
        internal_policy_local=internal_local,
        health_check_node_port=health_port or None,
        endpoints=endpoints,
        categories=categorize_endpoints(
            endpoints,
            uses_cluster=uses_cluster,
            uses_local=uses_local,
            node_name=node.meta.name,
            zone=node.zone,
        ),
    )


def _endpoint_sets_used(
    externally_accessible: bool, internal_local: bool, external_local: bool
) -> tuple[bool, bool]:
    """Whether a service port routes to its cluster endpoint set, and to its local one: the cluster set
    serves internal traffic under iTP=Cluster and external traffic under eTP=Cluster; the local set the
    Local policies."""
    uses_cluster = not internal_local or (externally_accessible and not external_local)
    uses_local = internal_local or (externally_accessible and external_local)
    return uses_cluster, uses_local


def _endpoints_for_port(
    svc_port: ServicePort, family: IPFamily, slices: Sequence[EndpointSlice], node_name: str
) -> tuple[EndpointPlan, ...]:
    """The endpoints of the slices' port with the same name and protocol, deduplicated by `ip:port`.

    A duplicate keeps the local copy if one exists (kube-proxy's tie-break); slices of the other address
    type and ports without a number are ignored.
    """
    by_address: dict[str, EndpointPlan] = {}
    name, protocol = svc_port.name, svc_port.protocol
    for eps in slices:
        if eps.address_type != family:
            continue
        for ep_port in eps.ports:
            port = ep_port.port
            if ep_port.name != name or ep_port.protocol != protocol or not port:
                continue
            for ep in eps.endpoints:
                if not ep.addresses:
                    continue
                ip = ep.addresses[0]
                # EndpointPlan.address, computed once here: it keys the deduplication and the order.
                address = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
                is_local = ep.node_name == node_name
                if not is_local and address in by_address:
                    continue
                conditions = ep.conditions
                hints = ep.hints
                by_address[address] = EndpointPlan(
                    ip,
                    port,
                    ep.node_name,
                    is_local,
                    conditions.ready is not False,
                    conditions.serving is not False,
                    conditions.terminating is True,
                    frozenset(hints.for_zones) if hints else NO_HINTS,
                    frozenset(hints.for_nodes) if hints else NO_HINTS,
                )
    return tuple([by_address[a] for a in sorted(by_address)])
