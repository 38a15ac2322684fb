"""The resource records the cluster zone holds, as plain frozen values independent of any wire library.

Owner names are not part of a record: the zone maps a lowercased owner name to its records, and answers are
written under the name exactly as the client asked it (CoreDNS answers with the question's spelling).
Names are absolute, lowercase and end with a dot.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import IntEnum


class RecordType(IntEnum):
    """The query types the zone answers (values are the IANA type codes)."""

    A = 1
    NS = 2
    CNAME = 5
    SOA = 6
    PTR = 12
    TXT = 16
    AAAA = 28
    SRV = 33
    ANY = 255


@dataclass(frozen=True)
class Address:
    ip: str


@dataclass(frozen=True)
class Target:
    """The single domain name of a CNAME, PTR or NS record."""

    name: str


@dataclass(frozen=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Soa:
    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


RecordData = Address | Target | Srv | Text | Soa


@dataclass(frozen=True)
class Record:
    rtype: RecordType
    ttl: int
    data: RecordData


@dataclass(frozen=True)
class NamedRecord:
    """A record with its owner name, as it appears in a response section."""

    name: str
    record: Record


def address_record(ip: str, ttl: int) -> Record:
    """An A or AAAA record, chosen by the address family of `ip`."""
    parsed = ipaddress.ip_address(ip)
    rtype = RecordType.A if parsed.version == 4 else RecordType.AAAA
    return Record(rtype, ttl, Address(str(parsed)))


def fqdn(name: str) -> str:
    """`name` lowercased and made absolute."""
    lowered = name.lower()
    return lowered if lowered.endswith(".") else lowered + "."


def reverse_name(ip: str) -> str:
    """The in-addr.arpa. or ip6.arpa. name whose PTR record maps back from `ip`."""
    return ipaddress.ip_address(ip).reverse_pointer + "."


def endpoint_label(address: str, hostname: str | None) -> str:
    """The label CoreDNS gives an endpoint: its hostname, else its address with '.' or ':' turned into '-'."""
    if hostname:
        return hostname.lower()
    if "." in address:
        return address.replace(".", "-")
    return address.replace(":", "-").lower()


def is_reverse(name: str) -> bool:
    return name.endswith(".in-addr.arpa.") or name.endswith(".ip6.arpa.")
