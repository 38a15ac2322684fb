"""The EndpointSlice controller: derive a Service's EndpointSlices from the Pods its selector matches.

This mirrors kube-controller-manager's EndpointSlice controller (staging/src/k8s.io/endpointslice) so that the
proxy and DNS see exactly what a real cluster would publish:

- Only Services with a non-empty selector get derived slices (ExternalName never does); Services without one
  rely on slices given explicitly in manifests, which are left alone.
- A Pod takes part when it is in the Service's namespace, its labels match, it has an IP and it is not in a
  terminal phase (Succeeded/Failed). Terminating Pods stay in, flagged.
- Conditions: serving = the Pod's Ready condition; terminating = deletionTimestamp is set; ready = serving and
  not terminating, or always true when the Service sets publishNotReadyAddresses.
- Ports are resolved per Pod: a named targetPort becomes the number of the container port with that name and
  protocol; a Pod without it simply lacks that port. Endpoints are grouped by their resolved port list, one
  slice family per group, as the controller does.
- One slice family per IP family of the Service (addressType IPv4 / IPv6), at most 100 endpoints per slice.
- A Service with a selector whose family has no endpoints still owns one empty "placeholder" slice.

Names are deterministic (`<service>-<5 chars>` from a hash of address type, port list and chunk index) because
kubeplane has no API server to generate them, and stable names keep change sets small between snapshots.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from kubeplane.model.objects import (
    SERVICE_NAME_LABEL,
    AddressType,
    Cluster,
    Endpoint,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
    IPFamily,
    Node,
    ObjectMeta,
    ObjectReference,
    Pod,
    Service,
    ServicePort,
)

MAX_ENDPOINTS_PER_SLICE = 100
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"

_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
# The alphabet apimachinery's rand.String uses for generated names (no vowels, no look-alikes).
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_NAME_SUFFIX_LENGTH = 5
_MAX_NAME_LENGTH = 63


@dataclass(frozen=True)
class _PodEndpoint:
    """One Pod's endpoint in one address family, with the service ports it resolved."""

    endpoint: Endpoint
    ports: tuple[EndpointPort, ...]
    sort_key: tuple[int, str]


def derive_endpoint_slices(cluster: Cluster) -> tuple[EndpointSlice, ...]:
    """All EndpointSlices the controller would publish for `cluster`'s selector Services, in a stable order.

    Slices already in `cluster.endpoint_slices` are not consulted; the caller merges explicit and derived.
    """
    nodes_by_name = {node.meta.name: node for node in cluster.nodes}
    pods_by_label = _index_pods_by_label(cluster.pods)
    slices: list[EndpointSlice] = []
    for service in sorted(cluster.services, key=lambda s: s.meta.key):
        if not _has_selector(service):
            continue
        members = [
            pod
            for pod in _candidates(service, pods_by_label)
            if _selects(service.selector, pod.meta.labels) and _is_eligible(pod)
        ]
        slices.extend(slices_for_service(service, members, nodes_by_name))
    return tuple(slices)


def with_derived_endpoint_slices(cluster: Cluster) -> Cluster:
    """`cluster` with the controller's slices recomputed and every other slice kept as given.

    Like the real controller, it owns the slices labelled as managed by it for Services with a selector:
    those are replaced by freshly derived ones. Idempotent, so it is safe to apply after any step that
    changes Pods (a readiness update, say) whether or not slices were derived before.
    """
    selector_services = {service.meta.key for service in cluster.services if _has_selector(service)}
    kept = tuple(
        endpoint_slice
        for endpoint_slice in cluster.endpoint_slices
        if not _is_owned(endpoint_slice, selector_services)
    )
    return replace(cluster, endpoint_slices=kept + derive_endpoint_slices(cluster))


def slices_for_service(
    service: Service, pods: Iterable[Pod], nodes_by_name: Mapping[str, Node]
) -> tuple[EndpointSlice, ...]:
    """The slices for one Service given the (already selected and eligible) Pods that back it."""
    pods = tuple(pods)
    slices: list[EndpointSlice] = []
    for family in _address_types(service):
        groups: dict[tuple[EndpointPort, ...], list[_PodEndpoint]] = {}
        for pod in pods:
            pod_endpoint = _pod_endpoint(service, pod, family, nodes_by_name)
            if pod_endpoint is not None:
                groups.setdefault(pod_endpoint.ports, []).append(pod_endpoint)
        if not groups:
            slices.append(_new_slice(service, family, (), (), 0))
            continue
        for ports, members in sorted(groups.items(), key=lambda item: _ports_key(item[0])):
            members.sort(key=lambda m: m.sort_key)
            for chunk_index, start in enumerate(range(0, len(members), MAX_ENDPOINTS_PER_SLICE)):
                chunk = tuple(m.endpoint for m in members[start : start + MAX_ENDPOINTS_PER_SLICE])
                slices.append(_new_slice(service, family, ports, chunk, chunk_index))
    return tuple(slices)


def _has_selector(service: Service) -> bool:
    """An empty selector is no selector (the API server stores `{}` as absent); ExternalName never selects."""
    return bool(service.selector) and service.type != "ExternalName"


def _is_owned(endpoint_slice: EndpointSlice, selector_services: set[str]) -> bool:
    return (
        endpoint_slice.meta.labels.get(MANAGED_BY_LABEL) == CONTROLLER_NAME
        and f"{endpoint_slice.meta.namespace}/{endpoint_slice.service_name}" in selector_services
    )


def _index_pods_by_label(pods: Iterable[Pod]) -> dict[tuple[str, str, str], list[Pod]]:
    """Pods by (namespace, label key, label value), so a selector looks at its narrowest label's Pods only."""
    index: dict[tuple[str, str, str], list[Pod]] = {}
    for pod in pods:
        for key, value in pod.meta.labels.items():
            index.setdefault((pod.meta.namespace, key, value), []).append(pod)
    return index


def _candidates(service: Service, pods_by_label: Mapping[tuple[str, str, str], list[Pod]]) -> list[Pod]:
    """Pods with the selector's rarest label pair in the Service's namespace: a superset of its members."""
    lists = [
        pods_by_label.get((service.meta.namespace, key, value), [])
        for key, value in (service.selector or {}).items()
    ]
    return min(lists, key=len, default=[])


def _selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    if not selector:
        return False
    return all(labels.get(key) == value for key, value in selector.items())


def _is_eligible(pod: Pod) -> bool:
    """The controller's ShouldPodBeInEndpoints with terminating Pods included."""
    return bool(pod.pod_ips) and pod.phase not in _TERMINAL_PHASES


def _is_pod_ready(pod: Pod) -> bool:
    """The Ready condition; when a manifest does not state it, a Running Pod counts as ready."""
    return pod.ready if pod.ready is not None else pod.phase == "Running"


def _address_types(service: Service) -> tuple[IPFamily, ...]:
    families = service.ip_families or ("IPv4",)
    return tuple(dict.fromkeys(families))


def _family_of(address: str) -> IPFamily:
    return "IPv6" if ipaddress.ip_address(address).version == 6 else "IPv4"


def _pod_endpoint(
    service: Service, pod: Pod, family: IPFamily, nodes_by_name: Mapping[str, Node]
) -> _PodEndpoint | None:
    addresses = tuple(ip for ip in pod.pod_ips if _family_of(ip) == family)
    if not addresses:
        return None
    serving = _is_pod_ready(pod)
    terminating = pod.meta.deletion_timestamp is not None
    ready = service.publish_not_ready_addresses or (serving and not terminating)
    node = nodes_by_name.get(pod.node_name)
    endpoint = Endpoint(
        addresses=addresses,
        conditions=EndpointConditions(ready=ready, serving=serving, terminating=terminating),
        hostname=pod.hostname if _should_set_hostname(pod, service) else None,
        node_name=pod.node_name or None,
        zone=node.zone if node is not None and node.zone else None,
        target_ref=ObjectReference(kind="Pod", name=pod.meta.name, namespace=pod.meta.namespace),
    )
    sort_key = (int(ipaddress.ip_address(addresses[0])), pod.meta.name)
    return _PodEndpoint(endpoint=endpoint, ports=_resolve_ports(service, pod), sort_key=sort_key)


def _should_set_hostname(pod: Pod, service: Service) -> bool:
    """Kubernetes' ShouldSetHostname: a hostname, and a subdomain naming this Service in its namespace.

    Kubernetes does not require the Service to be headless here; only DNS decides to publish per-pod
    records for headless Services.
    """
    return (
        bool(pod.hostname)
        and pod.subdomain == service.meta.name
        and pod.meta.namespace == service.meta.namespace
    )


def _resolve_ports(service: Service, pod: Pod) -> tuple[EndpointPort, ...]:
    resolved: list[EndpointPort] = []
    for service_port in service.ports:
        number = _find_port(pod, service_port)
        if number is None:
            continue
        resolved.append(
            EndpointPort(
                port=number,
                protocol=service_port.protocol,
                name=service_port.name,
                app_protocol=service_port.app_protocol,
            )
        )
    return tuple(resolved)


def _find_port(pod: Pod, service_port: ServicePort) -> int | None:
    """podutil.FindPort: a number is used as is; a name must match a container port of the same protocol."""
    target = service_port.target_port
    if isinstance(target, int):
        return target if target else service_port.port
    for container in pod.containers:
        for container_port in container.ports:
            if container_port.name == target and container_port.protocol == service_port.protocol:
                return container_port.container_port
    return None


def _ports_key(ports: tuple[EndpointPort, ...]) -> str:
    return ",".join(f"{p.name}/{p.protocol}/{p.port}/{p.app_protocol or ''}" for p in ports)


def _slice_name(
    service: Service, address_type: AddressType, ports: tuple[EndpointPort, ...], chunk: int
) -> str:
    identity = f"{service.meta.name}|{address_type}|{_ports_key(ports)}|{chunk}"
    digest = hashlib.sha256(identity.encode()).digest()
    suffix = "".join(_NAME_ALPHABET[b % len(_NAME_ALPHABET)] for b in digest[:_NAME_SUFFIX_LENGTH])
    prefix = service.meta.name[: _MAX_NAME_LENGTH - _NAME_SUFFIX_LENGTH - 1]
    return f"{prefix}-{suffix}"


def _slice_labels(service: Service) -> dict[str, str]:
    """The Service's own labels, then the controller's: service name, manager, headless when it applies."""
    labels = {
        key: value
        for key, value in service.meta.labels.items()
        if key not in (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)
    }
    if service.headless:
        labels[HEADLESS_LABEL] = ""
    labels[SERVICE_NAME_LABEL] = service.meta.name
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    return labels


def _new_slice(
    service: Service,
    address_type: AddressType,
    ports: tuple[EndpointPort, ...],
    endpoints: tuple[Endpoint, ...],
    chunk: int,
) -> EndpointSlice:
    meta = ObjectMeta(
        name=_slice_name(service, address_type, ports, chunk),
        namespace=service.meta.namespace,
        labels=_slice_labels(service),
    )
    return EndpointSlice(meta=meta, address_type=address_type, endpoints=endpoints, ports=ports)
