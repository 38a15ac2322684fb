"""Answer one question from a Zone: pure, shared by the server's slow path, the answer table and the CLI.

Rcode rules (CoreDNS's kubernetes plugin, RFC 2308 for the negative answers):
- a name with records but none of the asked type: NOERROR, empty answer, the zone SOA in authority (NODATA);
- a name that exists without records (the apex's children `svc`/`pod`, an existing namespace): NODATA;
- anything else under the cluster domain, including names in namespaces that do not exist: NXDOMAIN + SOA;
- a reverse name the zone does not hold, and any name outside the domain: not ours (`None`), so the server
  forwards it, as CoreDNS's default Corefile falls through from in-addr.arpa/ip6.arpa to `forward`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from kubeplane.dns.records import (
    NamedRecord,
    Record,
    RecordType,
    Srv,
    Target,
    address_record,
    is_reverse,
)
from kubeplane.dns.zone import Zone

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
MAX_CNAME_CHAIN = 8


@dataclass(frozen=True)
class Answer:
    """A response's content. `chase` names a CNAME target outside the zone still to be resolved upstream."""

    rcode: int
    answer: tuple[NamedRecord, ...] = ()
    authority: tuple[NamedRecord, ...] = ()
    additional: tuple[NamedRecord, ...] = ()
    chase: str | None = None


def in_zone(zone: Zone, name: str) -> bool:
    """Whether `name` (lowercase, absolute) is ours to answer rather than to forward."""
    if name == zone.origin or name.endswith("." + zone.origin):
        return True
    return is_reverse(name) and name in zone.records


def lookup(zone: Zone, qname: str, qtype: int) -> Answer | None:
    """The answer for (`qname`, `qtype`), records owned by `qname` exactly as spelled; None if not ours."""
    owner = qname if qname.endswith(".") else qname + "."
    key = owner.lower()
    if not in_zone(zone, key):
        return None
    records = zone.records.get(key)
    if records is None:
        if key in zone.empty_names:
            return _negative(zone, key, NOERROR)
        pod = _pod_record(zone, key)
        if pod is None:
            return _negative(zone, key, NXDOMAIN)
        records = (pod,)
    return _positive(zone, owner, key, records, qtype)


def _positive(zone: Zone, owner: str, key: str, records: tuple[Record, ...], qtype: int) -> Answer:
    answer: list[NamedRecord] = []
    chase: str | None = None
    for _ in range(MAX_CNAME_CHAIN):
        matching = [r for r in records if qtype in (r.rtype, RecordType.ANY)]
        cname = next((r for r in records if r.rtype is RecordType.CNAME), None)
        if matching or cname is None:
            answer.extend(NamedRecord(owner, r) for r in matching)
            break
        answer.append(NamedRecord(owner, cname))
        if not isinstance(cname.data, Target):
            break
        owner = key = cname.data.name
        if not in_zone(zone, key):
            chase = key
            break
        next_records = zone.records.get(key)
        if next_records is None:
            break
        records = next_records
    if not answer:
        return _negative(zone, key, NOERROR)
    return Answer(NOERROR, tuple(answer), (), _additional(zone, answer), chase)


def _additional(zone: Zone, answer: list[NamedRecord]) -> tuple[NamedRecord, ...]:
    """Addresses of SRV and NS targets the zone holds, as CoreDNS puts them in the additional section."""
    extra: list[NamedRecord] = []
    for named in answer:
        data = named.record.data
        if isinstance(data, Srv):
            target = data.target
        elif named.record.rtype is RecordType.NS and isinstance(data, Target):
            target = data.name
        else:
            continue
        for record in zone.records.get(target, ()):
            item = NamedRecord(target, record)
            if record.rtype in (RecordType.A, RecordType.AAAA) and item not in extra:
                extra.append(item)
    return tuple(extra)


def _negative(zone: Zone, key: str, rcode: int) -> Answer:
    if key == zone.origin or key.endswith("." + zone.origin):
        soa_owner = zone.origin
    else:
        soa_owner = "in-addr.arpa." if key.endswith(".in-addr.arpa.") else "ip6.arpa."
    return Answer(rcode, authority=(NamedRecord(soa_owner, zone.soa),))


def _pod_record(zone: Zone, key: str) -> Record | None:
    """`<ip-with-dashes>.<namespace>.pod.<domain>` per the zone's pods mode (CoreDNS `pods` option)."""
    if zone.pods_mode == "disabled" or key == zone.origin:
        return None
    labels = key[: -len(zone.origin) - 1].split(".")
    if len(labels) != 3 or labels[2] != "pod" or labels[1] not in zone.namespaces:
        return None
    pod_label, namespace = labels[0], labels[1]
    if pod_label.count("-") == 3 and "--" not in pod_label:
        text = pod_label.replace("-", ".")
    else:
        text = pod_label.replace("-", ":")
    if "%" in text:
        return None
    try:
        ip = str(ipaddress.ip_address(text))
    except ValueError:
        return None
    if zone.pods_mode == "verified" and (namespace, ip) not in zone.pod_addresses:
        return None
    return address_record(ip, zone.ttl)
