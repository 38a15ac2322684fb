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
    Service,
)

DNS_SCHEMA_VERSION = "1.1.0"
DNS_VERSION_TTL = 28800  # CoreDNS serves dns-version with this fixed TTL
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 7200, 1800, 86400
SOA_MAX_TTL = 300
# Namespaces every cluster has, whether or not a manifest names them.
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


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
class _ServedEndpoint:
    ip: str
    label: str
    ports: tuple[EndpointPort, ...]


class _RecordCollector:
    """Accumulates records per owner name, dropping exact duplicates and keeping first-seen order."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[Record]] = {}

    def add(self, name: str, record: Record) -> None:
        records = self.by_name.setdefault(name, [])
        if record not in records:
            records.append(record)

    def finish(self) -> dict[str, tuple[Record, ...]]:
        """Freeze, giving each SRV record its CoreDNS weight (equal shares of 100, at least 1)."""
        frozen: dict[str, tuple[Record, ...]] = {}
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
    """The zone for `cluster`; `serial` becomes the SOA serial (the server passes the build time)."""
    config = cluster.kubeplane_config
    origin = fqdn(config.cluster_domain)
    ttl = config.dns_ttl
    collector = _RecordCollector()
    soa_ttl = min(ttl, SOA_MAX_TTL)
    soa = Record(
        RecordType.SOA,
        soa_ttl,
        Soa(f"ns.dns.{origin}", f"hostmaster.{origin}", serial, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, soa_ttl),
    )
    collector.add(origin, soa)
    collector.add(origin, Record(RecordType.NS, ttl, Target(f"ns.dns.{origin}")))
    for ip in dns_service_ips(cluster):
        collector.add(f"ns.dns.{origin}", address_record(ip, ttl))
    collector.add(f"dns-version.{origin}", Record(RecordType.TXT, DNS_VERSION_TTL, Text(DNS_SCHEMA_VERSION)))

    endpoints_by_service = _served_endpoints(cluster)
    service_ptrs: dict[str, str] = {}
    endpoint_ptrs: dict[str, list[str]] = {}
    for service in cluster.services:
        key = (service.meta.namespace, service.meta.name)
        _add_service(collector, service, endpoints_by_service.get(key, ()), origin, ttl)
        base = f"{service.meta.name}.{service.meta.namespace}.svc.{origin}"
        if service.type == "ExternalName":
            continue
        for ip in service.cluster_ips:
            service_ptrs.setdefault(ip, base)
        for endpoint in endpoints_by_service.get(key, ()):
            names = endpoint_ptrs.setdefault(endpoint.ip, [])
            if f"{endpoint.label}.{base}" not in names:
                names.append(f"{endpoint.label}.{base}")
    for ip, target in service_ptrs.items():
        collector.add(reverse_name(ip), Record(RecordType.PTR, ttl, Target(target)))
    for ip, targets in endpoint_ptrs.items():
        if ip not in service_ptrs:
            for target in targets:
                collector.add(reverse_name(ip), Record(RecordType.PTR, ttl, Target(target)))

    namespaces = _namespaces(cluster)
    empty = {f"svc.{origin}", f"pod.{origin}"}
    for namespace in namespaces:
        empty.add(f"{namespace}.svc.{origin}")
        if config.dns_pods_mode != "disabled":
            empty.add(f"{namespace}.pod.{origin}")
    records = collector.finish()
    return Zone(
        origin=origin,
        ttl=ttl,
        soa=soa,
        records=records,
        empty_names=frozenset(empty - records.keys()),
        namespaces=namespaces,
        pods_mode=config.dns_pods_mode,
        pod_addresses=frozenset(
            (pod.meta.namespace, str(ipaddress.ip_address(ip))) for pod in cluster.pods for ip in pod.pod_ips
        ),
    )


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


def _add_service(
    collector: _RecordCollector,
    service: Service,
    endpoints: Iterable[_ServedEndpoint],
    origin: str,
    ttl: int,
) -> None:
    base = f"{service.meta.name}.{service.meta.namespace}.svc.{origin}"
    if service.type == "ExternalName":
        if service.external_name and not _is_ip(service.external_name):
            collector.add(base, Record(RecordType.CNAME, ttl, Target(fqdn(service.external_name))))
        return
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


def _served_endpoints(cluster: Cluster) -> dict[tuple[str, str], tuple[_ServedEndpoint, ...]]:
    """Endpoint addresses DNS publishes per (namespace, service): ready ones, or all when the service
    publishes not-ready addresses. Terminating endpoints count as not ready, as in EndpointSlices."""
    publish_all = {(s.meta.namespace, s.meta.name) for s in cluster.services if s.publish_not_ready_addresses}
    served: dict[tuple[str, str], list[_ServedEndpoint]] = {}
    for endpoint_slice in cluster.endpoint_slices:
        key = _slice_service(endpoint_slice)
        if key is None or endpoint_slice.address_type == "FQDN":
            continue
        for endpoint in endpoint_slice.endpoints:
            if endpoint.conditions.ready is False and key not in publish_all:
                continue
            for ip in endpoint.addresses:
                label = endpoint_label(ip, endpoint.hostname)
                served.setdefault(key, []).append(_ServedEndpoint(ip, label, endpoint_slice.ports))
    return {key: tuple(endpoints) for key, endpoints in served.items()}


def _slice_service(endpoint_slice: EndpointSlice) -> tuple[str, str] | None:
    name = endpoint_slice.service_name
    return (endpoint_slice.meta.namespace, name) if name else None


def _namespaces(cluster: Cluster) -> frozenset[str]:
    """Namespaces that exist: declared ones, built-in ones, and any an object lives in."""
    names = set(BUILTIN_NAMESPACES)
    names.update(ns.meta.name for ns in cluster.namespaces)
    names.update(s.meta.namespace for s in cluster.services)
    names.update(p.meta.namespace for p in cluster.pods)
    names.update(e.meta.namespace for e in cluster.endpoint_slices)
    return frozenset(n.lower() for n in names if n)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
