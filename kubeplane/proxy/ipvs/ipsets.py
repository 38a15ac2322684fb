"""kube-proxy's IPVS-mode ipsets: names, types, comments, and the entry strings `ipset` reads and prints.

The comments are part of the observable output: kube-proxy puts each set's comment on the iptables rule that
matches it, so they are reproduced as kube-proxy spells them. IPv6 sets are named `KUBE-6-...` (cut to the
31 characters ipset allows), so both families' sets can live in one node.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from kubeplane.model.objects import IPFamily
from kubeplane.proxy.ipvs.state import IpSet

LOOP_BACK = "KUBE-LOOP-BACK"
CLUSTER_IP = "KUBE-CLUSTER-IP"
EXTERNAL_IP = "KUBE-EXTERNAL-IP"
EXTERNAL_IP_LOCAL = "KUBE-EXTERNAL-IP-LOCAL"
LOAD_BALANCER = "KUBE-LOAD-BALANCER"
LOAD_BALANCER_FW = "KUBE-LOAD-BALANCER-FW"
LOAD_BALANCER_LOCAL = "KUBE-LOAD-BALANCER-LOCAL"
LOAD_BALANCER_SOURCE_IP = "KUBE-LOAD-BALANCER-SOURCE-IP"
LOAD_BALANCER_SOURCE_CIDR = "KUBE-LOAD-BALANCER-SOURCE-CIDR"
NODE_PORT_TCP = "KUBE-NODE-PORT-TCP"
NODE_PORT_LOCAL_TCP = "KUBE-NODE-PORT-LOCAL-TCP"
NODE_PORT_UDP = "KUBE-NODE-PORT-UDP"
NODE_PORT_LOCAL_UDP = "KUBE-NODE-PORT-LOCAL-UDP"
NODE_PORT_SCTP = "KUBE-NODE-PORT-SCTP-HASH"
NODE_PORT_LOCAL_SCTP = "KUBE-NODE-PORT-LOCAL-SCTP-HASH"
HEALTH_CHECK_NODE_PORT = "KUBE-HEALTH-CHECK-NODE-PORT"
IPVS_IPS = "KUBE-IPVS-IPS"

HASH_IP = "hash:ip"
HASH_IP_PORT = "hash:ip,port"
HASH_IP_PORT_IP = "hash:ip,port,ip"
HASH_IP_PORT_NET = "hash:ip,port,net"
BITMAP_PORT = "bitmap:port"
MAX_SET_NAME = 31


@dataclass(frozen=True)
class IpSetKind:
    """A set kube-proxy always creates: its IPv4 name, type and comment."""

    name: str
    set_type: str
    comment: str


# kube-proxy's ipsetInfo, in its order.
IPSET_KINDS = (
    IpSetKind(
        LOOP_BACK, HASH_IP_PORT_IP, "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"
    ),
    IpSetKind(CLUSTER_IP, HASH_IP_PORT, "Kubernetes service cluster ip + port for masquerade purpose"),
    IpSetKind(
        EXTERNAL_IP, HASH_IP_PORT, "Kubernetes service external ip + port for masquerade and filter purpose"
    ),
    IpSetKind(
        EXTERNAL_IP_LOCAL,
        HASH_IP_PORT,
        "Kubernetes service external ip + port with externalTrafficPolicy=local",
    ),
    IpSetKind(LOAD_BALANCER, HASH_IP_PORT, "Kubernetes service lb portal"),
    IpSetKind(
        LOAD_BALANCER_FW,
        HASH_IP_PORT,
        "Kubernetes service load balancer ip + port for load balancer with sourceRange",
    ),
    IpSetKind(
        LOAD_BALANCER_LOCAL,
        HASH_IP_PORT,
        "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
    ),
    IpSetKind(
        LOAD_BALANCER_SOURCE_IP,
        HASH_IP_PORT_IP,
        "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
    ),
    IpSetKind(
        LOAD_BALANCER_SOURCE_CIDR,
        HASH_IP_PORT_NET,
        "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
    ),
    IpSetKind(NODE_PORT_TCP, BITMAP_PORT, "Kubernetes nodeport TCP port for masquerade purpose"),
    IpSetKind(
        NODE_PORT_LOCAL_TCP, BITMAP_PORT, "Kubernetes nodeport TCP port with externalTrafficPolicy=local"
    ),
    IpSetKind(NODE_PORT_UDP, BITMAP_PORT, "Kubernetes nodeport UDP port for masquerade purpose"),
    IpSetKind(
        NODE_PORT_LOCAL_UDP, BITMAP_PORT, "Kubernetes nodeport UDP port with externalTrafficPolicy=local"
    ),
    IpSetKind(
        NODE_PORT_SCTP,
        HASH_IP_PORT,
        "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
    ),
    IpSetKind(
        NODE_PORT_LOCAL_SCTP,
        HASH_IP_PORT,
        "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
    ),
    IpSetKind(HEALTH_CHECK_NODE_PORT, BITMAP_PORT, "Kubernetes health check node port"),
    IpSetKind(IPVS_IPS, HASH_IP, "Addresses on the ipvs interface"),
)
_KIND_BY_NAME = {kind.name: kind for kind in IPSET_KINDS}


def family_set_name(name: str, family: IPFamily) -> str:
    """The kernel name of kube-proxy's set `name` for `family`: `KUBE-6-...` for IPv6."""
    if family == "IPv4":
        return name
    return name.replace("KUBE-", "KUBE-6-", 1)[:MAX_SET_NAME]


def set_comment(name: str) -> str:
    """The comment of kube-proxy's set `name` (its IPv4 name)."""
    return _KIND_BY_NAME[name].comment


def canonical_ip(address: str) -> str:
    """An address as ipset prints it (compressed IPv6)."""
    return str(ipaddress.ip_address(address))


def ip_port_entry(ip: str, protocol: str, port: int) -> str:
    """A hash:ip,port entry: `10.96.0.1,tcp:80`."""
    return f"{canonical_ip(ip)},{protocol.lower()}:{port}"


def ip_port_ip_entry(ip: str, protocol: str, port: int, ip2: str) -> str:
    """A hash:ip,port,ip entry: `10.244.1.2,tcp:8080,10.244.1.2`."""
    return f"{ip_port_entry(ip, protocol, port)},{canonical_ip(ip2)}"


def ip_port_net_entry(ip: str, protocol: str, port: int, cidr: str) -> str:
    """A hash:ip,port,net entry; a host-sized net prints as a bare address, as `ipset save` shows it."""
    network = ipaddress.ip_network(cidr, strict=False)
    net = str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)
    return f"{ip_port_entry(ip, protocol, port)},{net}"


def build_ipsets(family: IPFamily, entries_by_name: dict[str, set[str]]) -> tuple[IpSet, ...]:
    """All of kube-proxy's sets for `family`, in its order, each holding the entries given under its
    IPv4 name (sorted, so equal states compare equal)."""
    return tuple(
        IpSet(
            name=family_set_name(kind.name, family),
            set_type=kind.set_type,
            family=family,
            comment=kind.comment,
            entries=tuple(sorted(entries_by_name.get(kind.name, ()), key=_entry_sort_key)),
        )
        for kind in IPSET_KINDS
    )


def _entry_sort_key(entry: str) -> tuple[int, str]:
    """Ports sort numerically in bitmap sets; everything else by text."""
    return (int(entry), "") if entry.isdigit() else (0, entry)
