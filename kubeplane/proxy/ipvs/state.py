"""The IPVS state of one node and family, as frozen values: what the desired-state computation produces,
what the text renderer prints and what the reconciler compares with the kernel.

Virtual and real servers are identified the way the kernel identifies them (protocol, address, port), so a
diff between desired and current state is a comparison of keys and attributes, never of whole objects.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from kubeplane.model.objects import IPFamily, Protocol

# Linux IPVS service flags (include/uapi/linux/ip_vs.h).
FLAG_PERSISTENT = 0x0001
FLAG_HASHED = 0x0002  # set by the kernel on every service; never requested
FLAG_SCHED_MH_PORT = 0x0010  # "sh-port" / "mh-port": hash the source port too; kube-proxy sets it for mh
# Real-server forwarding methods: kube-proxy always masquerades (NAT), as the pods' replies come back here.
FORWARD_MASQ = 0
DEFAULT_WEIGHT = 1


def host_port(address: str, port: int) -> str:
    """`ip:port`, or `[ip]:port` for IPv6, as ipvsadm prints addresses."""
    if ipaddress.ip_address(address).version == 6:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


@dataclass(frozen=True, order=True)
class VirtualServerKey:
    """What the kernel keys a virtual server by."""

    protocol: Protocol
    address: str
    port: int

    @property
    def family(self) -> IPFamily:
        return "IPv6" if ":" in self.address else "IPv4"

    def __str__(self) -> str:
        return f"{self.protocol} {host_port(self.address, self.port)}"


@dataclass(frozen=True)
class VirtualServer:
    """One IPVS virtual server. `persistence_timeout` is set for ClientIP session affinity (seconds);
    `bind` says whether the address belongs on the kube-ipvs0 dummy (cluster, external and LB IPs do,
    node IPs do not: they already are local)."""

    key: VirtualServerKey
    scheduler: str
    persistence_timeout: int | None = None
    source_port_hash: bool = False
    bind: bool = True

    @property
    def flags(self) -> int:
        flags = FLAG_PERSISTENT if self.persistence_timeout is not None else 0
        if self.source_port_hash:
            flags |= FLAG_SCHED_MH_PORT
        return flags

    @property
    def timeout(self) -> int:
        return self.persistence_timeout or 0

    def same_settings(self, other: VirtualServer) -> bool:
        """True when the kernel copy needs no update (the bind flag is not a kernel attribute)."""
        return (self.scheduler, self.flags, self.timeout) == (other.scheduler, other.flags, other.timeout)


@dataclass(frozen=True, order=True)
class RealServer:
    """One backend of a virtual server, always forwarded by masquerading."""

    address: str
    port: int
    weight: int = DEFAULT_WEIGHT

    @property
    def endpoint(self) -> tuple[str, int]:
        return (self.address, self.port)

    def __str__(self) -> str:
        return host_port(self.address, self.port)


@dataclass(frozen=True)
class VirtualService:
    """A virtual server with its real servers (sorted by address), and the service port it implements."""

    server: VirtualServer
    real_servers: tuple[RealServer, ...]
    service: str  # kube-proxy's ServicePortName string, `ns/svc:port`

    @property
    def key(self) -> VirtualServerKey:
        return self.server.key


@dataclass(frozen=True)
class IpSet:
    """One kube-proxy ipset: its kernel name and type, and the entries it must hold (sorted)."""

    name: str
    set_type: str
    family: IPFamily
    comment: str
    entries: tuple[str, ...]

    @property
    def is_empty(self) -> bool:
        return not self.entries

    @property
    def create_options(self) -> str:
        """The options `ipset create` gets, as kube-proxy passes them."""
        if self.set_type == "bitmap:port":
            return "range 0-65535"
        inet = "inet6" if self.family == "IPv6" else "inet"
        return f"family {inet} hashsize 1024 maxelem 65536"


@dataclass(frozen=True)
class BlockedNodeAccess:
    """An LB IP:port whose source ranges do not include the node: the node itself must not reach it."""

    address: str
    protocol: str  # lower-case, as `-m ipvs --vproto` takes it
    port: int


@dataclass(frozen=True)
class IpvsState:
    """Everything the IPVS mode programs for one family: virtual services, kube-ipvs0 addresses, ipsets."""

    family: IPFamily
    services: tuple[VirtualService, ...]
    bound_addresses: tuple[str, ...]
    ipsets: tuple[IpSet, ...]
    blocked_node_access: tuple[BlockedNodeAccess, ...]

    def ipset(self, name: str) -> IpSet:
        """The set called `name` (its family's name: KUBE-6-... for IPv6); KeyError if there is none."""
        for ipset in self.ipsets:
            if ipset.name == name:
                return ipset
        raise KeyError(name)
