"""What the cluster would fill in for Nodes and Pods: node addresses and podCIDRs, placement, pod IPs.

Defaults follow the lab's addressing plan: the i-th node (in name order) without an InternalIP gets
198.51.100.<2+i>, without a podCIDR the i-th /24 of the cluster CIDR (10.244.<1+i>.0/24), skipping
values other nodes already hold. Pods without nodeName are placed by a stable hash of `ns/name` over the
sorted nodes; pods without an IP get one from each of their node's podCIDRs, from .2 on (.1 is the node's side
of the pod link). A snapshot passed as `previous` keeps each pod's earlier node and IP when still possible.

Dual-stack pods: when KubeProxyConfiguration.clusterCIDR holds an IPv6 CIDR, or some Node declares an IPv6
podCIDR, every node also gets an IPv6 podCIDR (the i-th /64 of that CIDR, default fd00:10:244::/56, as
kube-controller-manager's `--node-cidr-mask-size-ipv6=64` cuts it: fd00:10:244:<1+i>::/64) and an IPv6
InternalIP (2001:db8:100::<2+i>, documentation space, echoing 198.51.100.0/24), each unless already given.
IPv6 pod addresses come from the first 256 addresses of the node's /64 (::2 on), as host-local IPAM hands
them out in order, so they stay short. IPv4-only clusters are completed exactly as before.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import replace

from kubeplane.model.allocate import AddressPool, PoolExhausted, stable_hash
from kubeplane.model.errors import ErrorPlace, ManifestError
from kubeplane.model.formats import IPNetwork
from kubeplane.model.objects import (
    DEFAULT_POD_CIDR,
    Cluster,
    KubeProxyConfiguration,
    Node,
    NodeAddress,
    ObjectMeta,
    Pod,
)

DEFAULT_NODE_NAME = "node-1"
NODE_ADDRESS_BASE = ipaddress.IPv4Address("198.51.100.0")
NODE_ADDRESS_FIRST = 2
NODE_POD_PREFIX = 24
FIRST_POD_ADDRESS_OFFSET = 2
DEFAULT_IPV6_POD_CIDR = "fd00:10:244::/56"
NODE_IPV6_ADDRESS_BASE = ipaddress.IPv6Address("2001:db8:100::")
NODE_IPV6_POD_PREFIX = 64
IPV6_POD_POOL_PREFIX = 120  # pods are numbered within the first /120 of a node's IPv6 podCIDR


def _error(obj: Node | Pod, field: str, message: str) -> ManifestError:
    return ManifestError(ErrorPlace.of(obj.meta.source, type(obj).__name__, obj.meta.key), field, message)


def complete_nodes(
    nodes: Sequence[Node], pods: Sequence[Pod], proxy: KubeProxyConfiguration, errors: list[ManifestError]
) -> tuple[Node, ...]:
    """Nodes in name order with InternalIP and podCIDR filled; implied by pods' nodeNames if none given."""
    if not nodes:
        names = sorted({pod.node_name for pod in pods if pod.node_name}) or [DEFAULT_NODE_NAME]
        nodes = [Node(meta=ObjectMeta(name=name)) for name in names]
    ordered = sorted(nodes, key=lambda n: n.meta.name)
    used_ips = _unique_values(ordered, lambda n: n.internal_ips, "status.addresses", "InternalIP", errors)
    used_cidrs = _unique_values(ordered, lambda n: n.pod_cidrs, "spec.podCIDRs", "podCIDR", errors)
    subnets = _pod_subnets(proxy)
    ipv6_subnets = _ipv6_pod_subnets(proxy, ordered)
    filled: list[Node] = []
    for i, node in enumerate(ordered):
        addresses = node.addresses
        if not node.internal_ips:
            offset = NODE_ADDRESS_FIRST + i
            while str(NODE_ADDRESS_BASE + offset) in used_ips:
                offset += 1
            used_ips.add(str(NODE_ADDRESS_BASE + offset))
            addresses = (NodeAddress("InternalIP", str(NODE_ADDRESS_BASE + offset)), *addresses)
        pod_cidrs = node.pod_cidrs
        if not pod_cidrs:
            number = 1 + i
            while str(_subnet(subnets, number)) in used_cidrs:
                number += 1
            used_cidrs.add(str(_subnet(subnets, number)))
            pod_cidrs = (str(_subnet(subnets, number)),)
        if ipv6_subnets is not None:
            addresses = _with_ipv6_internal_ip(addresses, i, used_ips)
            pod_cidrs = _with_ipv6_pod_cidr(pod_cidrs, ipv6_subnets, i, used_cidrs)
        filled.append(replace(node, addresses=addresses, pod_cidrs=pod_cidrs))
    return tuple(filled)


def _unique_values(
    nodes: Sequence[Node],
    values: Callable[[Node], tuple[str, ...]],
    field: str,
    what: str,
    errors: list[ManifestError],
) -> set[str]:
    owners: dict[str, Node] = {}
    for node in nodes:
        for value in values(node):
            if value in owners:
                other = owners[value]
                errors.append(_error(node, field, f"{what} {value} is also Node {other.meta.name}'s"))
            owners.setdefault(value, node)
    return set(owners)


def _pod_subnets(proxy: KubeProxyConfiguration) -> IPNetwork:
    """The IPv4 cluster CIDR default podCIDRs are cut from (kube-proxy's clusterCIDR, else 10.244.0.0/16)."""
    for text in proxy.cluster_cidr.split(","):
        if text:
            network = ipaddress.ip_network(text, strict=False)
            if network.version == 4 and network.prefixlen < NODE_POD_PREFIX:
                return network
    return ipaddress.ip_network(DEFAULT_POD_CIDR)


def _subnet(cluster_cidr: IPNetwork, number: int, prefix: int = NODE_POD_PREFIX) -> IPNetwork:
    size = 1 << (cluster_cidr.max_prefixlen - prefix)
    base = int(cluster_cidr.network_address) + number * size
    return ipaddress.ip_network((base, prefix))


def _is_ipv6(text: str) -> bool:
    return ipaddress.ip_network(text, strict=False).version == 6


def _ipv6_pod_subnets(proxy: KubeProxyConfiguration, nodes: Sequence[Node]) -> IPNetwork | None:
    """The IPv6 cluster CIDR nodes' IPv6 podCIDRs are cut from, or None for an IPv4-only cluster.

    A cluster has IPv6 pods when kube-proxy's clusterCIDR names an IPv6 CIDR (used when it is wider than a
    /64) or when a Node declares an IPv6 podCIDR (then the rest are cut from fd00:10:244::/56)."""
    declared = [ipaddress.ip_network(t, strict=False) for t in proxy.cluster_cidr.split(",") if t]
    ipv6 = [n for n in declared if n.version == 6]
    if not ipv6 and not any(_is_ipv6(c) for node in nodes for c in node.pod_cidrs):
        return None
    if ipv6 and ipv6[0].prefixlen < NODE_IPV6_POD_PREFIX:
        return ipv6[0]
    return ipaddress.ip_network(DEFAULT_IPV6_POD_CIDR)


def _with_ipv6_internal_ip(
    addresses: tuple[NodeAddress, ...], index: int, used_ips: set[str]
) -> tuple[NodeAddress, ...]:
    """`addresses` with a default IPv6 InternalIP after the IPv4 ones, unless it has one already."""
    internal = [a for a in addresses if a.type == "InternalIP"]
    if any(ipaddress.ip_address(a.address).version == 6 for a in internal):
        return addresses
    offset = NODE_ADDRESS_FIRST + index
    while str(NODE_IPV6_ADDRESS_BASE + offset) in used_ips:
        offset += 1
    address = str(NODE_IPV6_ADDRESS_BASE + offset)
    used_ips.add(address)
    others = [a for a in addresses if a.type != "InternalIP"]
    return (*internal, NodeAddress("InternalIP", address), *others)


def _with_ipv6_pod_cidr(
    pod_cidrs: tuple[str, ...], subnets: IPNetwork, index: int, used_cidrs: set[str]
) -> tuple[str, ...]:
    """`pod_cidrs` with the node's default IPv6 /64 after the IPv4 one, unless it has an IPv6 podCIDR."""
    if any(_is_ipv6(c) for c in pod_cidrs):
        return pod_cidrs
    number = 1 + index
    while str(_subnet(subnets, number, NODE_IPV6_POD_PREFIX)) in used_cidrs:
        number += 1
    cidr = str(_subnet(subnets, number, NODE_IPV6_POD_PREFIX))
    used_cidrs.add(cidr)
    return (*pod_cidrs, cidr)


def _pod_pool(cidr: str) -> AddressPool:
    """Where pods of one podCIDR get addresses: the whole IPv4 range; the first /120 of an IPv6 one."""
    network = ipaddress.ip_network(cidr)
    if network.version == 6 and network.prefixlen < IPV6_POD_POOL_PREFIX:
        network = next(network.subnets(new_prefix=IPV6_POD_POOL_PREFIX))
    return AddressPool(network, FIRST_POD_ADDRESS_OFFSET)


def complete_pods(
    pods: Sequence[Pod],
    nodes: Sequence[Node],
    previous: Cluster | None,
    errors: list[ManifestError],
) -> tuple[Pod, ...]:
    """Pods in key order, placed, with IPs (from the node's podCIDRs, or the node's own for hostNetwork)."""
    node_by_name = {node.meta.name: node for node in nodes}
    before = {pod.meta.key: pod for pod in previous.pods} if previous else {}
    ordered = sorted(pods, key=lambda p: p.meta.key)
    placed: list[Pod] = []
    for pod in ordered:
        if pod.node_name and pod.node_name not in node_by_name:
            known = ", ".join(node_by_name)
            errors.append(_error(pod, "spec.nodeName", f"node {pod.node_name!r} not found (nodes: {known})"))
            continue
        placed.append(replace(pod, node_name=pod.node_name or _place(pod, nodes, before)))
    pools = {node.meta.name: [_pod_pool(c) for c in node.pod_cidrs] for node in nodes}
    owners: dict[str, Pod] = {}
    for pod in placed:
        if pod.host_network:
            continue
        for i, text in enumerate(pod.pod_ips):
            if text in owners:
                where = "status.podIP" if i == 0 else f"status.podIPs[{i}]"
                other = owners[text]
                errors.append(
                    _error(pod, where, f"{text} is already Pod {other.meta.key}'s ({other.meta.source})")
                )
            owners.setdefault(text, pod)
            address = ipaddress.ip_address(text)
            for pool in pools[pod.node_name]:
                if pool.contains(address):
                    pool.reserve(address)
    done: list[Pod] = []
    for pod in placed:
        node = node_by_name[pod.node_name]
        if pod.host_network:
            done.append(replace(pod, pod_ips=pod.pod_ips or node.internal_ips))
        elif pod.pod_ips:
            done.append(pod)
        else:
            done.append(
                replace(
                    pod, pod_ips=_pod_addresses(pod, pools[pod.node_name], before.get(pod.meta.key), errors)
                )
            )
    return tuple(done)


def _place(pod: Pod, nodes: Sequence[Node], before: dict[str, Pod]) -> str:
    names = [node.meta.name for node in nodes]
    earlier = before.get(pod.meta.key)
    if earlier is not None and earlier.node_name in names:
        return earlier.node_name
    return names[stable_hash(pod.meta.key) % len(names)]


def _pod_addresses(
    pod: Pod, pools: Sequence[AddressPool], earlier: Pod | None, errors: list[ManifestError]
) -> tuple[str, ...]:
    addresses: list[str] = []
    for pool in pools:
        kept = _kept_address(pool, earlier, pod.node_name)
        if kept is not None:
            addresses.append(kept)
            continue
        try:
            addresses.append(str(pool.allocate(pod.meta.key)))
        except PoolExhausted as err:
            errors.append(_error(pod, "status.podIP", f"cannot allocate: {err}"))
    return tuple(addresses)


def _kept_address(pool: AddressPool, earlier: Pod | None, node_name: str) -> str | None:
    """The pod's address in the previous snapshot, when it is still on the same node and still free."""
    if earlier is None or earlier.node_name != node_name:
        return None
    for text in earlier.pod_ips:
        address = ipaddress.ip_address(text)
        if pool.contains(address) and not pool.is_taken(address):
            pool.reserve(address)
            return text
    return None
