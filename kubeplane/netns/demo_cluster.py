"""Build a small Cluster in code, with the addresses the manifest loader would allocate.

For tests, benchmarks and examples that need a lab without writing manifests: nodes `node-1..N` at
198.51.100.2.., podCIDRs 10.244.<i>.0/24, pods `<prefix>-<node>-<j>` with IPs from .2 upwards, each
running the default echo workload on the given container ports. `dual_stack=True` adds the IPv6 side the
model's completion would give: node 2001:db8:100::<i+1> with podCIDR fd00:10:244:<i>::/64, pod
fd00:10:244:<i>::<j> (the same host number as its IPv4 address, written in hex).
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


def demo_node(index: int, dual_stack: bool = False) -> Node:
    """Node `node-<index>` (1-based) with InternalIP 198.51.100.<index+1> and podCIDR 10.244.<index>.0/24."""
    pod_cidrs = [f"10.244.{index}.0/24"]
    addresses = [NodeAddress("InternalIP", f"198.51.100.{index + 1}")]
    if dual_stack:
        pod_cidrs.append(f"fd00:10:244:{index:x}::/64")
        addresses.append(NodeAddress("InternalIP", f"2001:db8:100::{index + 1:x}"))
    return Node(meta=ObjectMeta(name=f"node-{index}"), pod_cidrs=tuple(pod_cidrs), addresses=tuple(addresses))


def demo_pod(
    name: str,
    node_index: int,
    host: int,
    namespace: str = "default",
    ports: Sequence[tuple[int, Protocol]] = DEFAULT_PORTS,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    dual_stack: bool = False,
) -> Pod:
    """A pod on node `node-<node_index>` with IP 10.244.<node_index>.<host> (+ fd00:10:244:<node>::<host>)."""
    pod_ips = [f"10.244.{node_index}.{host}"]
    if dual_stack:
        pod_ips.append(f"fd00:10:244:{node_index:x}::{host:x}")
    return Pod(
        meta=ObjectMeta(
            name=name, namespace=namespace, labels=dict(labels or {}), annotations=dict(annotations or {})
        ),
        node_name=f"node-{node_index}",
        containers=(Container("app", tuple(ContainerPort(p, proto) for p, proto in ports)),),
        pod_ips=tuple(pod_ips),
    )


def demo_cluster(
    nodes: int = 2,
    pods_per_node: int = 1,
    namespace: str = "default",
    ports: Sequence[tuple[int, Protocol]] = DEFAULT_PORTS,
    prefix: str = "echo",
    dual_stack: bool = False,
) -> Cluster:
    """`nodes` nodes with `pods_per_node` echo pods each, named `<prefix>-<node index>-<j>`."""
    node_objects = tuple(demo_node(i, dual_stack) for i in range(1, nodes + 1))
    pods = tuple(
        demo_pod(f"{prefix}-{i}-{j}", i, j + 2, namespace=namespace, ports=ports, dual_stack=dual_stack)
        for i in range(1, nodes + 1)
        for j in range(pods_per_node)
    )
    return Cluster(pods=pods, nodes=node_objects)
