"""The lab as data: which namespaces, addresses, routes and workloads a Cluster needs (pure, no I/O).

Addressing (documented here because tests and users rely on it):

- Underlay: each node's `eth0` carries its InternalIP with the underlay prefix (the longest prefix, at most
  /24, that covers every node). The underlay namespace is the lab's router: its bridge carries the first free
  address of the underlay network (198.51.100.1 by default) and 203.0.113.1/24 for the external client. It
  forwards between the two and routes LoadBalancer ingress IPs, `loadBalancerIP`s and externalIPs to the first
  node, as a MetalLB/BGP or cloud load balancer would. It has no default route: nothing leaves the lab.
- Nodes: default route and service-CIDR routes via the router; each other node's podCIDR via that node's
  IP; `<podCIDR>.1/32` on every pod veth (the gateway pods use) and a /32 route per local pod (kindnet-style
  ptp, so hairpin traffic simply goes back down the same veth). IPv4 ExternalIPs of a node are extra /32s on
  its `eth0`, and the router routes them to its InternalIP.
- Pods: `eth0` has podIP/32, default route via the node's gateway address with `onlink`.
- External: `eth0` 203.0.113.10/24, default route via 203.0.113.1.

Dual-stack (when a node has an IPv6 InternalIP; see kubeplane.model.complete_topology for the defaults) adds
the same wiring in IPv6, next to the IPv4 one: node `eth0`s carry their IPv6 InternalIP in the underlay's
IPv6 prefix (the longest, at most /64, holding every node: 2001:db8:100::/64 by default), the router the
first free address of it (2001:db8:100::1) and 2001:db8:113::1/64 for the external client (2001:db8:113::10);
each node routes the other nodes' IPv6 podCIDRs via their IPv6 InternalIP and the IPv6 ServiceCIDRs via the
router; `<IPv6 podCIDR>::1/128` sits on every pod veth and the pod's `eth0` has its IPv6 address/128 with a
default route via that gateway (`onlink`). IPv6 LoadBalancer ingress, `loadBalancerIP`s and externalIPs are
routed to the first node's IPv6 address. Duplicate address detection is off in every lab namespace, so
addresses are usable at once; the router has no IPv6 default route either.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from typing import Literal

import yaml

from kubeplane.model.formats import IPNetwork
from kubeplane.model.objects import DEFAULT_SERVICE_CIDR, Cluster, Node, Pod
from kubeplane.netns import names
from kubeplane.netns.addressing import (
    address_of_family,
    cidr_of_family,
    covering_network,
    first_free_host,
    first_host,
)

WORKLOAD_ANNOTATION = "kubeplane.dev/workload"
COMMAND_ANNOTATION = "kubeplane.dev/command"

EXTERNAL_NETWORK = ipaddress.IPv4Network("203.0.113.0/24")
EXTERNAL_ROUTER_IP = "203.0.113.1"
EXTERNAL_CLIENT_IP = "203.0.113.10"
EXTERNAL_NETWORK6 = ipaddress.IPv6Network("2001:db8:113::/64")
EXTERNAL_ROUTER_IP6 = "2001:db8:113::1"
EXTERNAL_CLIENT_IP6 = "2001:db8:113::10"
UNDERLAY_MAX_PREFIX = 24
UNDERLAY_MAX_PREFIX6 = 64

WorkloadKind = Literal["echo", "tcp-echo", "command", "none"]
_WORKLOAD_KINDS: tuple[WorkloadKind, ...] = ("echo", "tcp-echo", "command", "none")
PortProtocol = Literal["TCP", "UDP"]


class LabPlanError(ValueError):
    """The manifests describe something the lab cannot build; the message names the object and field."""


@dataclass(frozen=True)
class WorkloadPort:
    port: int
    protocol: PortProtocol
    name: str = ""


@dataclass(frozen=True)
class Workload:
    """What runs in one pod: `echo` (HTTP echo on TCP ports, falling back to a plain echo for non-HTTP
    clients; UDP echo on UDP ports), `tcp-echo` (plain echo on TCP ports), `command` or `none`."""

    namespace: str
    pod: str
    node: str
    netns: str
    pod_ip: str
    kind: WorkloadKind
    ports: tuple[WorkloadPort, ...] = ()
    command: tuple[str, ...] = ()
    pod_ip6: str | None = None  # set for dual-stack pods: the built-in workloads listen on IPv6 too

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod}"


@dataclass(frozen=True)
class NodePlan:
    name: str
    netns: str
    ip: str
    pod_cidr: str | None
    gateway_ip: str | None  # the first host of pod_cidr, put on every pod veth of this node
    underlay_port: str  # this node's veth on the underlay bridge
    external_ips: tuple[str, ...] = ()  # ExternalIPs: /32s (/128s) on eth0, routed to the node by the router
    ip6: str | None = None  # IPv6 InternalIP (dual-stack labs)
    pod_cidr6: str | None = None
    gateway_ip6: str | None = None  # the first host of pod_cidr6, put on every pod veth of this node


@dataclass(frozen=True)
class PodPlan:
    namespace: str
    name: str
    node: str
    netns: str  # the node's namespace for hostNetwork pods
    ip: str
    host_network: bool
    node_veth: str  # the node-side interface name ("" for hostNetwork pods)
    hostname: str
    subdomain: str
    workload: Workload
    ip6: str | None = None  # IPv6 pod IP of a dual-stack pod

    @property
    def ips(self) -> tuple[str, ...]:
        """The pod's addresses, IPv4 first."""
        return (self.ip, self.ip6) if self.ip6 else (self.ip,)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class LabPlan:
    lab: str
    underlay_netns: str
    external_netns: str
    underlay_network: str  # e.g. 198.51.100.0/24
    router_ip: str
    service_cidrs: tuple[str, ...]  # IPv6 ones only in a dual-stack lab
    external_routes: tuple[str, ...]  # /32 (/128) destinations the router sends to the first node
    dns_ip: str
    cluster_domain: str
    nodes: tuple[NodePlan, ...]
    pods: tuple[PodPlan, ...]
    underlay_network6: str | None = None  # set in a dual-stack lab, e.g. 2001:db8:100::/64
    router_ip6: str | None = None

    @property
    def dual_stack(self) -> bool:
        return self.router_ip6 is not None

    @property
    def external_ip(self) -> str:
        return EXTERNAL_CLIENT_IP

    @property
    def external_ip6(self) -> str | None:
        return EXTERNAL_CLIENT_IP6 if self.dual_stack else None

    @property
    def pod_netnses(self) -> tuple[str, ...]:
        return tuple(p.netns for p in self.pods if not p.host_network)

    @property
    def all_netnses(self) -> tuple[str, ...]:
        """Every namespace of the lab, in creation order."""
        return (
            self.underlay_netns,
            self.external_netns,
            *(n.netns for n in self.nodes),
            *self.pod_netnses,
        )

    def node(self, name: str) -> NodePlan:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)


def _where(pod_or_node: Pod | Node) -> str:
    kind = "Pod" if isinstance(pod_or_node, Pod) else "Node"
    src = f"{pod_or_node.meta.source}: " if pod_or_node.meta.source else ""
    return f"{src}{kind} {pod_or_node.meta.key}"


def _router_ip(network: IPNetwork, node_ips: list[str]) -> str:
    found = first_free_host(network, node_ips)
    if found is None:
        raise LabPlanError(f"underlay network {network} has no free address for the lab router")
    return found


def parse_command(pod: Pod, text: str) -> tuple[str, ...]:
    """The argv of the `kubeplane.dev/command` annotation: a YAML list, or a string split like a shell would
    split words (no shell runs it)."""
    stripped = text.strip()
    try:
        if stripped.startswith("["):
            value = yaml.safe_load(stripped)
            if not isinstance(value, list) or not all(isinstance(v, str | int | float) for v in value):
                raise ValueError("expected a list of strings")
            argv = tuple(str(v) for v in value)
        else:
            argv = tuple(shlex.split(stripped))
    except (ValueError, yaml.YAMLError) as err:
        raise LabPlanError(f"{_where(pod)}: annotation {COMMAND_ANNOTATION}: {err}") from err
    if not argv:
        raise LabPlanError(f"{_where(pod)}: annotation {COMMAND_ANNOTATION}: empty command")
    return argv


def _workload_kind(pod: Pod) -> tuple[WorkloadKind, tuple[str, ...]]:
    annotations = pod.meta.annotations
    if COMMAND_ANNOTATION in annotations:
        return "command", parse_command(pod, annotations[COMMAND_ANNOTATION])
    kind = annotations.get(WORKLOAD_ANNOTATION, "echo")
    if kind not in _WORKLOAD_KINDS or kind == "command":
        choices = ", ".join(k for k in _WORKLOAD_KINDS if k != "command")
        raise LabPlanError(
            f"{_where(pod)}: annotation {WORKLOAD_ANNOTATION}: {kind!r} is not one of {choices}"
        )
    return kind, ()


def _workload_ports(pod: Pod) -> tuple[WorkloadPort, ...]:
    ports: list[WorkloadPort] = []
    seen: set[tuple[int, str]] = set()
    for container in pod.containers:
        for cport in container.ports:
            if cport.protocol == "SCTP" or (cport.container_port, cport.protocol) in seen:
                continue
            seen.add((cport.container_port, cport.protocol))
            ports.append(WorkloadPort(cport.container_port, cport.protocol, cport.name))
    return tuple(ports)


def _plan_node(lab: str, node: Node) -> NodePlan:
    ip = address_of_family(node.internal_ips, 4)
    if ip is None:
        raise LabPlanError(f"{_where(node)}: status.addresses: no IPv4 InternalIP")
    ip6 = address_of_family(node.internal_ips, 6)
    cidr6 = cidr_of_family(node.pod_cidrs, 6)
    if cidr6 is not None and ip6 is None:
        raise LabPlanError(
            f"{_where(node)}: status.addresses: no IPv6 InternalIP to route its IPv6 podCIDR {cidr6}"
        )
    external_families = (4, 6) if ip6 else (4,)
    cidr = cidr_of_family(node.pod_cidrs, 4)
    return NodePlan(
        name=node.meta.name,
        netns=names.node_netns(lab, node.meta.name),
        ip=ip,
        pod_cidr=cidr,
        gateway_ip=first_host(cidr),
        underlay_port=names.node_port_ifname(node.meta.name),
        external_ips=tuple(
            a.address
            for a in node.addresses
            if a.type == "ExternalIP" and ipaddress.ip_address(a.address).version in external_families
        ),
        ip6=ip6,
        pod_cidr6=cidr6,
        gateway_ip6=first_host(cidr6),
    )


def _checked_pod_ip(pod: Pod, node: NodePlan, version: int) -> str | None:
    """The pod's IP of one family, checked against the node's podCIDR of that family."""
    found = address_of_family(pod.pod_ips, version)
    family = f"IPv{version}"
    if found is None:
        if version == 4:
            raise LabPlanError(f"{_where(pod)}: status.podIPs: no IPv4 pod IP")
        return None
    cidr, gateway = (node.pod_cidr, node.gateway_ip) if version == 4 else (node.pod_cidr6, node.gateway_ip6)
    if cidr is None or gateway is None:
        raise LabPlanError(f"{_where(pod)}: spec.nodeName: node {node.name} has no {family} podCIDR")
    if ipaddress.ip_address(found) not in ipaddress.ip_network(cidr, strict=False):
        raise LabPlanError(
            f"{_where(pod)}: status.podIPs: {found} is outside node {node.name}'s podCIDR {cidr}"
        )
    if found == gateway:
        raise LabPlanError(f"{_where(pod)}: status.podIPs: {found} is node {node.name}'s pod gateway address")
    return found


def _plan_pod(lab: str, pod: Pod, node: NodePlan) -> PodPlan:
    kind, command = _workload_kind(pod)
    if pod.host_network:
        ip, ip6, netns, veth = node.ip, node.ip6, node.netns, ""
    else:
        ip = _checked_pod_ip(pod, node, 4) or ""
        ip6 = _checked_pod_ip(pod, node, 6)
        netns = names.pod_netns(lab, pod.meta.namespace, pod.meta.name)
        veth = names.pod_veth_ifname(pod.meta.namespace, pod.meta.name)
    workload = Workload(
        namespace=pod.meta.namespace,
        pod=pod.meta.name,
        node=node.name,
        netns=netns,
        pod_ip=ip,
        kind=kind,
        ports=_workload_ports(pod),
        command=command,
        pod_ip6=ip6,
    )
    return PodPlan(
        namespace=pod.meta.namespace,
        name=pod.meta.name,
        node=node.name,
        netns=netns,
        ip=ip,
        host_network=pod.host_network,
        node_veth=veth,
        hostname=pod.hostname or pod.meta.name,
        subdomain=pod.subdomain,
        workload=workload,
        ip6=ip6,
    )


def _external_routes(cluster: Cluster, versions: tuple[int, ...]) -> tuple[str, ...]:
    ips: list[str] = []
    for svc in cluster.services:
        candidates = [*svc.external_ips, *(i.ip for i in svc.load_balancer_ingress if i.ip)]
        if svc.load_balancer_ip:
            candidates.append(svc.load_balancer_ip)
        for ip in candidates:
            if ipaddress.ip_address(ip).version in versions and ip not in ips:
                ips.append(ip)
    return tuple(ips)


def _dns_ip(cluster: Cluster, service_cidrs: tuple[str, ...]) -> str:
    if cluster.kubeplane_config.dns_service_ip:
        return cluster.kubeplane_config.dns_service_ip
    return str(ipaddress.ip_network(service_cidrs[0], strict=False)[10])


def _check_unique_netns(plan_nodes: tuple[NodePlan, ...], pods: list[PodPlan], lab: str) -> None:
    owner: dict[str, str] = {names.underlay_netns(lab): "the underlay", names.external_netns(lab): "external"}
    owner.update({n.netns: f"Node {n.name}" for n in plan_nodes})
    for pod in pods:
        if pod.host_network:
            continue
        if pod.netns in owner:
            raise LabPlanError(
                f"Pod {pod.key}: namespace name {pod.netns} is already taken by {owner[pod.netns]}"
            )
        owner[pod.netns] = f"Pod {pod.key}"


def plan_lab(lab: str, cluster: Cluster) -> LabPlan:
    """Everything `up` will create for `cluster`, or LabPlanError naming the first object it cannot build.

    Pods that finished (phase Succeeded/Failed) or are not scheduled get no namespace, as a kubelet would keep
    no sandbox for them."""
    names.validate_lab_name(lab)
    nodes = tuple(_plan_node(lab, node) for node in cluster.nodes)
    if not nodes:
        raise LabPlanError("the cluster has no Node objects: a lab needs at least one node")
    node_ips = [n.ip for n in nodes]
    if len(set(node_ips)) != len(node_ips):
        raise LabPlanError(f"two nodes share an InternalIP: {', '.join(node_ips)}")
    by_name = {n.name: n for n in nodes}
    pods: list[PodPlan] = []
    for pod in cluster.pods:
        if pod.phase in ("Succeeded", "Failed") or not pod.node_name:
            continue
        node = by_name.get(pod.node_name)
        if node is None:
            raise LabPlanError(f"{_where(pod)}: spec.nodeName: no Node named {pod.node_name!r}")
        pods.append(_plan_pod(lab, pod, node))
    _check_unique_netns(nodes, pods, lab)
    _check_unique_pod_ips(pods)
    network = covering_network(node_ips, UNDERLAY_MAX_PREFIX)
    node_ips6 = [n.ip6 for n in nodes if n.ip6]
    if len(set(node_ips6)) != len(node_ips6):
        raise LabPlanError(f"two nodes share an IPv6 InternalIP: {', '.join(node_ips6)}")
    network6 = covering_network(node_ips6, UNDERLAY_MAX_PREFIX6) if node_ips6 else None
    versions = (4, 6) if network6 else (4,)
    all_service_cidrs = tuple(c for s in cluster.service_cidrs for c in s.cidrs) or (DEFAULT_SERVICE_CIDR,)
    ipv4_service_cidrs = tuple(
        c for c in all_service_cidrs if ipaddress.ip_network(c, strict=False).version == 4
    )
    return LabPlan(
        lab=lab,
        underlay_netns=names.underlay_netns(lab),
        external_netns=names.external_netns(lab),
        underlay_network=str(network),
        router_ip=_router_ip(network, node_ips),
        service_cidrs=tuple(
            c for c in all_service_cidrs if ipaddress.ip_network(c, strict=False).version in versions
        ),
        external_routes=_external_routes(cluster, versions),
        dns_ip=_dns_ip(cluster, ipv4_service_cidrs or (DEFAULT_SERVICE_CIDR,)),
        cluster_domain=cluster.kubeplane_config.cluster_domain,
        nodes=nodes,
        pods=tuple(pods),
        underlay_network6=str(network6) if network6 else None,
        router_ip6=_router_ip(network6, node_ips6) if network6 else None,
    )


def _check_unique_pod_ips(pods: list[PodPlan]) -> None:
    seen_ips: dict[str, str] = {}
    for planned in pods:
        if planned.host_network:
            continue
        for ip in planned.ips:
            if ip in seen_ips:
                raise LabPlanError(f"Pod {planned.key}: status.podIPs: {ip} is also Pod {seen_ips[ip]}'s IP")
            seen_ips[ip] = planned.key
