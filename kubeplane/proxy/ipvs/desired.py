"""The desired IPVS state of one node and family, computed from the shared proxy plan (pure).

This is kube-proxy's IPVS syncProxyRules minus the kernel calls: one virtual server per cluster IP, external
IP, load-balancer IP and node IP x nodePort of every service port, the real servers chosen from the plan's
endpoint categories, and the entries of every ipset the small iptables rule set matches on.

Endpoint choice follows kube-proxy's IPVS syncEndpoint, which differs from the iptables mode in one place:
when a Local policy finds no local endpoint it falls back to the cluster set (empty unless the service port
also uses cluster endpoints), so pods on a node without a local backend can still reach the service.
"""

from __future__ import annotations

import ipaddress

from kubeplane.model.objects import IPFamily
from kubeplane.proxy.endpoints import EndpointPlan
from kubeplane.proxy.ipvs import ipsets as names
from kubeplane.proxy.ipvs.ipsets import build_ipsets, ip_port_entry, ip_port_ip_entry, ip_port_net_entry
from kubeplane.proxy.ipvs.state import (
    BlockedNodeAccess,
    IpvsState,
    RealServer,
    VirtualServer,
    VirtualServerKey,
    VirtualService,
)
from kubeplane.proxy.plan import NodePlan, ServicePortPlan, ip_family

DEFAULT_SCHEDULER = "rr"
# IPVS schedulers that hash the source; kube-proxy sets the source-port flag for Maglev.
MAGLEV_SCHEDULER = "mh"
NODE_PORT_SETS = {
    "TCP": (names.NODE_PORT_TCP, names.NODE_PORT_LOCAL_TCP),
    "UDP": (names.NODE_PORT_UDP, names.NODE_PORT_LOCAL_UDP),
    "SCTP": (names.NODE_PORT_SCTP, names.NODE_PORT_LOCAL_SCTP),
}


def node_port_addresses(plan: NodePlan, family: IPFamily) -> tuple[str, ...]:
    """The node addresses that get a virtual server per nodePort.

    kube-proxy's default (no nodePortAddresses) is every local address but kube-ipvs0's; a node here has
    its InternalIPs. With nodePortAddresses, the node IPs inside the given CIDRs (`primary`: all of them).
    Loopback never gets one: IPVS cannot serve 127.0.0.1 the way the iptables mode's route_localnet does.
    """
    node_ips = tuple(ip for ip in plan.node_ips if ip_family(ip) == family)
    if not plan.node_port_addresses:
        return node_ips
    selected: list[str] = []
    for entry in plan.node_port_addresses:
        if entry == "primary":
            picked = node_ips
        elif ip_family(entry) == family:
            network = ipaddress.ip_network(entry, strict=False)
            picked = tuple(ip for ip in node_ips if ipaddress.ip_address(ip) in network)
        else:
            picked = ()
        selected.extend(ip for ip in picked if ip not in selected)
    return tuple(selected)


def real_servers(sp: ServicePortPlan, only_local: bool) -> tuple[RealServer, ...]:
    """The real servers of one of the service port's virtual servers (kube-proxy's syncEndpoint)."""
    chosen: tuple[EndpointPlan, ...] = sp.categories.cluster
    if only_local and sp.categories.local:
        chosen = sp.categories.local
    return tuple(sorted({RealServer(address=ep.ip, port=ep.port) for ep in chosen}))


class _StateBuilder:
    """Accumulates virtual services and set entries over the service ports of one family."""

    def __init__(self, plan: NodePlan, family: IPFamily, scheduler: str) -> None:
        self.plan = plan
        self.family = family
        self.scheduler = scheduler or DEFAULT_SCHEDULER
        self.node_ips = frozenset(ip for ip in plan.node_ips if ip_family(ip) == family)
        self.node_port_ips = node_port_addresses(plan, family)
        self.services: dict[VirtualServerKey, VirtualService] = {}
        self.entries: dict[str, set[str]] = {}
        self.blocked: list[BlockedNodeAccess] = []

    def add_entry(self, set_name: str, entry: str) -> None:
        self.entries.setdefault(set_name, set()).add(entry)

    def add_virtual_service(
        self, sp: ServicePortPlan, address: str, port: int, *, bind: bool, local: bool
    ) -> None:
        key = VirtualServerKey(protocol=sp.protocol, address=address, port=port)
        if key in self.services:
            return  # two service ports claiming one address:port: the first (in plan order) keeps it
        server = VirtualServer(
            key=key,
            scheduler=self.scheduler,
            persistence_timeout=sp.affinity_timeout,
            source_port_hash=self.scheduler == MAGLEV_SCHEDULER,
            bind=bind,
        )
        self.services[key] = VirtualService(
            server=server, real_servers=real_servers(sp, local), service=sp.name_string
        )

    def add_service_port(self, sp: ServicePortPlan) -> None:
        proto = sp.protocol.lower()
        for ep in sp.endpoints:
            if ep.is_local:
                self.add_entry(names.LOOP_BACK, ip_port_ip_entry(ep.ip, proto, ep.port, ep.ip))
        self.add_entry(names.CLUSTER_IP, ip_port_entry(sp.cluster_ip, proto, sp.port))
        self.add_virtual_service(sp, sp.cluster_ip, sp.port, bind=True, local=sp.internal_policy_local)

        for ip in sp.external_ips:
            set_name = names.EXTERNAL_IP_LOCAL if sp.external_policy_local else names.EXTERNAL_IP
            self.add_entry(set_name, ip_port_entry(ip, proto, sp.port))
            self.add_virtual_service(
                sp, ip, sp.port, bind=ip not in self.node_ips, local=sp.external_policy_local
            )

        for ip in sp.load_balancer_ips:
            self.add_load_balancer_ip(sp, ip, proto)

        if sp.node_port and self.node_port_ips:
            self.add_node_port(sp, sp.node_port, proto)

        if sp.health_check_node_port:
            self.add_entry(names.HEALTH_CHECK_NODE_PORT, str(sp.health_check_node_port))

    def add_load_balancer_ip(self, sp: ServicePortPlan, ip: str, proto: str) -> None:
        entry = ip_port_entry(ip, proto, sp.port)
        self.add_entry(names.LOAD_BALANCER, entry)
        if sp.external_policy_local:
            self.add_entry(names.LOAD_BALANCER_LOCAL, entry)
        if sp.load_balancer_source_ranges:
            self.add_entry(names.LOAD_BALANCER_FW, entry)
            node_ip = self.plan.node_ip(self.family)
            allow_from_node = False
            for cidr in sp.load_balancer_source_ranges:
                self.add_entry(names.LOAD_BALANCER_SOURCE_CIDR, ip_port_net_entry(ip, proto, sp.port, cidr))
                network = ipaddress.ip_network(cidr, strict=False)
                if node_ip is not None and ipaddress.ip_address(node_ip) in network:
                    allow_from_node = True
            if allow_from_node:
                self.add_entry(names.LOAD_BALANCER_SOURCE_IP, ip_port_ip_entry(ip, proto, sp.port, ip))
            else:
                self.blocked.append(BlockedNodeAccess(address=ip, protocol=proto, port=sp.port))
        self.add_virtual_service(
            sp, ip, sp.port, bind=ip not in self.node_ips, local=sp.external_policy_local
        )

    def add_node_port(self, sp: ServicePortPlan, node_port: int, proto: str) -> None:
        masq_set, local_set = NODE_PORT_SETS[sp.protocol]
        if sp.protocol == "SCTP":
            entries = [ip_port_entry(ip, proto, node_port) for ip in self.node_port_ips]
        else:
            entries = [str(node_port)]
        for entry in entries:
            self.add_entry(masq_set, entry)
            if sp.external_policy_local:
                self.add_entry(local_set, entry)
        for ip in self.node_port_ips:
            self.add_virtual_service(sp, ip, node_port, bind=False, local=sp.external_policy_local)

    def build(self) -> IpvsState:
        services = tuple(self.services[key] for key in sorted(self.services))
        bound = sorted(
            {vs.key.address for vs in services if vs.server.bind}, key=lambda a: ipaddress.ip_address(a)
        )
        self.entries[names.IPVS_IPS] = set(bound)
        return IpvsState(
            family=self.family,
            services=services,
            bound_addresses=tuple(bound),
            ipsets=build_ipsets(self.family, self.entries),
            blocked_node_access=tuple(self.blocked),
        )


def desired_ipvs_state(plan: NodePlan, family: IPFamily, scheduler: str = DEFAULT_SCHEDULER) -> IpvsState:
    """What the node's IPVS tables, kube-ipvs0 addresses and ipsets must hold for `family`."""
    builder = _StateBuilder(plan, family, scheduler)
    for sp in plan.ports_for(family):
        builder.add_service_port(sp)
    return builder.build()
