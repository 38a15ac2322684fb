"""The kube-ipvs0 dummy interface of a node namespace: the VIPs live there so the kernel treats packets to
them as local and IPVS (hooked on LOCAL_IN) sees them. Like kube-proxy, the interface is left down: the
kernel installs local routes for its addresses anyway, and a down interface never answers ARP for them.

Addresses are added and removed in batches of packed RTM_NEWADDR/RTM_DELADDR requests (10k VIPs one
pyroute2 call at a time take seconds); pyroute2 serves the rest (lookup, create, list).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable

from pyroute2 import IPRoute

from kubeplane.proxy.ipvs.netlink import open_netlink_socket, pyroute2_socket
from kubeplane.proxy.ipvs.wire import parse_failures

DUMMY_DEVICE = "kube-ipvs0"
NETLINK_ROUTE = 0
RTM_NEWADDR, RTM_DELADDR = 20, 21
IFA_ADDRESS, IFA_LOCAL = 1, 2
NLM_F_REQUEST, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x200, 0x400
BATCH_SIZE = 1000
log = logging.getLogger(__name__)


class AddressChangeFailed(OSError):
    """The kernel refused to bind or unbind a kube-ipvs0 address."""


def address_message(kind: int, index: int, address: str, seq: int) -> bytes:
    """An RTM_NEWADDR / RTM_DELADDR request for a host-sized `address` on interface `index`, no ack."""
    ip = ipaddress.ip_address(address)
    family, prefix = (socket.AF_INET, 32) if ip.version == 4 else (socket.AF_INET6, 128)
    attr_len = 4 + len(ip.packed)
    attrs = b"".join(struct.pack("=HH", attr_len, kind_) + ip.packed for kind_ in (IFA_LOCAL, IFA_ADDRESS))
    body = struct.pack("=BBBBI", family, prefix, 0, 0, index) + attrs
    flags = NLM_F_REQUEST | (NLM_F_CREATE | NLM_F_EXCL if kind == RTM_NEWADDR else 0)
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


class DummyInterface:
    """kube-ipvs0 in `netns`; created on first use. Use as a context manager."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._ipr = IPRoute(use_socket=pyroute2_socket(netns, NETLINK_ROUTE))
        self._index: int | None = None
        self._seq = 1

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> DummyInterface:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ensure(self) -> int:
        """The interface index, creating the dummy if it does not exist."""
        if self._index is None:
            found = self._ipr.link_lookup(ifname=DUMMY_DEVICE)
            if not found:
                self._ipr.link("add", ifname=DUMMY_DEVICE, kind="dummy")
                found = self._ipr.link_lookup(ifname=DUMMY_DEVICE)
                log.info("created interface netns=%s device=%s", self.netns, DUMMY_DEVICE)
            self._index = found[0]
        return self._index

    def addresses(self) -> set[str]:
        """The addresses bound to kube-ipvs0 now."""
        index = self.ensure()
        return {msg.get_attr("IFA_ADDRESS") for msg in self._ipr.get_addr(index=index)}

    def bind(self, addresses: Iterable[str]) -> int:
        """Add host-sized addresses (already bound ones are fine); returns how many were asked for."""
        return self._change(RTM_NEWADDR, list(addresses), ignored=errno.EEXIST)

    def unbind(self, addresses: Iterable[str]) -> int:
        """Remove addresses (already gone ones are fine); returns how many were asked for."""
        return self._change(RTM_DELADDR, list(addresses), ignored=errno.EADDRNOTAVAIL)

    def _change(self, kind: int, addresses: list[str], ignored: int) -> int:
        if not addresses:
            return 0
        index = self.ensure()
        with open_netlink_socket(self.netns, NETLINK_ROUTE) as sock:
            for start in range(0, len(addresses), BATCH_SIZE):
                chunk = addresses[start : start + BATCH_SIZE]
                first = self._seq
                self._seq += len(chunk)
                sock.send(b"".join(address_message(kind, index, a, first + i) for i, a in enumerate(chunk)))
                while True:
                    try:
                        data = sock.recv(1 << 20)
                    except BlockingIOError:
                        break
                    refused = [f for f in parse_failures(data) if f.errno != ignored]
                    if refused:
                        reason = errno.errorcode.get(refused[0].errno, str(refused[0].errno))
                        where = f"{DUMMY_DEVICE} in netns {self.netns}"
                        raise AddressChangeFailed(
                            f"{where}: {len(refused)} address changes refused: {reason}"
                        )
        return len(addresses)

    def delete(self) -> None:
        """Remove kube-ipvs0 (and so every VIP) if it exists."""
        found = self._ipr.link_lookup(ifname=DUMMY_DEVICE)
        if found:
            self._ipr.link("del", index=found[0])
        self._index = None
