"""The per-node proxy plan: everything a proxy backend needs to program one node, and nothing else.

`plan_node(cluster, node_name)` is pure. It does what kube-proxy's service and endpoint change trackers
plus CategorizeEndpoints do, for both IP families at once: each ServicePortPlan carries a `family`, and
the node and config facts keep both families so a backend picks its own (`NodePlan.ports_for(family)`).
Backends render plans; the iptables proxier diffs consecutive plans per service port to decide what a
partial sync rewrites, which is why every value here is a frozen, comparable dataclass.
`plan_node_lazily` gives the same plan in two parts, the node facts at once and the service ports as
they are read, so a full sync can start its restore before the whole plan exists. Per-service planning
and ServicePortPlan live in kubeplane.proxy.service_plan (re-exported here).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from kubeplane.model.objects import Cluster, EndpointSlice, IPFamily, KubeProxyConfiguration, Node, Service
from kubeplane.proxy.service_plan import ServicePortPlan, ip_family, plan_service

__all__ = [
    "LazyPortPlans",
    "NodePlan",
    "PlanCache",
    "ServicePortPlan",
    "UnknownNodeError",
    "ip_family",
    "plan_node",
    "plan_node_lazily",
]


class UnknownNodeError(LookupError):
    """plan_node was asked for a node the cluster does not have."""


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
    ports = plan_service(svc, slices, node)
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
        self._ordering: PortOrdering | None = None
        self.replanned: tuple[str, ...] = ()

    def service_ports(self, cluster: Cluster, node: Node) -> tuple[ServicePortPlan, ...]:
        """Every proxied service port of `cluster` on `node`, sorted by (family, name, protocol);
        `replanned` then lists the keys of the services that were planned afresh."""
        return self.lazy_service_ports(cluster, node).all()

    def ordering(self, services: tuple[Service, ...]) -> PortOrdering:
        """The proxied services and their ports' order, kept while the cluster's services are the same
        (a tuple comparison that stops at identity for each unchanged Service: an endpoint change costs
        no sorting)."""
        if self._ordering is None or self._ordering.services != services:
            self._ordering = _port_ordering(services)
        return self._ordering

    def lazy_service_ports(self, cluster: Cluster, node: Node) -> LazyPortPlans:
        """The same ports as `service_ports`, each service planned only when its first port is read."""
        config = cluster.proxy_config
        if not (node == self._node and config == self._config):
            self._services = {}
        self._node, self._config = node, config
        return LazyPortPlans(self, cluster, node)


class LazyPortPlans:
    """A node's service port plans in their final order, each service planned when first reached.

    A full sync streams its rules to iptables-restore as it renders them; planning every service before
    the first rule is written kept restore waiting for the whole plan. The order is computed from the
    Service objects alone (the (family, name, protocol) keys each port's plan will carry), so ports can be
    handed out in the final order before the services after them are planned. `all()` plans whatever is
    left and then records the round in the PlanCache (`replanned`, the entries kept for the next round).
    """

    def __init__(self, cache: PlanCache, cluster: Cluster, node: Node) -> None:
        self._cache = cache
        self._node = node
        self._previous = cache._services
        self._slices: dict[tuple[str, str], list[EndpointSlice]] = {}
        for eps in cluster.endpoint_slices:
            service_name = eps.service_name
            if service_name is not None:
                self._slices.setdefault((eps.meta.namespace, service_name), []).append(eps)
        ordering = cache.ordering(cluster.services)
        self._services = ordering.proxied
        self._order = ordering.order
        self._entries: list[_PlannedService | None] = [None] * len(self._services)
        self._replanned: set[int] = set()
        self._all: tuple[ServicePortPlan, ...] | None = None

    def family(self, family: IPFamily) -> Iterator[ServicePortPlan]:
        """The ports of `family` in order, planning services as they are reached."""
        entry = self._entry
        for key, index, position in self._order:
            if key[0] == family:
                yield entry(index).ordered[position][1]

    def all(self) -> tuple[ServicePortPlan, ...]:
        """Every port in order; the first call also stores this round in the cache."""
        if self._all is None:
            entry = self._entry
            self._all = tuple(entry(index).ordered[position][1] for _, index, position in self._order)
            entries = [entry(index) for index in range(len(self._services))]
            self._cache._services = {(e.service.meta.namespace, e.service.meta.name): e for e in entries}
            self._cache.replanned = tuple(
                svc.meta.key for index, svc in enumerate(self._services) if index in self._replanned
            )
        return self._all

    def _entry(self, index: int) -> _PlannedService:
        entry = self._entries[index]
        if entry is not None:
            return entry
        svc = self._services[index]
        key = (svc.meta.namespace, svc.meta.name)
        slices = tuple(self._slices.get(key, ()))
        entry = self._previous.get(key)
        # Tuple equality checks identity before equality, element by element: unchanged slices are free.
        if entry is None or not ((svc is entry.service or svc == entry.service) and slices == entry.slices):
            entry = _planned(svc, slices, self._node)
            self._replanned.add(index)
        self._entries[index] = entry
        return entry


@dataclass(frozen=True)
class PortOrdering:
    """Of a cluster's `services`, those the proxy serves (`proxied`) and every port of theirs as
    ((family, name, protocol), index in `proxied`, position in that service's plans), sorted."""

    services: tuple[Service, ...]
    proxied: tuple[Service, ...]
    order: tuple[tuple[tuple[str, str, str], int, int], ...]


def _port_ordering(services: tuple[Service, ...]) -> PortOrdering:
    proxied = tuple(
        svc for svc in services if not (svc.headless or svc.type == "ExternalName" or not svc.cluster_ips)
    )
    order: list[tuple[tuple[str, str, str], int, int]] = []
    for index, svc in enumerate(proxied):
        prefix = f"{svc.meta.namespace}/{svc.meta.name}"
        position = 0
        for family in _service_families(svc):
            for svc_port in svc.ports:
                name = f"{prefix}:{svc_port.name}" if svc_port.name else prefix
                order.append(((family, name, svc_port.protocol), index, position))
                position += 1
    return PortOrdering(services, proxied, tuple(sorted(order)))


def _service_families(svc: Service) -> tuple[IPFamily, ...]:
    """The families the service has a cluster IP of, in the order its port plans are made."""
    return tuple(f for f in ("IPv4", "IPv6") if any(ip_family(ip) == f for ip in svc.cluster_ips))


def plan_node(cluster: Cluster, node_name: str, cache: PlanCache | None = None) -> NodePlan:
    """Build the proxy plan of `node_name`; raises UnknownNodeError if the cluster has no such node.

    With a `cache` (one per node, kept between calls) only services whose objects changed are planned
    again; the result is the same as without it.
    """
    facts, ports = plan_node_lazily(cluster, node_name, cache)
    return replace(facts, service_ports=ports.all())


def plan_node_lazily(
    cluster: Cluster, node_name: str, cache: PlanCache | None = None
) -> tuple[NodePlan, LazyPortPlans]:
    """The node's plan without its service ports (node and configuration facts only), and those ports
    planned on demand (see LazyPortPlans); `replace(facts, service_ports=ports.all())` is plan_node's
    result. Raises UnknownNodeError if the cluster has no such node."""
    node = next((n for n in cluster.nodes if n.meta.name == node_name), None)
    if node is None:
        raise UnknownNodeError(f"node {node_name!r} is not in the cluster")
    config = cluster.proxy_config
    ports = (cache if cache is not None else PlanCache()).lazy_service_ports(cluster, node)
    cluster_cidrs = tuple(c.strip() for c in config.cluster_cidr.split(",") if c.strip())
    facts = NodePlan(
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
        service_ports=(),
    )
    return facts, ports


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
