"""kubectl's table columns for the kinds `kubeplane get` prints, as pure functions of the objects.

Cells follow kubectl's printers: PORT(S) `80/TCP` or `80:30080/TCP`, EXTERNAL-IP `<none>` / `<pending>` /
ingress and external IPs, SELECTOR `k=v,...`, at most three ENDPOINTS then `+ N more...`. AGE and RESTARTS are
left out: manifests have neither.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kubeplane.model.objects import EndpointSlice, KubeObject, Node, Pod, Service

NONE = "<none>"
UNSET = "<unset>"
SHOWN_ITEMS = 3


@dataclass(frozen=True)
class Resource:
    """One `kubeplane get` resource: its name, whether it is namespaced, headers and row builder."""

    plural: str
    namespaced: bool
    headers: tuple[str, ...]
    row: Callable[[KubeObject], tuple[str, ...]]
    wide_headers: tuple[str, ...] = ()
    wide_row: Callable[[KubeObject], tuple[str, ...]] | None = None


def service_type_cells(service: Service) -> tuple[str, ...]:
    return (
        service.meta.name,
        service.type,
        cluster_ip_cell(service),
        external_ip_cell(service),
        ports_cell(service),
    )


def cluster_ip_cell(service: Service) -> str:
    if service.headless:
        return "None"
    return service.cluster_ip or NONE


def external_ip_cell(service: Service) -> str:
    if service.type == "ExternalName":
        return service.external_name or NONE
    addresses = list(service.external_ips)
    if service.type == "LoadBalancer":
        ingress = [i.ip or i.hostname or "" for i in service.load_balancer_ingress]
        addresses = [a for a in ingress if a] + addresses
        return ",".join(addresses) if addresses else "<pending>"
    return ",".join(addresses) if addresses else NONE


def ports_cell(service: Service) -> str:
    cells = [
        f"{p.port}:{p.node_port}/{p.protocol}" if p.node_port else f"{p.port}/{p.protocol}"
        for p in service.ports
    ]
    return ",".join(cells) if cells else NONE


def selector_cell(service: Service) -> str:
    selector = service.selector or {}
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or NONE


def _abbreviated(items: Sequence[str]) -> str:
    if not items:
        return UNSET
    shown = ",".join(items[:SHOWN_ITEMS])
    rest = len(items) - SHOWN_ITEMS
    return f"{shown} + {rest} more..." if rest > 0 else shown


def endpoint_slice_cells(endpoint_slice: EndpointSlice) -> tuple[str, ...]:
    ports = [UNSET if p.port is None else str(p.port) for p in endpoint_slice.ports]
    addresses = [a for e in endpoint_slice.endpoints for a in e.addresses]
    return (
        endpoint_slice.meta.name,
        endpoint_slice.address_type,
        _abbreviated(ports),
        _abbreviated(addresses),
    )


def pod_cells(pod: Pod) -> tuple[str, ...]:
    total = len(pod.containers)
    ready = pod.ready if pod.ready is not None else pod.phase == "Running"
    status = "Terminating" if pod.meta.deletion_timestamp else pod.phase
    return (
        pod.meta.name,
        f"{total if ready else 0}/{total}",
        status,
        pod.pod_ip or NONE,
        pod.node_name or NONE,
    )


def node_cells(node: Node) -> tuple[str, ...]:
    internal = node.internal_ips[0] if node.internal_ips else NONE
    return (node.meta.name, "Ready", internal, ",".join(node.pod_cidrs) or NONE, node.zone or NONE)


def _typed(cells: Callable[..., tuple[str, ...]], kind: type) -> Callable[[KubeObject], tuple[str, ...]]:
    def row(obj: KubeObject) -> tuple[str, ...]:
        if not isinstance(obj, kind):
            raise TypeError(f"expected {kind.__name__}, got {type(obj).__name__}")
        return cells(obj)

    return row


SERVICES = Resource(
    "services",
    True,
    ("NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"),
    _typed(service_type_cells, Service),
    ("SELECTOR",),
    _typed(lambda s: (selector_cell(s),), Service),
)
ENDPOINT_SLICES = Resource(
    "endpointslices",
    True,
    ("NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS"),
    _typed(endpoint_slice_cells, EndpointSlice),
)
PODS = Resource("pods", True, ("NAME", "READY", "STATUS", "IP", "NODE"), _typed(pod_cells, Pod))
NODES = Resource(
    "nodes", False, ("NAME", "STATUS", "INTERNAL-IP", "POD-CIDR", "ZONE"), _typed(node_cells, Node)
)

RESOURCES_BY_NAME: dict[str, Resource] = {
    "services": SERVICES,
    "service": SERVICES,
    "svc": SERVICES,
    "endpointslices": ENDPOINT_SLICES,
    "endpointslice": ENDPOINT_SLICES,
    "pods": PODS,
    "pod": PODS,
    "po": PODS,
    "nodes": NODES,
    "node": NODES,
    "no": NODES,
}


def render_table(rows: Sequence[tuple[str, ...]]) -> str:
    """Left-aligned columns three spaces apart, like kubectl's tabwriter output."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)
