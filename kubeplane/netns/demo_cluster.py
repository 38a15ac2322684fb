"""Build a small Cluster in code, with the addresses the manifest loader would allocate.

For tests, benchmarks and examples that need a lab without writing manifests: nodes `node-1..N` at
198.51.100.2.., podCIDRs 10.244.<i>.0/24, pods `<prefix>-<node>-<j>` with IPs from .2 upwards, each
running the default echo workload on the given container ports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kubeplane.model.objects import (
    Cluster,
    Container,
    ContainerPort,
    Node,
    NodeAddress,
    ObjectMeta,
    Pod,
    Protocol,
)

DEFAULT_PORTS: tuple[tuple[int, Protocol], ...] = ((8080, "TCP"), (5353, "UDP"))


def demo_node(index: int) -> Node:
    """Node `node-<index>` (1-based) with InternalIP 198.51.100.<index+1> and podCIDR 10.244.<index>.0/24."""
    return Node(
        meta=ObjectMeta(name=f"node-{index}"),
        pod_cidrs=(f"10.244.{index}.0/24",),
        addresses=(NodeAddress("InternalIP", f"198.51.100.{index + 1}"),),
    )


def demo_pod(
    name: str,
    node_index: int,
    host: int,
    namespace: str = "default",
    ports: Sequence[tuple[int, Protocol]] = DEFAULT_PORTS,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> Pod:
    """A pod on node `node-<node_index>` with IP 10.244.<node_index>.<host>."""
    return Pod(
        meta=ObjectMeta(
            name=name, namespace=namespace, labels=dict(labels or {}), annotations=dict(annotations or {})
        ),
        node_name=f"node-{node_index}",
        containers=(Container("app", tuple(ContainerPort(p, proto) for p, proto in ports)),),
        pod_ips=(f"10.244.{node_index}.{host}",),
    )


def demo_cluster(
    nodes: int = 2,
    pods_per_node: int = 1,
    namespace: str = "default",
    ports: Sequence[tuple[int, Protocol]] = DEFAULT_PORTS,
    prefix: str = "echo",
) -> Cluster:
    """`nodes` nodes with `pods_per_node` echo pods each, named `<prefix>-<node index>-<j>`."""
    node_objects = tuple(demo_node(i) for i in range(1, nodes + 1))
    pods = tuple(
        demo_pod(f"{prefix}-{i}-{j}", i, j + 2, namespace=namespace, ports=ports)
        for i in range(1, nodes + 1)
        for j in range(pods_per_node)
    )
    return Cluster(pods=pods, nodes=node_objects)
