"""The cluster zone kept up to date change by change: rebuild only what a change set touches.

A full `build_zone` at a thousand services costs a quarter of a second and invalidates every precomputed
answer; a change usually concerns one service. `ZoneBuilder` keeps the indexes that make a change local:
the records each service contributes, the slices per service, which services claim each IP (for PTRs) and
which names read which others (a CNAME's target, an SRV or NS target whose addresses go in the additional
section). `apply` recomputes the contributions of the services a change concerns, the reverse names of
their old and new IPs, the apex (its SOA carries the serial) and, when objects come or go, the namespaces,
and reports exactly which names answer differently. Configuration changes (domain, TTL, pods mode) rebuild
everything. The result equals `build_zone` of the same cluster; tests/unit/test_dns_incremental.py checks it
over random change sequences.

A builder is mutable and not thread-safe: one caller at a time (the server serialises its updates).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from kubeplane.dns.records import Record, RecordType, Srv, Target, fqdn, reverse_name
from kubeplane.dns.zone import (
    ServiceContribution,
    ServiceKey,
    Zone,
    apex_records,
    cluster_namespaces,
    cluster_pod_addresses,
    dns_service_ips,
    ptr_records,
    service_contribution,
    service_key,
    slice_service,
    structural_empty_names,
)
from kubeplane.model.objects import Cluster, EndpointSlice, Service
from kubeplane.store import ObjectChange, diff_clusters

Member = TypeVar("Member")
# Kinds whose coming or going can create or end a namespace (an object's namespace never changes).
_NAMESPACED_KINDS = frozenset({"Service", "EndpointSlice", "Pod", "Namespace"})


@dataclass(frozen=True)
class ZoneDelta:
    """The zone after a change and what answers it invalidates.

    `affected_names`: names whose records or existence changed, plus every name whose answer reads one of
    them (transitively). `pod_namespaces`: namespaces whose on-demand pod names may answer differently.
    `serial_changed`: the SOA serial moved, so every negative answer (it carries the SOA) changed.
    `full`: everything may have changed (first build, or the DNS configuration changed).
    """

    zone: Zone
    affected_names: frozenset[str]
    pod_namespaces: frozenset[str]
    serial_changed: bool
    full: bool


class ZoneBuilder:
    """The zone of the last cluster applied, with the indexes to update it incrementally."""

    def __init__(self, cluster: Cluster, serial: int = 0) -> None:
        self.delta = self._rebuild(cluster, serial)

    @property
    def zone(self) -> Zone:
        return self.delta.zone

    def apply(self, cluster: Cluster, changes: Iterable[ObjectChange], serial: int = 0) -> ZoneDelta:
        """Bring the zone to `cluster`, which differs from the last one applied by `changes`."""
        changes = tuple(changes)
        if any(change.kind == "KubeplaneConfiguration" for change in changes):
            self.delta = self._rebuild(cluster, serial)
        else:
            self.delta = self._apply(cluster, changes, serial, full=False)
        return self.delta

    def _rebuild(self, cluster: Cluster, serial: int) -> ZoneDelta:
        config = cluster.kubeplane_config
        self._config = config
        self._origin, self._ttl = fqdn(config.cluster_domain), config.dns_ttl
        self._records: dict[str, tuple[Record, ...]] = {}
        self._referrers: dict[str, set[str]] = {}  # name -> names whose answers read its records
        self._services: dict[ServiceKey, Service] = {}
        self._slices: dict[ServiceKey, dict[str, EndpointSlice]] = {}  # by service, then slice name
        self._contributions: dict[ServiceKey, ServiceContribution] = {}
        self._service_ips: dict[str, set[ServiceKey]] = {}
        self._endpoint_names: dict[str, dict[ServiceKey, tuple[str, ...]]] = {}
        self._apex_names: frozenset[str] = frozenset()
        self._namespaces: frozenset[str] = frozenset()
        self._structural: frozenset[str] = frozenset()
        self._empty: set[str] = set()
        self._pod_addresses: frozenset[tuple[str, str]] = frozenset()
        self._soa: Record | None = None
        everything = diff_clusters(Cluster(kubeplane_config=config), cluster)
        return self._apply(cluster, everything, serial, full=True)

    def _apply(
        self, cluster: Cluster, changes: tuple[ObjectChange, ...], serial: int, full: bool
    ) -> ZoneDelta:
        touched: set[str] = set()
        affected_services = self._index_changes(changes)
        ptr_ips: set[str] = set()
        for key in affected_services:
            ptr_ips.update(self._recontribute(key, touched))
        for ip in ptr_ips:
            self._refresh_ptr(ip, touched)
        soa, apex = apex_records(self._config, dns_service_ips(cluster), serial)
        for name in self._apex_names | apex.keys():
            self._set(name, apex.get(name), touched)
        self._apex_names = frozenset(apex.keys())
        serial_changed = soa != self._soa
        self._soa = soa

        pod_namespaces = self._refresh_namespaces(cluster, changes, full, touched)
        zone = Zone(
            origin=self._origin,
            ttl=self._ttl,
            soa=soa,
            records=dict(self._records),
            empty_names=frozenset(self._empty),
            namespaces=self._namespaces,
            pods_mode=self._config.dns_pods_mode,
            pod_addresses=self._pod_addresses,
        )
        return ZoneDelta(zone, self._readers_of(touched), frozenset(pod_namespaces), serial_changed, full)

    def _refresh_namespaces(
        self, cluster: Cluster, changes: tuple[ObjectChange, ...], full: bool, touched: set[str]
    ) -> set[str]:
        """Namespace existence, the names that exist without records, and pod addresses; returns the
        namespaces whose pod names may answer differently. Marks names whose existence changed."""
        old_namespaces = self._namespaces
        if full or any(c.kind in _NAMESPACED_KINDS and c.action != "updated" for c in changes):
            self._namespaces = cluster_namespaces(cluster)
        pod_namespaces = set(old_namespaces ^ self._namespaces)
        if pod_namespaces:
            old_structural = self._structural
            pods_mode = self._config.dns_pods_mode
            self._structural = structural_empty_names(self._origin, self._namespaces, pods_mode)
            touched.update(old_structural ^ self._structural)
        for name in touched:
            if name in self._structural and name not in self._records:
                self._empty.add(name)
            else:
                self._empty.discard(name)
        if full or any(change.kind == "Pod" for change in changes):
            addresses = cluster_pod_addresses(cluster)
            if self._config.dns_pods_mode == "verified":
                pod_namespaces.update(namespace for namespace, _ in addresses ^ self._pod_addresses)
            self._pod_addresses = addresses
        return pod_namespaces

    def _index_changes(self, changes: Iterable[ObjectChange]) -> set[ServiceKey]:
        """Record the new Services and EndpointSlices; return the services whose records may differ."""
        affected: set[ServiceKey] = set()
        for change in changes:
            if change.kind == "Service":
                for service in (change.old, change.new):
                    if isinstance(service, Service):
                        affected.add(service_key(service))
                if isinstance(change.old, Service):
                    self._services.pop(service_key(change.old), None)
                if isinstance(change.new, Service):
                    self._services[service_key(change.new)] = change.new
            elif change.kind == "EndpointSlice":
                if isinstance(change.old, EndpointSlice) and (owner := slice_service(change.old)):
                    self._slices.get(owner, {}).pop(change.old.meta.name, None)
                    affected.add(owner)
                if isinstance(change.new, EndpointSlice) and (owner := slice_service(change.new)):
                    self._slices.setdefault(owner, {})[change.new.meta.name] = change.new
                    affected.add(owner)
        return affected

    def _recontribute(self, key: ServiceKey, touched: set[str]) -> set[str]:
        """Replace service `key`'s records; return the IPs whose reverse names may have changed."""
        old = self._contributions.pop(key, None)
        service = self._services.get(key)
        slices = self._slices.get(key, {})
        new = service_contribution(service, slices.values(), self._origin, self._ttl) if service else None
        if not slices:
            self._slices.pop(key, None)
        ips: set[str] = set()
        if old is not None:
            for ip in old.cluster_ips:
                _discard(self._service_ips, ip, key)
                ips.add(ip)
            for ip in old.endpoint_names:
                owners = self._endpoint_names[ip]
                del owners[key]
                if not owners:
                    del self._endpoint_names[ip]
                ips.add(ip)
        if new is not None:
            self._contributions[key] = new
            for ip in new.cluster_ips:
                self._service_ips.setdefault(ip, set()).add(key)
                ips.add(ip)
            for ip, names in new.endpoint_names.items():
                self._endpoint_names.setdefault(ip, {})[key] = names
                ips.add(ip)
        old_records = old.records if old is not None else {}
        new_records = new.records if new is not None else {}
        for name in old_records.keys() | new_records.keys():
            self._set(name, new_records.get(name), touched)
        return ips

    def _refresh_ptr(self, ip: str, touched: set[str]) -> None:
        owners = self._service_ips.get(ip, set())
        names = [name for names in self._endpoint_names.get(ip, {}).values() for name in names]
        records = ptr_records(ip, owners, names, self._origin, self._ttl) if owners or names else None
        self._set(reverse_name(ip), records, touched)

    def _set(self, name: str, records: tuple[Record, ...] | None, touched: set[str]) -> None:
        """Make `records` (None: none) the records of `name`, noting it when they differ."""
        old = self._records.get(name)
        if old == records:
            return
        touched.add(name)
        for target in _read_names(old or ()):
            _discard(self._referrers, target, name)
        if records is None:
            del self._records[name]
            return
        self._records[name] = records
        for target in _read_names(records):
            self._referrers.setdefault(target, set()).add(name)

    def _readers_of(self, names: set[str]) -> frozenset[str]:
        """`names` and every name whose answer reads one of them, through any number of references."""
        found = set(names)
        pending = list(names)
        while pending:
            for reader in self._referrers.get(pending.pop(), ()):
                if reader not in found:
                    found.add(reader)
                    pending.append(reader)
        return frozenset(found)


def _read_names(records: Iterable[Record]) -> set[str]:
    """Names an answer built from `records` reads too: CNAME targets (followed in the zone), SRV and NS
    targets (their addresses go in the additional section)."""
    names: set[str] = set()
    for record in records:
        data = record.data
        if isinstance(data, Srv):
            names.add(data.target)
        elif isinstance(data, Target) and record.rtype in (RecordType.CNAME, RecordType.NS):
            names.add(data.name)
    return names


def _discard(index: dict[str, set[Member]], key: str, member: Member) -> None:
    """Remove `member` from the set at `key`, dropping the set once empty."""
    members = index.get(key)
    if members is not None:
        members.discard(member)
        if not members:
            del index[key]
