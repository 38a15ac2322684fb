"""Build the cluster DNS zone from one Cluster snapshot: a pure function, no I/O, no clock.

The records follow the Kubernetes DNS-Based Service Discovery specification (schema 1.1.0) and, where the
specification leaves room, what CoreDNS's kubernetes plugin answers:
- a ClusterIP service has A/AAAA records only when it declares at least one port, a headless service only
  when it has at least one endpoint (otherwise the name does not exist);
- every endpoint of any service is reachable as `<label>.<svc>.<ns>.svc.<domain>`, the label being the
  endpoint's hostname or its address with '.' or ':' replaced by '-';
- SRV records: `<svc>...` lists every port, `_<port>._<proto>.<svc>...` the named one; the A query of a
  `_port._proto` name returns the addresses (CoreDNS does); weights are floor(100 / number of records);
- PTR: a service IP maps to the service; otherwise an endpoint IP maps to every endpoint name it has;
- wildcard labels ("*", "any") are ordinary labels, as in CoreDNS since 1.9: they find nothing.
Pod names (`a-b-c-d.<ns>.pod.<domain>`) are computed on demand by `kubeplane.dns.lookup`, since in the
`insecure` mode every well-formed address has one.

Every owner name has exactly one contributor: the apex, one service (the names under its own name), or one
IP's reverse name. `kubeplane.dns.zone_builder` relies on that to rebuild only what a change touches; the
functions here are the pieces both it and `build_zone` assemble. Orders are canonical (slices by name, PTR
targets sorted) so that the same cluster gives the same zone however it was reached.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kubeplane.dns.records import (
    Record,
    RecordType,
    Soa,
    Srv,
    Target,
    Text,
    address_record,
    endpoint_label,
    fqdn,
    reverse_name,
)
from kubeplane.model.objects import (
    DEFAULT_SERVICE_CIDR,
    Cluster,
    EndpointPort,
    EndpointSlice,
    KubeplaneConfiguration,
    Service,
)

DNS_SCHEMA_VERSION = "1.1.0"
DNS_VERSION_TTL = 28800  # CoreDNS serves dns-version with this fixed TTL
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 7200, 1800, 86400
SOA_MAX_TTL = 300
# Namespaces every cluster has, whether or not a manifest names them.
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

NameRecords = dict[str, tuple[Record, ...]]
ServiceKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Zone:
    """Everything needed to answer a question about the cluster domain or a cluster IP's reverse name."""

    origin: str
    ttl: int
    soa: Record
    records: Mapping[str, tuple[Record, ...]]
    empty_names: frozenset[str]  # names that exist but hold no records (NODATA, not NXDOMAIN)
    namespaces: frozenset[str]
    pods_mode: str
    pod_addresses: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (namespace, ip)


@dataclass(frozen=True)
class ServedEndpoint:
    ip: str
    label: str
    ports: tuple[EndpointPort, ...]


@dataclass(frozen=True)
class ServiceContribution:
    """What one service puts in the zone: the names under its own name, and what its IPs add to PTRs."""

    records: NameRecords
    cluster_ips: tuple[str, ...]  # each gets a PTR to the service (unless another service claims it first)
    endpoint_names: Mapping[str, tuple[str, ...]]  # endpoint IP -> its names under this service


class _RecordCollector:
    """Accumulates records per owner name, dropping exact duplicates and keeping first-seen order."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[Record]] = {}

    def add(self, name: str, record: Record) -> None:
        records = self.by_name.setdefault(name, [])
        if record not in records:
            records.append(record)

    def finish(self) -> NameRecords:
        """Freeze, giving each SRV record its CoreDNS weight (equal shares of 100, at least 1)."""
        frozen: NameRecords = {}
        for name, records in self.by_name.items():
            srv_count = sum(1 for r in records if r.rtype is RecordType.SRV)
            weight = max(1, 100 // srv_count) if srv_count else 0
            frozen[name] = tuple(
                Record(r.rtype, r.ttl, Srv(r.data.priority, weight, r.data.port, r.data.target))
                if isinstance(r.data, Srv)
                else r
                for r in records
            )
        return frozen


def build_zone(cluster: Cluster, serial: int = 0) -> Zone:
    """The zone for `cluster`; `serial` becomes the SOA serial (the server passes the time of the change)."""
    config = cluster.kubeplane_config
    origin, ttl = fqdn(config.cluster_domain), config.dns_ttl
    soa, records = apex_records(config, dns_service_ips(cluster), serial)
    slices_by_service: dict[ServiceKey, list[EndpointSlice]] = {}
    for endpoint_slice in cluster.endpoint_slices:
        key = slice_service(endpoint_slice)
        if key is not None:
            slices_by_service.setdefault(key, []).append(endpoint_slice)
    service_ips: dict[str, set[ServiceKey]] = {}
    endpoint_names: dict[str, set[str]] = {}
    for service in cluster.services:
        key = service_key(service)
        contribution = service_contribution(service, slices_by_service.get(key, ()), origin, ttl)
        records.update(contribution.records)
        for ip in contribution.cluster_ips:
            service_ips.setdefault(ip, set()).add(key)
        for ip, names in contribution.endpoint_names.items():
            endpoint_names.setdefault(ip, set()).update(names)
    for ip in service_ips.keys() | endpoint_names.keys():
        ptrs = ptr_records(ip, service_ips.get(ip, ()), endpoint_names.get(ip, ()), origin, ttl)
        records[reverse_name(ip)] = ptrs
    namespaces = cluster_namespaces(cluster)
    structural = structural_empty_names(origin, namespaces, config.dns_pods_mode)
    return Zone(
        origin=origin,
        ttl=ttl,
        soa=soa,
        records=records,
        empty_names=frozenset(structural - records.keys()),
        namespaces=namespaces,
        pods_mode=config.dns_pods_mode,
        pod_addresses=cluster_pod_addresses(cluster),
    )


def apex_records(
    config: KubeplaneConfiguration, dns_ips: Iterable[str], serial: int
) -> tuple[Record, NameRecords]:
    """The SOA, and the records of the apex, `ns.dns.<domain>` and `dns-version.<domain>`."""
    origin, ttl = fqdn(config.cluster_domain), config.dns_ttl
    soa_ttl = min(ttl, SOA_MAX_TTL)
    soa = Record(
        RecordType.SOA,
        soa_ttl,
        Soa(f"ns.dns.{origin}", f"hostmaster.{origin}", serial, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, soa_ttl),
    )
    collector = _RecordCollector()
    collector.add(origin, soa)
    collector.add(origin, Record(RecordType.NS, ttl, Target(f"ns.dns.{origin}")))
    for ip in dns_ips:
        collector.add(f"ns.dns.{origin}", address_record(ip, ttl))
    collector.add(f"dns-version.{origin}", Record(RecordType.TXT, DNS_VERSION_TTL, Text(DNS_SCHEMA_VERSION)))
    return soa, collector.finish()


def dns_service_ips(cluster: Cluster) -> tuple[str, ...]:
    """The cluster DNS service's addresses: configured, else kube-system/kube-dns's, else CIDR base + 10."""
    configured = cluster.kubeplane_config.dns_service_ip
    if configured:
        return (configured,)
    for service in cluster.services:
        if service.meta.key == "kube-system/kube-dns" and service.cluster_ips:
            return service.cluster_ips
    cidrs = cluster.service_cidrs[0].cidrs if cluster.service_cidrs else (DEFAULT_SERVICE_CIDR,)
    return (str(ipaddress.ip_network(cidrs[0], strict=False).network_address + 10),)


def service_key(service: Service) -> ServiceKey:
    return service.meta.namespace, service.meta.name


def slice_service(endpoint_slice: EndpointSlice) -> ServiceKey | None:
    """The service an EndpointSlice serves (its `kubernetes.io/service-name` label), if any."""
    name = endpoint_slice.service_name
    return (endpoint_slice.meta.namespace, name) if name else None


def service_contribution(
    service: Service, slices: Iterable[EndpointSlice], origin: str, ttl: int
) -> ServiceContribution:
    """The records under `service`'s name and its PTR sources; `slices` are the slices naming it."""
    base = f"{service.meta.name}.{service.meta.namespace}.svc.{origin}"
    collector = _RecordCollector()
    if service.type == "ExternalName":
        if service.external_name and not _is_ip(service.external_name):
            collector.add(base, Record(RecordType.CNAME, ttl, Target(fqdn(service.external_name))))
        return ServiceContribution(collector.finish(), (), {})
    endpoints = _served_endpoints(service, slices)
    _add_service(collector, service, endpoints, base, ttl)
    endpoint_names: dict[str, list[str]] = {}
    for endpoint in endpoints:
        names = endpoint_names.setdefault(endpoint.ip, [])
        if f"{endpoint.label}.{base}" not in names:
            names.append(f"{endpoint.label}.{base}")
    return ServiceContribution(
        collector.finish(), service.cluster_ips, {ip: tuple(names) for ip, names in endpoint_names.items()}
    )


def ptr_records(
    ip: str, service_owners: Iterable[ServiceKey], endpoint_names: Iterable[str], origin: str, ttl: int
) -> tuple[Record, ...]:
    """The PTR records of `ip`'s reverse name: the service owning it as a cluster IP (the first by
    namespace and name, should two claim it), else every endpoint name it has (sorted)."""
    owners = sorted(service_owners)
    if owners:
        namespace, name = owners[0]
        return (Record(RecordType.PTR, ttl, Target(f"{name}.{namespace}.svc.{origin}")),)
    return tuple(Record(RecordType.PTR, ttl, Target(target)) for target in sorted(set(endpoint_names)))


def structural_empty_names(origin: str, namespaces: Iterable[str], pods_mode: str) -> frozenset[str]:
    """Names that exist without records of their own: `svc`/`pod` under the apex and each namespace there."""
    names = {f"svc.{origin}", f"pod.{origin}"}
    for namespace in namespaces:
        names.add(f"{namespace}.svc.{origin}")
        if pods_mode != "disabled":
            names.add(f"{namespace}.pod.{origin}")
    return frozenset(names)


def cluster_namespaces(cluster: Cluster) -> frozenset[str]:
    """Namespaces that exist: declared ones, built-in ones, and any an object lives in."""
    names = set(BUILTIN_NAMESPACES)
    names.update(ns.meta.name for ns in cluster.namespaces)
    names.update(s.meta.namespace for s in cluster.services)
    names.update(p.meta.namespace for p in cluster.pods)
    names.update(e.meta.namespace for e in cluster.endpoint_slices)
    return frozenset(n.lower() for n in names if n)


def cluster_pod_addresses(cluster: Cluster) -> frozenset[tuple[str, str]]:
    """(namespace, address) of every pod IP, addresses in canonical text form (for `pods verified`)."""
    return frozenset(
        (pod.meta.namespace, str(ipaddress.ip_address(ip))) for pod in cluster.pods for ip in pod.pod_ips
    )


def _add_service(
    collector: _RecordCollector, service: Service, endpoints: Iterable[ServedEndpoint], base: str, ttl: int
) -> None:
    if service.cluster_ips:
        if service.ports:
            for ip in service.cluster_ips:
                collector.add(base, address_record(ip, ttl))
        for port in service.ports:
            srv = Record(RecordType.SRV, ttl, Srv(0, 0, port.port, base))
            collector.add(base, srv)
            if port.name:
                port_name = f"_{port.name.lower()}._{port.protocol.lower()}.{base}"
                collector.add(port_name, srv)
                for ip in service.cluster_ips:
                    collector.add(port_name, address_record(ip, ttl))
    for endpoint in endpoints:
        own_name = f"{endpoint.label}.{base}"
        address = address_record(endpoint.ip, ttl)
        collector.add(own_name, address)
        if not service.cluster_ips:
            collector.add(base, address)
        for endpoint_port in endpoint.ports:
            if endpoint_port.port is None:
                continue
            srv = Record(RecordType.SRV, ttl, Srv(0, 0, endpoint_port.port, own_name))
            collector.add(own_name, srv)
            if service.cluster_ips:
                continue
            collector.add(base, srv)
            if endpoint_port.name:
                port_name = f"_{endpoint_port.name.lower()}._{endpoint_port.protocol.lower()}.{base}"
                collector.add(port_name, srv)
                collector.add(port_name, address)


def _served_endpoints(service: Service, slices: Iterable[EndpointSlice]) -> tuple[ServedEndpoint, ...]:
    """Endpoint addresses DNS publishes for `service`: ready ones, or all when the service publishes
    not-ready addresses. Terminating endpoints count as not ready, as in EndpointSlices. Slices are taken
    in name order, so the result does not depend on the order the cluster lists them in."""
    served: list[ServedEndpoint] = []
    for endpoint_slice in sorted(slices, key=lambda s: s.meta.name):
        if endpoint_slice.address_type == "FQDN":
            continue
        for endpoint in endpoint_slice.endpoints:
            if endpoint.conditions.ready is False and not service.publish_not_ready_addresses:
                continue
            for ip in endpoint.addresses:
                served.append(ServedEndpoint(ip, endpoint_label(ip, endpoint.hostname), endpoint_slice.ports))
    return tuple(served)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
