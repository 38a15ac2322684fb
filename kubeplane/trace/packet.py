"""The packet explain follows, the node it crosses, and who sent it.

A ruleset alone cannot say which addresses are local (`-m addrtype LOCAL`), which address MASQUERADE picks,
or whether a packet arrives at the node (PREROUTING) or leaves it (OUTPUT): NodeContext carries exactly those
facts, derived from the Cluster for the node being traced, so the walk itself stays pure and cluster-agnostic.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Literal

from kubeplane.model.objects import Cluster, Node

TransportProtocol = Literal["tcp", "udp", "sctp"]
SourceKind = Literal["pod", "node", "external"]
CtState = Literal["NEW", "ESTABLISHED", "RELATED", "INVALID"]

PROTOCOLS: dict[str, TransportProtocol] = {"tcp": "tcp", "udp": "udp", "sctp": "sctp"}
LOOPBACK_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
DEFAULT_SOURCE_PORT = 40000
UPLINK_INTERFACE = "eth0"  # the lab's node uplink (kubeplane.netns.names.NODE_UPLINK_IFNAME)


class UnknownNode(ValueError):
    """The node named for a trace is not in the cluster."""


class BadAddress(ValueError):
    """An address given on the command line is not IP[:PORT][/proto] as required."""


@dataclass(frozen=True)
class Packet:
    """The header fields netfilter rules look at; `mark` is the skb mark (0 when the packet is created)."""

    src: str
    sport: int
    dst: str
    dport: int
    protocol: TransportProtocol = "tcp"
    mark: int = 0

    def with_destination(self, ip: str, port: int) -> Packet:
        return replace(self, dst=ip, dport=port)

    def with_source(self, ip: str) -> Packet:
        return replace(self, src=ip)

    def __str__(self) -> str:
        return f"{self.protocol.upper()} {_join(self.src, self.sport)} -> {_join(self.dst, self.dport)}"


def _join(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclass(frozen=True)
class Interfaces:
    """Interface names for `-i`/`-o` matches; None: our rules never use it, so a match on it is an error."""

    pod_side: str | None = None  # where this node's pods are attached (bridge or veth prefix like "veth+")
    uplink: str | None = None  # towards other nodes and external clients


@dataclass(frozen=True)
class IpSetContents:
    """One ipset as `-m set` sees it: its type (hash:ip, hash:ip,port, hash:ip,port,ip, hash:ip,port,net,
    bitmap:port) and its entries written as `ipset save` does (`10.96.0.1,tcp:80`, `30080`)."""

    set_type: str
    entries: frozenset[str]


@dataclass(frozen=True)
class NodeContext:
    """What the walk needs to know about the node besides its rules."""

    name: str
    local_addresses: tuple[str, ...]  # addrtype LOCAL; loopback is always local
    pod_cidrs: tuple[str, ...] = ()
    masquerade_address: str = ""  # the source MASQUERADE writes for traffic leaving through the uplink
    pod_side_address: str = ""  # the source MASQUERADE writes for traffic to this node's pods; "" = same
    interfaces: Interfaces = Interfaces()
    ipsets: dict[str, IpSetContents] = field(default_factory=dict)  # IPVS mode's ipsets
    bridged_pods: bool = False  # pods hang off a bridge, so their packets match `physdev --physdev-is-in`

    def is_local(self, ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        if any(address in network for network in LOOPBACK_NETWORKS):
            return True
        return any(address == ipaddress.ip_address(local) for local in self.local_addresses)

    def is_on_pod_side(self, ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        return any(address in ipaddress.ip_network(cidr, strict=False) for cidr in self.pod_cidrs)

    def masquerade_source(self, dst: str) -> str:
        """The address MASQUERADE picks: the one on the interface the route to `dst` leaves through."""
        if self.is_on_pod_side(dst) and self.pod_side_address:
            return self.pod_side_address
        return self.masquerade_address

    def out_interface(self, dst: str) -> str | None:
        if self.is_local(dst):
            return "lo"
        return self.interfaces.pod_side if self.is_on_pod_side(dst) else self.interfaces.uplink


@dataclass(frozen=True)
class SourceInfo:
    """Who sent the packet, as the JSON contract reports it, and in words for the text header."""

    ip: str
    kind: SourceKind
    description: str
    on_this_node: bool  # the node itself sent it: the packet starts at OUTPUT instead of PREROUTING
    pod_key: str | None = None  # `namespace/name` when a pod sent it
    pod_node: str | None = None  # the node that pod runs on


def find_node(cluster: Cluster, node_name: str) -> Node:
    for node in cluster.nodes:
        if node.meta.name == node_name:
            return node
    known = ", ".join(node.meta.name for node in cluster.nodes) or "none"
    raise UnknownNode(f"node {node_name!r} is not in the cluster (nodes: {known})")


def node_context(cluster: Cluster, node_name: str) -> NodeContext:
    """One cluster node as the lab builds it (kubeplane.netns.plan): InternalIP/ExternalIP on the uplink
    `eth0`, which MASQUERADE writes for traffic leaving the node, and the first host of each podCIDR on every
    pod veth (the pods' gateway), which MASQUERADE writes for traffic to this node's pods. Both are LOCAL."""
    node = find_node(cluster, node_name)
    addresses = tuple(a.address for a in node.addresses if a.type in ("InternalIP", "ExternalIP"))
    primary = node.internal_ips[0] if node.internal_ips else (addresses[0] if addresses else "")
    gateways = tuple(str(next(ipaddress.ip_network(c, strict=False).hosts())) for c in node.pod_cidrs)
    return NodeContext(
        name=node_name,
        local_addresses=addresses + gateways,
        pod_cidrs=node.pod_cidrs,
        masquerade_address=primary,
        pod_side_address=gateways[0] if gateways else "",
        interfaces=Interfaces(pod_side=None, uplink=UPLINK_INTERFACE),
    )


def classify_source(cluster: Cluster, node_name: str, ip: str) -> SourceInfo:
    """pod (a pod's IP, hostNetwork pods excluded), node (a node's address), or external (anything else)."""
    for node in cluster.nodes:
        if ip in (a.address for a in node.addresses):
            here = node.meta.name == node_name
            where = "this node" if here else f"node {node.meta.name}"
            return SourceInfo(ip, "node", f"{where} ({ip})", on_this_node=here)
    for pod in cluster.pods:
        if not pod.host_network and ip in pod.pod_ips:
            where = "this node" if pod.node_name == node_name else f"node {pod.node_name or '?'}"
            description = f"pod {pod.meta.key} on {where}"
            return SourceInfo(ip, "pod", description, False, pod_key=pod.meta.key, pod_node=pod.node_name)
    return SourceInfo(ip, "external", f"external client {ip}", on_this_node=False)


def parse_endpoint(text: str, default_port: int | None) -> tuple[str, int, TransportProtocol]:
    """`IP[:PORT][/tcp|udp|sctp]` (IPv6 as `[IP]:PORT`) into (ip, port, protocol); tcp by default."""
    address, _, proto = text.partition("/")
    protocol = PROTOCOLS.get(proto.lower() or "tcp")
    if protocol is None:
        raise BadAddress(f"{text!r}: protocol must be tcp, udp or sctp")
    host, port_text = address, ""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif address.count(":") == 1:
        host, _, port_text = address.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise BadAddress(f"{text!r}: {host!r} is not an IP address") from None
    if not port_text:
        if default_port is None:
            raise BadAddress(f"{text!r}: a port is required (IP:PORT)")
        return host, default_port, protocol
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadAddress(f"{text!r}: port {port_text!r} is not 1-65535")
    return host, int(port_text), protocol
