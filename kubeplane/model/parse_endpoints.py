"""`discovery.k8s.io/v1 EndpointSlice`, and legacy `v1 Endpoints` converted to EndpointSlices.

Accepted: addressType, endpoints[].{addresses, conditions.{ready, serving, terminating}, hostname, nodeName,
zone, hints.{forZones, forNodes}[].name, targetRef.{kind, name, namespace}}, ports[].{name, port, protocol,
appProtocol}; the `kubernetes.io/service-name` label ties a slice to its Service. Endpoints:
subsets[].{addresses, notReadyAddresses}[].{ip, hostname, nodeName, targetRef} and subsets[].ports.

Legacy Endpoints are mirrored the way the EndpointSlice mirroring controller does it: one slice per address
family, named `<name>-legacy` (`<name>-legacy-ipv6` for the IPv6 one), labelled with the service name, ready
addresses ready and `notReadyAddresses` not ready. Since every subset's ports apply only to its own addresses,
a slice is made per (family, subset) when subsets have different ports.
"""

from __future__ import annotations

from kubeplane.model.fields import Fields
from kubeplane.model.formats import dns1123_label_problem, dns1123_subdomain_problem, parse_ip
from kubeplane.model.objects import (
    SERVICE_NAME_LABEL,
    AddressType,
    Endpoint,
    EndpointConditions,
    EndpointHints,
    EndpointPort,
    EndpointSlice,
    ObjectMeta,
    ObjectReference,
)
from kubeplane.model.parse_service import PROTOCOLS

ADDRESS_TYPES: tuple[AddressType, ...] = ("IPv4", "IPv6", "FQDN")
MAX_ENDPOINTS_PER_SLICE = 1000
MAX_PORTS_PER_SLICE = 100
MIRRORED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MIRRORING_CONTROLLER = "endpointslicemirroring-controller.k8s.io"


def parse_endpoint_slice(doc: Fields, meta: ObjectMeta) -> tuple[EndpointSlice, ...]:
    address_type = doc.enum("addressType", ADDRESS_TYPES, required=True) or "IPv4"
    entries = doc.subs("endpoints")
    if len(entries) > MAX_ENDPOINTS_PER_SLICE:
        doc.error("endpoints", f"must have at most {MAX_ENDPOINTS_PER_SLICE} items, got {len(entries)}")
    endpoints = tuple(_endpoint(entry, address_type) for entry in entries)
    ports = _ports(doc, "ports")
    if SERVICE_NAME_LABEL not in meta.labels:
        doc.warn("metadata.labels", f"no {SERVICE_NAME_LABEL} label: this slice belongs to no service")
    return (EndpointSlice(meta=meta, address_type=address_type, endpoints=endpoints, ports=ports),)


def _endpoint(entry: Fields, address_type: AddressType) -> Endpoint:
    addresses = [text for _, text in entry.texts("addresses")]
    if not 1 <= len(addresses) <= 100:
        entry.error("addresses", f"must have between 1 and 100 items, got {len(addresses)}")
    for i, address in enumerate(addresses):
        problem = _address_problem(address, address_type)
        if problem:
            entry.error(f"addresses[{i}]", problem)
    conditions = entry.section("conditions")
    ready = conditions.flag("ready")
    serving = conditions.flag("serving")
    terminating = conditions.flag("terminating")
    conditions.finish()
    hints = entry.sub("hints")
    parsed_hints = _hints(hints) if hints is not None else None
    ref = entry.sub("targetRef")
    endpoint = Endpoint(
        addresses=tuple(addresses),
        conditions=EndpointConditions(ready, serving, terminating),
        hostname=entry.checked("hostname", dns1123_label_problem),
        node_name=entry.text("nodeName"),
        zone=entry.text("zone"),
        hints=parsed_hints,
        target_ref=_target_ref(ref) if ref is not None else None,
    )
    entry.ignore("deprecatedTopology")
    entry.finish()
    return endpoint


def _address_problem(address: str, address_type: AddressType) -> str | None:
    if address_type == "FQDN":
        return dns1123_subdomain_problem(address)
    parsed = parse_ip(address)
    if isinstance(parsed, str):
        return parsed
    if (parsed.version == 4) != (address_type == "IPv4"):
        return f"must be an {address_type} address (the slice's addressType), got {address!r}"
    return None


def _hints(hints: Fields) -> EndpointHints:
    zones = tuple(_names(hints, "forZones"))
    nodes = tuple(_names(hints, "forNodes"))
    hints.finish()
    return EndpointHints(for_zones=zones, for_nodes=nodes)


def _names(parent: Fields, name: str) -> list[str]:
    found: list[str] = []
    for item in parent.subs(name):
        value = item.text("name", required=True)
        item.finish()
        if value:
            found.append(value)
    return found


def _target_ref(ref: Fields) -> ObjectReference:
    reference = ObjectReference(
        kind=ref.text("kind") or "Pod",
        name=ref.text("name", required=True) or "",
        namespace=ref.text("namespace") or "",
    )
    ref.ignore("uid", "resourceVersion", "apiVersion", "fieldPath")
    ref.finish()
    return reference


def _ports(doc: Fields, name: str) -> tuple[EndpointPort, ...]:
    entries = doc.subs(name)
    if len(entries) > MAX_PORTS_PER_SLICE:
        doc.error(name, f"must have at most {MAX_PORTS_PER_SLICE} items, got {len(entries)}")
    seen: dict[str, int] = {}
    ports: list[EndpointPort] = []
    for i, entry in enumerate(entries):
        port_name = entry.checked("name", dns1123_label_problem) or ""
        if port_name in seen:
            entry.error("name", f"duplicate port name {port_name!r} (also {name}[{seen[port_name]}])")
        seen.setdefault(port_name, i)
        ports.append(
            EndpointPort(
                port=entry.port("port"),
                protocol=entry.enum("protocol", PROTOCOLS) or "TCP",
                name=port_name,
                app_protocol=entry.text("appProtocol"),
            )
        )
        entry.finish()
    return tuple(ports)


def parse_legacy_endpoints(doc: Fields, meta: ObjectMeta) -> tuple[EndpointSlice, ...]:
    """Legacy Endpoints as slices: per subset, per address family (see the module docstring)."""
    groups: dict[tuple[AddressType, tuple[EndpointPort, ...]], list[Endpoint]] = {}
    subsets = doc.subs("subsets")
    for subset in subsets:
        ports = _ports(subset, "ports")
        for field_name, ready in (("addresses", True), ("notReadyAddresses", False)):
            for address in subset.subs(field_name):
                endpoint, family = _legacy_endpoint(address, meta, ready)
                if family is not None:
                    groups.setdefault((family, ports), []).append(endpoint)
        subset.finish()
    labels = {**meta.labels, SERVICE_NAME_LABEL: meta.name, MIRRORED_BY_LABEL: MIRRORING_CONTROLLER}
    slices: list[EndpointSlice] = []
    family_counts: dict[AddressType, int] = {}
    for (family, ports), endpoints in groups.items():
        count = family_counts.get(family, 0)
        family_counts[family] = count + 1
        suffix = "-legacy" + ("" if family == "IPv4" else "-ipv6") + (f"-{count}" if count else "")
        slice_meta = ObjectMeta(
            name=meta.name + suffix, namespace=meta.namespace, labels=labels, source=meta.source
        )
        slices.append(EndpointSlice(slice_meta, family, tuple(endpoints), ports))
    return tuple(slices)


def _legacy_endpoint(address: Fields, meta: ObjectMeta, ready: bool) -> tuple[Endpoint, AddressType | None]:
    ip = address.ip("ip")
    if ip is None and not address.has("ip"):
        address.error("ip", "required field is missing")
    ref = address.sub("targetRef")
    endpoint = Endpoint(
        addresses=(str(ip),) if ip else (),
        conditions=EndpointConditions(ready=ready, serving=ready, terminating=False),
        hostname=address.checked("hostname", dns1123_label_problem),
        node_name=address.text("nodeName"),
        target_ref=_target_ref(ref) if ref is not None else None,
    )
    address.finish()
    family: AddressType | None = None if ip is None else ("IPv4" if ip.version == 4 else "IPv6")
    return endpoint, family
