"""The per-node proxy plan: everything a proxy backend needs to program one node, and nothing else.

`plan_node(cluster, node_name)` is pure. It does what kube-proxy's service and endpoint change trackers
plus CategorizeEndpoints do, for both IP families at once: each ServicePortPlan carries a `family`, and
the node and config facts keep both families so a backend picks its own (`NodePlan.ports_for(family)`).
Backends render plans; the iptables proxier diffs consecutive plans per service port to decide what a
partial sync rewrites, which is why every value here is a frozen, comparable dataclass.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace

from kubeplane.model.objects import (
    Cluster,
    EndpointSlice,
    IPFamily,
    KubeProxyConfiguration,
    Node,
    Protocol,
    Service,
    ServicePort,
)
from kubeplane.proxy.endpoints import NO_HINTS, EndpointCategories, EndpointPlan, categorize_endpoints


class UnknownNodeError(LookupError):
    """plan_node was asked for a node the cluster does not have."""


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
        external_cluster = self.externally_accessible and not self.external_policy_local
        return not self.internal_policy_local or external_cluster

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_policy_local or (self.externally_accessible and self.external_policy_local)


@dataclass(frozen=True, repr=False)
class NodePlan:
    """One node's facts, the proxy configuration that applies to it, and its service ports.

    `cluster_cidrs` is KubeProxyConfiguration.clusterCIDR split on commas (one per family);
    `local_cidrs` are the CIDRs that detect-local uses for this node (cluster CIDRs for ClusterCIDR mode,
    the node's podCIDRs for NodeCIDR mode, empty when detection is not available); `local_interface` is
    what the interface modes match instead, as an iptables interface (`cbr0` for BridgeInterface, `veth+`
    for InterfaceNamePrefix; "" otherwise). `if_local` / `if_not_local` turn either into rule arguments.
    `node_port_addresses` empty means "all local addresses" (kube-proxy's `--dst-type LOCAL` default).
    """

    node_name: str
    node_ips: tuple[str, ...]
    labels: dict[str, str]
    zone: str | None
    pod_cidrs: tuple[str, ...]
    cluster_cidrs: tuple[str, ...]
    local_cidrs: tuple[str, ...]
    local_interface: str
    node_port_addresses: tuple[str, ...]
    masquerade_all: bool
    masquerade_bit: int
    service_ports: tuple[ServicePortPlan, ...]

    @property
    def cluster_cidr(self) -> str:
        """KubeProxyConfiguration.clusterCIDR as written (comma-separated, one CIDR per family)."""
        return ",".join(self.cluster_cidrs)

    def ports_for(self, family: IPFamily) -> tuple[ServicePortPlan, ...]:
        return tuple(sp for sp in self.service_ports if sp.family == family)

    def node_ip(self, family: IPFamily) -> str | None:
        """The node's first InternalIP of `family` (kube-proxy's nodeIP, used by LB source-range checks)."""
        return next((ip for ip in self.node_ips if ip_family(ip) == family), None)

    def local_cidr(self, family: IPFamily) -> str | None:
        return next((c for c in self.local_cidrs if ip_family(c) == family), None)

    def if_local(self, family: IPFamily) -> str | None:
        """kube-proxy's LocalTrafficDetector.IfLocal: the iptables arguments matching traffic from this
        node's pods (`-s CIDR`, `-i BRIDGE`, `-i PREFIX+`); None when detection is off for `family`."""
        if self.local_interface:
            return f"-i {self.local_interface}"
        cidr = self.local_cidr(family)
        return None if cidr is None else f"-s {cidr}"

    def if_not_local(self, family: IPFamily) -> str | None:
        """LocalTrafficDetector.IfNotLocal: the negation of `if_local`."""
        local = self.if_local(family)
        return None if local is None else f"! {local}"

    @property
    def masquerade_mark(self) -> str:
        """The mark bit as iptables-save prints it (`0x4000` for bit 14)."""
        return hex(1 << self.masquerade_bit)

    def __repr__(self) -> str:
        # Short on purpose: the full text of 100k endpoints is no use to read, and asyncio.run formats the
        # repr of the main task's result (a SyncResult holding the plan) when it restores SIGINT handling,
        # which cost a second of CPU at 10k services.
        return f"NodePlan(node_name={self.node_name!r}, service_ports=<{len(self.service_ports)}>)"


@dataclass(frozen=True)
class _PlannedService:
    """One service's port plans on a node (with the key they are sorted by), and the objects they were
    planned from."""

    service: Service
    slices: tuple[EndpointSlice, ...]
    ordered: tuple[tuple[tuple[str, str, str], ServicePortPlan], ...]  # (family, name, protocol), plan


def _planned(svc: Service, slices: tuple[EndpointSlice, ...], node: Node) -> _PlannedService:
    ports = _plan_service(svc, slices, node)
    return _PlannedService(svc, slices, tuple(((sp.family, sp.name_string, sp.protocol), sp) for sp in ports))


class PlanCache:
    """Per-service port plans of one node, reused while the service, its slices and the node are unchanged.

    A change touches one service among thousands; planning all of them again for each change is what made
    a change's latency grow with the cluster. A service's port plans depend only on the Service, the
    EndpointSlices labelled for it and the node's name and zone, so an entry is reused when those inputs
    are equal to the ones it was planned from (checked by identity first: the store hands on unchanged
    objects as the same instances, which makes the check cheap). A different node object or proxy
    configuration drops every entry. Mutable on purpose: the private memory of one node's proxier.
    """

    def __init__(self) -> None:
        self._node: Node | None = None
        self._config: KubeProxyConfiguration | None = None
        self._services: dict[tuple[str, str], _PlannedService] = {}
        self.replanned: tuple[str, ...] = ()

    def service_ports(self, cluster: Cluster, node: Node) -> tuple[ServicePortPlan, ...]:
        """Every proxied service port of `cluster` on `node`, sorted by (family, name, protocol);
        `replanned` then lists the keys of the services that were planned afresh."""
        config = cluster.proxy_config
        if not (node == self._node and config == self._config):
            self._services = {}
        self._node, self._config = node, config
        slices_by_service: dict[tuple[str, str], list[EndpointSlice]] = {}
        for eps in cluster.endpoint_slices:
            service_name = eps.service_name
            if service_name is not None:
                slices_by_service.setdefault((eps.meta.namespace, service_name), []).append(eps)
        previous, current = self._services, {}
        replanned: list[str] = []
        ordered: list[tuple[tuple[str, str, str], ServicePortPlan]] = []
        for svc in cluster.services:
            if svc.headless or svc.type == "ExternalName" or not svc.cluster_ips:
                continue
            key = (svc.meta.namespace, svc.meta.name)
            slices = tuple(slices_by_service.get(key, ()))
            entry = previous.get(key)
            # Tuple equality checks identity before equality, element by element: unchanged slices are free.
            if entry is None or not (
                (svc is entry.service or svc == entry.service) and slices == entry.slices
            ):
                entry = _planned(svc, slices, node)
                replanned.append(svc.meta.key)
            current[key] = entry
            ordered.extend(entry.ordered)
        self._services = current
        self.replanned = tuple(replanned)
        ordered.sort(key=lambda item: item[0])
        return tuple(sp for _, sp in ordered)


def _plan_service(svc: Service, slices: tuple[EndpointSlice, ...], node: Node) -> tuple[ServicePortPlan, ...]:
    ports: list[ServicePortPlan] = []
    for family in ("IPv4", "IPv6"):
        cluster_ip = next((ip for ip in svc.cluster_ips if ip_family(ip) == family), None)
        if cluster_ip is None:
            continue
        for svc_port in svc.ports:
            ports.append(_plan_service_port(svc, svc_port, family, cluster_ip, slices, node))
    return tuple(ports)


def plan_node(cluster: Cluster, node_name: str, cache: PlanCache | None = None) -> NodePlan:
    """Build the proxy plan of `node_name`; raises UnknownNodeError if the cluster has no such node.

    With a `cache` (one per node, kept between calls) only services whose objects changed are planned
    again; the result is the same as without it.
    """
    node = next((n for n in cluster.nodes if n.meta.name == node_name), None)
    if node is None:
        raise UnknownNodeError(f"node {node_name!r} is not in the cluster")
    config = cluster.proxy_config
    ports = (cache if cache is not None else PlanCache()).service_ports(cluster, node)
    cluster_cidrs = tuple(c.strip() for c in config.cluster_cidr.split(",") if c.strip())
    return NodePlan(
        node_name=node.meta.name,
        node_ips=node.internal_ips,
        labels=dict(node.meta.labels),
        zone=node.zone,
        pod_cidrs=node.pod_cidrs,
        cluster_cidrs=cluster_cidrs,
        local_cidrs=_local_cidrs(config, cluster_cidrs, node),
        local_interface=_local_interface(config),
        node_port_addresses=config.node_port_addresses,
        masquerade_all=config.masquerade_all,
        masquerade_bit=config.masquerade_bit,
        service_ports=ports,
    )


def _local_interface(config: KubeProxyConfiguration) -> str:
    if config.detect_local_mode == "BridgeInterface":
        return config.detect_local_bridge_interface
    if config.detect_local_mode == "InterfaceNamePrefix" and config.detect_local_interface_name_prefix:
        return config.detect_local_interface_name_prefix + "+"
    return ""


def _local_cidrs(
    config: KubeProxyConfiguration, cluster_cidrs: tuple[str, ...], node: Node
) -> tuple[str, ...]:
    if config.detect_local_mode == "ClusterCIDR":
        return cluster_cidrs
    if config.detect_local_mode == "NodeCIDR":
        return node.pod_cidrs
    return ()


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
    endpoints = _endpoints_for_port(svc_port, family, slices, node.meta.name)
    draft = ServicePortPlan(
        namespace=svc.meta.namespace,
        name=svc.meta.name,
        port_name=svc_port.name,
        protocol=svc_port.protocol,
        family=family,
        cluster_ip=cluster_ip,
        port=svc_port.port,
        node_port=svc_port.node_port or None,
        external_ips=external_ips,
        load_balancer_ips=lb_ips,
        load_balancer_source_ranges=source_ranges,
        affinity_timeout=svc.session_affinity_timeout if svc.session_affinity == "ClientIP" else None,
        external_policy_local=etp_local,
        internal_policy_local=svc.internal_traffic_policy == "Local",
        health_check_node_port=health_port or None,
        endpoints=endpoints,
        categories=EndpointCategories(cluster=(), local=(), reachable=(), has_any=False),
    )
    categories = categorize_endpoints(
        endpoints,
        uses_cluster=draft.uses_cluster_endpoints,
        uses_local=draft.uses_local_endpoints,
        node_name=node.meta.name,
        zone=node.zone,
    )
    return replace(draft, categories=categories)


def _endpoints_for_port(
    svc_port: ServicePort, family: IPFamily, slices: Sequence[EndpointSlice], node_name: str
) -> tuple[EndpointPlan, ...]:
    """The endpoints of the slices' port with the same name and protocol, deduplicated by `ip:port`.

    A duplicate keeps the local copy if one exists (kube-proxy's tie-break); slices of the other address
    type and ports without a number are ignored.
    """
    by_address: dict[str, EndpointPlan] = {}
    for eps in slices:
        if eps.address_type != family:
            continue
        for ep_port in eps.ports:
            if ep_port.name != svc_port.name or ep_port.protocol != svc_port.protocol or not ep_port.port:
                continue
            for ep in eps.endpoints:
                if not ep.addresses:
                    continue
                conditions = ep.conditions
                is_local = ep.node_name == node_name
                hints = ep.hints
                plan = EndpointPlan(
                    ep.addresses[0],
                    ep_port.port,
                    ep.node_name,
                    is_local,
                    conditions.ready is not False,
                    conditions.serving is not False,
                    conditions.terminating is True,
                    frozenset(hints.for_zones) if hints else NO_HINTS,
                    frozenset(hints.for_nodes) if hints else NO_HINTS,
                )
                if plan.address not in by_address or is_local:
                    by_address[plan.address] = plan
    return tuple(by_address[a] for a in sorted(by_address))
