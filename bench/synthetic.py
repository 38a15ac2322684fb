"""The synthetic cluster the proxy and trace benchmarks share: N ClusterIP services x E endpoints.

Every service is `bench/svc-<i>`, one TCP port 80 named `http` targeting 8080, with one EndpointSlice of
`endpoints_per_service` ready endpoints. A bench chooses its own node layout: how many nodes the cluster
has (`node-0`, `node-1`, ...) and which of them host endpoints (round-robin, so a bench can keep every
endpoint off the node it proxies). Addresses are dense and never collide up to 10k services x 10
endpoints on one node:

- service i: cluster IP 10.96.0.10 + i (inside the 10.96.0.0/12 service range);
- node n: InternalIP 198.51.100.(n + 2), podCIDR 10.(128 + 4n).0.0/14, clusterCIDR 10.128.0.0/9;
- the k-th endpoint placed on node n: the (k + 2)-th address of that node's podCIDR.

Addresses are formatted from integers: ipaddress objects would cost seconds at 100k endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from kubeplane.model.objects import (
    SERVICE_NAME_LABEL,
    Cluster,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    KubeProxyConfiguration,
    Node,
    NodeAddress,
    ObjectMeta,
    Service,
    ServicePort,
)

NAMESPACE = "bench"
SERVICE_PORT = 80
TARGET_PORT = 8080
PORT_NAME = "http"
CLUSTER_CIDR = "10.128.0.0/9"
MAX_NODES = 32  # podCIDRs 10.128.0.0/14 ... 10.252.0.0/14
_SERVICE_BASE = (10 << 24) | (96 << 16) | 10
_MOVED_ENDPOINT = "10.127.0.2"  # outside every podCIDR: a fresh address for the "one endpoint change"


@dataclass(frozen=True)
class SyntheticLayout:
    """Size and node layout. `endpoint_nodes` lists the node indices hosting endpoints (default: all)."""

    services: int
    endpoints_per_service: int = 10
    nodes: int = 1
    endpoint_nodes: tuple[int, ...] = ()
    mode: Literal["iptables", "ipvs", "nftables"] = "iptables"

    def hosting_nodes(self) -> tuple[int, ...]:
        return self.endpoint_nodes or tuple(range(self.nodes))


def node_name(index: int) -> str:
    return f"node-{index}"


def node_ip(index: int) -> str:
    return f"198.51.100.{index + 2}"


def service_name(index: int) -> str:
    return f"svc-{index}"


def service_ip(index: int) -> str:
    return _dotted(_SERVICE_BASE + index)


def pod_ip(node: int, offset: int) -> str:
    """The `offset`-th address of node `node`'s podCIDR."""
    return _dotted(((10 << 24) | ((128 + 4 * node) << 16)) + offset)


def _dotted(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def synthetic_cluster(layout: SyntheticLayout) -> Cluster:
    if not 1 <= layout.nodes <= MAX_NODES:
        raise ValueError(f"nodes must be 1..{MAX_NODES}, not {layout.nodes}")
    nodes = tuple(
        Node(
            ObjectMeta(name=node_name(n)),
            pod_cidrs=(f"10.{128 + 4 * n}.0.0/14",),
            addresses=(NodeAddress("InternalIP", node_ip(n)),),
        )
        for n in range(layout.nodes)
    )
    hosting = layout.hosting_nodes()
    placed = [0] * MAX_NODES
    services = []
    slices = []
    for s in range(layout.services):
        name = service_name(s)
        services.append(
            Service(
                ObjectMeta(name=name, namespace=NAMESPACE),
                selector={"app": name},
                cluster_ips=(service_ip(s),),
                ports=(ServicePort(port=SERVICE_PORT, name=PORT_NAME, target_port=TARGET_PORT),),
            )
        )
        endpoints = []
        for e in range(layout.endpoints_per_service):
            n = hosting[(s * layout.endpoints_per_service + e) % len(hosting)]
            placed[n] += 1
            endpoints.append(Endpoint((pod_ip(n, placed[n] + 1),), node_name=node_name(n)))
        slices.append(
            EndpointSlice(
                ObjectMeta(name=f"{name}-1", namespace=NAMESPACE, labels={SERVICE_NAME_LABEL: name}),
                endpoints=tuple(endpoints),
                ports=(EndpointPort(port=TARGET_PORT, name=PORT_NAME),),
            )
        )
    return Cluster(
        services=tuple(services),
        endpoint_slices=tuple(slices),
        nodes=nodes,
        proxy_config=KubeProxyConfiguration(mode=layout.mode, cluster_cidr=CLUSTER_CIDR),
    )


def with_one_endpoint_moved(cluster: Cluster) -> Cluster:
    """`cluster` with the last endpoint of the first slice moved to a fresh address (one changed service)."""
    first = cluster.endpoint_slices[0]
    moved = replace(first.endpoints[-1], addresses=(_MOVED_ENDPOINT,))
    changed = replace(first, endpoints=(*first.endpoints[:-1], moved))
    return replace(cluster, endpoint_slices=(changed, *cluster.endpoint_slices[1:]))
