"""Stable allocation of addresses and ports, the way a fresh API server would hand them out, but repeatable.

A value is chosen by hashing the owner's key (`ns/name`, or `ns/name:port/proto`) into the free range and
probing linearly on collision. So a service's clusterIP depends on its own name, not on how many other
services exist: adding one service moves no other's IP (unless two keys hash to the same slot; then the
earlier one in sorted order keeps it). Values given in manifests, or held in a previous snapshot, are
reserved first.
"""

from __future__ import annotations

import hashlib
import ipaddress

from kubeplane.model.formats import IPAddress, IPNetwork


class PoolExhausted(Exception):
    """Every value of the range is taken."""


def stable_hash(key: str) -> int:
    """A hash that is the same in every process (Python's `hash()` of a str is salted per run)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


class PortPool:
    """Ports `low..high` (inclusive): the nodePort range."""

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high
        self._taken: set[int] = set()

    def contains(self, port: int) -> bool:
        return self.low <= port <= self.high

    def reserve(self, port: int) -> None:
        self._taken.add(port)

    def is_taken(self, port: int) -> bool:
        return port in self._taken

    def allocate(self, key: str) -> int:
        size = self.high - self.low + 1
        start = stable_hash(key) % size
        for step in range(size):
            port = self.low + (start + step) % size
            if port not in self._taken:
                self._taken.add(port)
                return port
        raise PoolExhausted(f"no free port in {self.low}-{self.high}")


class AddressPool:
    """Host addresses of one network from `first_offset` on; IPv4 excludes the broadcast address."""

    def __init__(self, network: IPNetwork, first_offset: int = 1) -> None:
        self.network = network
        self._first = first_offset
        last = network.num_addresses - (2 if network.version == 4 else 1)
        self._count = max(0, last - first_offset + 1)
        # As integers: one pool holds one family, and hashing an ipaddress object is slow (a hex string
        # per call), which counts when every change the daemon serves reserves every Service's address.
        self._taken: set[int] = set()

    def contains(self, address: IPAddress) -> bool:
        return address.version == self.network.version and address in self.network

    def reserve(self, address: IPAddress) -> None:
        self._taken.add(int(address))

    def is_taken(self, address: IPAddress) -> bool:
        return int(address) in self._taken

    def allocate(self, key: str) -> IPAddress:
        if self._count <= 0:
            raise PoolExhausted(f"{self.network} has no host addresses")
        start = stable_hash(key) % self._count
        base = int(self.network.network_address) + self._first
        for step in range(min(self._count, 1 << 20)):
            number = base + (start + step) % self._count
            if number not in self._taken:
                self._taken.add(number)
                return ipaddress.ip_address(number)
        raise PoolExhausted(f"no free address in {self.network}")


def nth_address(network: IPNetwork, n: int) -> IPAddress:
    """The `n`th address of a network (10.96.0.0/12, 10 -> 10.96.0.10)."""
    return ipaddress.ip_address(int(network.network_address) + n)
