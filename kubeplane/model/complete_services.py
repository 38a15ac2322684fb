"""What the API server fills in for Services: IP families, clusterIPs, nodePorts and healthCheckNodePorts.

Explicit values are checked against the whole cluster first (inside a ServiceCIDR, not taken by another
service, not the cluster DNS address unless the service is kube-system/kube-dns), then missing ones are
allocated stably (see allocate.py). The kube-dns Service gets the DNS address: `dnsServiceIP` if configured,
else its own explicit clusterIP, else the 10th address of the first ServiceCIDR (10.96.0.10).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace

from kubeplane.model.allocate import AddressPool, PoolExhausted, PortPool, nth_address
from kubeplane.model.errors import ErrorPlace, ManifestError
from kubeplane.model.formats import IPAddress, IPNetwork
from kubeplane.model.objects import Cluster, IPFamily, Service, ServiceCIDR, ServicePort
from kubeplane.model.parse_service import NODE_PORT_MAX, NODE_PORT_MIN

DNS_SERVICE_KEY = "kube-system/kube-dns"
DNS_ADDRESS_OFFSET = 10


def _error(service: Service, field: str, message: str) -> ManifestError:
    return ManifestError(ErrorPlace.of(service.meta.source, "Service", service.meta.key), field, message)


@functools.lru_cache(maxsize=1 << 16)
def _parse_address(text: str) -> IPAddress:
    """Cluster IPs are parsed again on every completion (every change the daemon serves); addresses are
    immutable, so each text is parsed once."""
    return ipaddress.ip_address(text)


def _family(address: IPAddress) -> IPFamily:
    return "IPv4" if address.version == 4 else "IPv6"


def _other(family: IPFamily) -> IPFamily:
    return "IPv6" if family == "IPv4" else "IPv4"


def _ip_field(index: int) -> str:
    return "spec.clusterIP" if index == 0 else f"spec.clusterIPs[{index}]"


@dataclass(frozen=True)
class CompletedServices:
    """The completed Services, and the cluster DNS address they were allocated around."""

    services: tuple[Service, ...]
    dns_service_ip: str


def complete_services(
    services: Sequence[Service],
    service_cidrs: Sequence[ServiceCIDR],
    dns_service_ip: str,
    previous: Cluster | None,
    errors: list[ManifestError],
    memo: FamilyMemo | None = None,
) -> CompletedServices:
    """Services in key order with families, clusterIPs and node ports filled; the DNS address chosen.

    `memo` (kept by a caller that completes the same objects again and again) saves re-copying Services
    whose families were filled in before; the result is the same without it."""
    pools: dict[IPFamily, list[AddressPool]] = {}
    for cidr in service_cidrs:
        for text in cidr.cidrs:
            network = ipaddress.ip_network(text)
            pools.setdefault(_family(network.network_address), []).append(AddressPool(network))
    first = ipaddress.ip_network(service_cidrs[0].cidrs[0])
    primary = _family(first.network_address)
    ordered = sorted(services, key=lambda s: s.meta.key)
    dns_ip = _dns_address(dns_service_ip, ordered, first)
    with_families = (memo if memo is not None else FamilyMemo()).with_families(
        ordered, pools, primary, errors
    )
    _reserve_explicit(with_families, pools, dns_ip, errors)
    before = {svc.meta.key: svc for svc in previous.services} if previous else {}
    allocated = [_allocate_ips(svc, pools, dns_ip, before.get(svc.meta.key), errors) for svc in with_families]
    return CompletedServices(_allocate_node_ports(allocated, before, errors), str(dns_ip))


class FamilyMemo:
    """Services with their IP families filled in, remembered by input instance from one build to the next.

    The daemon completes every Service on every change it serves, and filling in families copies each one;
    but it completes mostly the same parsed instances again, so with one memo across builds a Service seen
    before costs a lookup. An entry holds its input, so its id cannot be reused while it is remembered;
    Services whose completion raised errors are not remembered (their errors must be reported again), and
    a change of the ServiceCIDR families or of the primary family forgets everything. Mutable on purpose.
    """

    def __init__(self) -> None:
        self._setting: tuple[frozenset[IPFamily], IPFamily] | None = None
        self._done: dict[int, tuple[Service, Service]] = {}

    def with_families(
        self,
        services: Sequence[Service],
        pools: dict[IPFamily, list[AddressPool]],
        primary: IPFamily,
        errors: list[ManifestError],
    ) -> list[Service]:
        setting = (frozenset(pools), primary)
        known = self._done if setting == self._setting else {}
        done: dict[int, tuple[Service, Service]] = {}
        completed: list[Service] = []
        for service in services:
            hit = known.get(id(service))
            if hit is not None and hit[0] is service:
                result = hit[1]
            else:
                errors_before = len(errors)
                result = _with_families(service, pools, primary, errors)
                if len(errors) > errors_before:
                    completed.append(result)
                    continue
            done[id(service)] = (service, result)
            completed.append(result)
        self._setting, self._done = setting, done
        return completed


def _dns_address(configured: str, services: Sequence[Service], first: IPNetwork) -> IPAddress:
    if configured:
        return ipaddress.ip_address(configured)
    for service in services:
        if service.meta.key == DNS_SERVICE_KEY and service.cluster_ips:
            return ipaddress.ip_address(service.cluster_ips[0])
    return nth_address(first, DNS_ADDRESS_OFFSET)


def _with_families(
    service: Service, pools: dict[IPFamily, list[AddressPool]], primary: IPFamily, errors: list[ManifestError]
) -> Service:
    if service.type == "ExternalName":
        return replace(service, ip_families=(), ip_family_policy=None)
    policy = service.ip_family_policy or "SingleStack"
    families = list(service.ip_families) or [primary]
    if policy != "SingleStack" and len(families) == 1:
        if _other(families[0]) in pools:
            families.append(_other(families[0]))
        elif policy == "RequireDualStack":
            errors.append(
                _error(
                    service,
                    "spec.ipFamilyPolicy",
                    f"RequireDualStack, but there is no {_other(families[0])} ServiceCIDR",
                )
            )
    for family in families:
        if family not in pools:
            errors.append(_error(service, "spec.ipFamilies", f"no {family} ServiceCIDR in the cluster"))
    return replace(service, ip_families=tuple(families), ip_family_policy=policy)


def _reserve_explicit(
    services: Sequence[Service],
    pools: dict[IPFamily, list[AddressPool]],
    dns_ip: IPAddress,
    errors: list[ManifestError],
) -> None:
    owners: dict[tuple[int, int], Service] = {}  # by (version, integer): hashing an address object is slow
    all_cidrs = ", ".join(str(pool.network) for family in pools.values() for pool in family)
    for service in services:
        for i, text in enumerate(service.cluster_ips):
            address = _parse_address(text)
            pool = next((p for p in pools.get(_family(address), []) if p.contains(address)), None)
            if pool is None:
                errors.append(
                    _error(service, _ip_field(i), f"{text} is outside every ServiceCIDR ({all_cidrs})")
                )
                continue
            owner = (address.version, int(address))
            if owner in owners:
                other = owners[owner]
                message = f"{text} is already allocated to Service {other.meta.key} ({other.meta.source})"
                errors.append(_error(service, _ip_field(i), message))
                continue
            if address == dns_ip and service.meta.key != DNS_SERVICE_KEY:
                message = f"{text} is the cluster DNS address; only {DNS_SERVICE_KEY} may use it"
                errors.append(_error(service, _ip_field(i), message))
                continue
            owners[owner] = service
            pool.reserve(address)
    for pool in pools.get(_family(dns_ip), []):
        if pool.contains(dns_ip):
            pool.reserve(dns_ip)


def _allocate_ips(
    service: Service,
    pools: dict[IPFamily, list[AddressPool]],
    dns_ip: IPAddress,
    earlier: Service | None,
    errors: list[ManifestError],
) -> Service:
    if (
        service.headless
        or service.type == "ExternalName"
        or len(service.cluster_ips) >= len(service.ip_families)
    ):
        return service
    addresses = list(service.cluster_ips)
    for family in service.ip_families[len(addresses) :]:
        if service.meta.key == DNS_SERVICE_KEY and _family(dns_ip) == family:
            addresses.append(str(dns_ip))
            continue
        address = _kept_or_new(service.meta.key, pools.get(family, []), earlier, family)
        if address is None:
            errors.append(
                _error(service, _ip_field(len(addresses)), f"no free {family} address in the ServiceCIDRs")
            )
            return service
        addresses.append(str(address))
    return replace(service, cluster_ips=tuple(addresses))


def _kept_or_new(
    key: str, pools: Sequence[AddressPool], earlier: Service | None, family: IPFamily
) -> IPAddress | None:
    for text in earlier.cluster_ips if earlier else ():
        address = _parse_address(text)
        for pool in pools:
            if _family(address) == family and pool.contains(address) and not pool.is_taken(address):
                pool.reserve(address)
                return address
    for pool in pools:
        try:
            return pool.allocate(key)
        except PoolExhausted:
            continue
    return None


def _allocate_node_ports(
    services: Sequence[Service], before: dict[str, Service], errors: list[ManifestError]
) -> tuple[Service, ...]:
    pool = PortPool(NODE_PORT_MIN, NODE_PORT_MAX)
    owners: dict[int, tuple[Service, str]] = {}

    def claim(service: Service, port: int, field: str, protocol: str) -> None:
        owner = owners.get(port)
        if owner is not None and (owner[0].meta.key != service.meta.key or owner[1] == protocol):
            other = owner[0]
            errors.append(
                _error(
                    service,
                    field,
                    f"nodePort {port} is already used by Service {other.meta.key} ({other.meta.source})",
                )
            )
            return
        owners[port] = (service, protocol)
        pool.reserve(port)

    for service in services:
        for i, port in enumerate(service.ports):
            if port.node_port is not None:
                claim(service, port.node_port, f"spec.ports[{i}].nodePort", port.protocol)
        if service.health_check_node_port is not None:
            claim(service, service.health_check_node_port, "spec.healthCheckNodePort", "health")
    return tuple(
        _fill_node_ports(service, pool, before.get(service.meta.key), errors) for service in services
    )


def _fill_node_ports(
    service: Service, pool: PortPool, earlier: Service | None, errors: list[ManifestError]
) -> Service:
    wants_ports = service.type == "NodePort" or (
        service.type == "LoadBalancer" and service.allocate_load_balancer_node_ports
    )
    if not wants_ports and service.type != "LoadBalancer":
        return service  # a ClusterIP Service (most of them) gets no port: completion runs on every change
    try:
        ports = tuple(
            _with_node_port(service.meta.key, port, pool, earlier)
            if wants_ports and port.node_port is None
            else port
            for port in service.ports
        )
        health = service.health_check_node_port
        if service.type == "LoadBalancer" and service.external_traffic_policy == "Local" and health is None:
            kept = earlier.health_check_node_port if earlier else None
            health = _kept_port(pool, kept) or pool.allocate(f"{service.meta.key}:healthCheckNodePort")
    except PoolExhausted as err:
        errors.append(_error(service, "spec.ports", f"cannot allocate a nodePort: {err}"))
        return service
    if health == service.health_check_node_port and all(
        new is old for new, old in zip(ports, service.ports, strict=True)
    ):
        return service  # nothing allocated (most services): skip the copy, completion runs on every change
    return replace(service, ports=ports, health_check_node_port=health)


def _with_node_port(key: str, port: ServicePort, pool: PortPool, earlier: Service | None) -> ServicePort:
    match = next(
        (p for p in earlier.ports if p.port == port.port and p.protocol == port.protocol)
        if earlier
        else iter(()),
        None,
    )
    number = _kept_port(pool, match.node_port if match else None)
    return replace(port, node_port=number or pool.allocate(f"{key}:{port.port}/{port.protocol}"))


def _kept_port(pool: PortPool, port: int | None) -> int | None:
    if port is None or not pool.contains(port) or pool.is_taken(port):
        return None
    pool.reserve(port)
    return port
