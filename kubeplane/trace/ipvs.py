"""IPVS as explain sees it: the node's virtual servers and the choice IPVS makes among their real servers.

In IPVS mode every service address is bound on the node (kube-ipvs0), so a packet to it is routed to INPUT;
after filter INPUT, IPVS's LOCAL_IN hook finds the virtual server for (protocol, address, port), picks a
real server, rewrites the destination (masquerading forward) and sends the packet out through the OUTPUT
hooks and POSTROUTING. A virtual server without real servers answers ICMP port unreachable.

Which real server a scheduler picks depends on state explain does not have (rr's position, lc's counts), so
every real server is an alternative with an equal share; with persistence (ClientIP affinity) and a known
sticky endpoint, only that one.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubeplane.trace.packet import Packet


@dataclass(frozen=True)
class VirtualServerEntry:
    protocol: str  # tcp, udp, sctp
    address: str
    port: int
    scheduler: str
    persistence: int | None  # seconds, for ClientIP affinity
    real_servers: tuple[tuple[str, int], ...]
    service: str  # the service port name string, `ns/svc:port`

    def __str__(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.protocol.upper()} {address}:{self.port}"


@dataclass(frozen=True)
class IpvsTable:
    """The node's virtual servers by (protocol, address, port)."""

    servers: dict[tuple[str, str, int], VirtualServerEntry]

    def lookup(self, packet: Packet) -> VirtualServerEntry | None:
        return self.servers.get((packet.protocol, packet.dst, packet.dport))


def schedule(entry: VirtualServerEntry, sticky_endpoint: str | None) -> list[tuple[float, tuple[str, int]]]:
    """The real servers IPVS can pick, each with its share of the packets."""
    servers = entry.real_servers
    if sticky_endpoint and entry.persistence is not None:
        sticky = [rs for rs in servers if _endpoint(rs) == sticky_endpoint]
        if sticky:
            return [(1.0, sticky[0])]
    return [(1.0 / len(servers), rs) for rs in servers]


def _endpoint(server: tuple[str, int]) -> str:
    ip, port = server
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
