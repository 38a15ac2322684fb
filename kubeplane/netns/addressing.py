"""Address arithmetic for the lab plan (pure): one family's address, the underlay prefix, free hosts."""

from __future__ import annotations

import ipaddress

from kubeplane.model.formats import IPNetwork


def address_of_family(addresses: tuple[str, ...], version: int) -> str | None:
    """The first address of IP `version` (4 or 6) in `addresses`."""
    for address in addresses:
        if ipaddress.ip_address(address).version == version:
            return address
    return None


def cidr_of_family(cidrs: tuple[str, ...], version: int) -> str | None:
    """The first CIDR of IP `version` in `cidrs`."""
    for cidr in cidrs:
        if ipaddress.ip_network(cidr, strict=False).version == version:
            return cidr
    return None


def first_host(cidr: str | None) -> str | None:
    """The first host address of `cidr` (the pod gateway of a podCIDR)."""
    return None if cidr is None else str(next(ipaddress.ip_network(cidr, strict=False).hosts()))


def covering_network(ips: list[str], longest: int) -> IPNetwork:
    """The longest prefix (at most `longest`) that holds every address of `ips` (all of one family)."""
    prefix = longest
    while prefix > 0:
        network = ipaddress.ip_network(f"{ips[0]}/{prefix}", strict=False)
        if all(ipaddress.ip_address(ip) in network for ip in ips):
            return network
        prefix -= 1
    return ipaddress.ip_network(f"{ips[0]}/0", strict=False)


def first_free_host(network: IPNetwork, taken: list[str]) -> str | None:
    """The first host address of `network` not in `taken`."""
    used = set(taken)
    return next((str(host) for host in network.hosts() if str(host) not in used), None)
