"""Build a LabPlan's links, addresses, routes and sysctls with netlink (pyroute2), namespace by namespace.

Every veth is created from inside a lab namespace with its peer placed directly into another lab namespace
(IFLA_NET_NS_FD on the peer), so no interface ever exists in the root namespace, not even for a moment. Work
for one namespace runs on a thread that entered it (see nsfs.in_netns), so netlink sockets are opened without
a fork. See kubeplane.netns.plan for the addressing and kubeplane.netns.names for the interface names.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD
from pyroute2.netlink.rtnl.rtmsg import RTNH_F_ONLINK

from kubeplane.netns import names
from kubeplane.netns.nsfs import in_netns, netns_path, write_sysctl
from kubeplane.netns.plan import (
    EXTERNAL_CLIENT_IP,
    EXTERNAL_CLIENT_IP6,
    EXTERNAL_NETWORK,
    EXTERNAL_NETWORK6,
    EXTERNAL_ROUTER_IP,
    EXTERNAL_ROUTER_IP6,
    LabPlan,
    NodePlan,
    PodPlan,
)

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

# Namespace-wide settings written before any interface exists, so every interface inherits them.
_COMMON_SYSCTLS = (
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
    ("net.ipv4.conf.all.accept_redirects", "0"),
    ("net.ipv4.conf.default.accept_redirects", "0"),
)
_ROUTER_SYSCTLS = (
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv4.conf.all.send_redirects", "0"),
    ("net.ipv4.conf.default.send_redirects", "0"),
)
# route_localnet lets kube-proxy's localhost NodePorts work; ip_forward makes the node a router for its pods.
_NODE_SYSCTLS = (*_ROUTER_SYSCTLS, ("net.ipv4.conf.all.route_localnet", "1"))
# Dual-stack labs only. Without duplicate address detection an address is usable the moment it is added
# (no second of "tentative"); the lab owns every address, so there is nothing to detect. Interfaces copy
# `default` when they are created, so these are written in a namespace before any of its links exist.
_IPV6_SYSCTLS = (
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv6.conf.all.accept_redirects", "0"),
    ("net.ipv6.conf.default.accept_redirects", "0"),
)
_IPV6_ROUTER_SYSCTLS = (
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv6.conf.default.forwarding", "1"),
)


class TopologyError(RuntimeError):
    """Netlink refused part of the lab; the message names the namespace and the step."""


@contextmanager
def _netns_fd(netns: str) -> Iterator[int]:
    fd = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _apply_sysctls(settings: Sequence[tuple[str, str]]) -> None:
    for key, value in settings:
        write_sysctl(key, value)


def _sysctls(plan: LabPlan, ipv4: Sequence[tuple[str, str]], router: bool) -> tuple[tuple[str, str], ...]:
    """`ipv4` plus, in a dual-stack lab, the IPv6 settings (forwarding too when the namespace routes)."""
    if not plan.dual_stack:
        return tuple(ipv4)
    return (*ipv4, *_IPV6_SYSCTLS, *(_IPV6_ROUTER_SYSCTLS if router else ()))


def _add_address(ipr: IPRoute, index: int, address: str, prefixlen: int) -> None:
    """Add an address; IPv6 ones skip duplicate address detection (`nodad`)."""
    if ":" in address:
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen, flags=IFA_F_NODAD)
    else:
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen)


def _host_prefixlen(address: str) -> int:
    return 128 if ":" in address else 32


def _ifindex(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise TopologyError(f"interface {ifname} not found")
    return int(found[0])


def _set_up(ipr: IPRoute, ifname: str) -> int:
    index = _ifindex(ipr, ifname)
    ipr.link("set", index=index, state="up")
    return index


def _add_veth(ipr: IPRoute, ifname: str, peer_ifname: str, peer_netns: str) -> int:
    """Create veth `ifname` here with `peer_ifname` born in `peer_netns`; return the local index."""
    with _netns_fd(peer_netns) as fd:
        ipr.link("add", ifname=ifname, kind="veth", peer={"ifname": peer_ifname, "net_ns_fd": fd})
    return _set_up(ipr, ifname)


def _route_to(ipr: IPRoute, destination: str, node: NodePlan) -> None:
    """Route `destination` (an address) to `node`'s InternalIP of the same family."""
    gateway = node.ip6 if ":" in destination else node.ip
    ipr.route("add", dst=f"{destination}/{_host_prefixlen(destination)}", gateway=gateway)


def _build_underlay(plan: LabPlan) -> None:
    network = ipaddress.ip_network(plan.underlay_network)

    def configure() -> None:
        _apply_sysctls(_sysctls(plan, (*_COMMON_SYSCTLS, *_ROUTER_SYSCTLS), router=True))
        with IPRoute() as ipr:
            _set_up(ipr, "lo")
            if plan.dual_stack:
                # No MLD snooping: neighbour discovery's multicast must reach every port from the start.
                ipr.link("add", ifname=names.UNDERLAY_BRIDGE, kind="bridge", br_mcast_snooping=0)
            else:
                ipr.link("add", ifname=names.UNDERLAY_BRIDGE, kind="bridge")
            bridge = _set_up(ipr, names.UNDERLAY_BRIDGE)
            ipr.addr("add", index=bridge, address=plan.router_ip, prefixlen=network.prefixlen)
            ipr.addr("add", index=bridge, address=EXTERNAL_ROUTER_IP, prefixlen=EXTERNAL_NETWORK.prefixlen)
            if plan.router_ip6 and plan.underlay_network6:
                prefixlen6 = ipaddress.ip_network(plan.underlay_network6).prefixlen
                _add_address(ipr, bridge, plan.router_ip6, prefixlen6)
                _add_address(ipr, bridge, EXTERNAL_ROUTER_IP6, EXTERNAL_NETWORK6.prefixlen)
            ports = [(n.underlay_port, n.netns) for n in plan.nodes]
            ports.append((names.UNDERLAY_EXTERNAL_PORT, plan.external_netns))
            for port, peer_netns in ports:
                index = _add_veth(ipr, port, names.NODE_UPLINK_IFNAME, peer_netns)
                ipr.link("set", index=index, master=bridge)
            for node in plan.nodes:
                for external_ip in node.external_ips:
                    _route_to(ipr, external_ip, node)
            for destination in plan.external_routes:
                _route_to(ipr, destination, plan.nodes[0])

    in_netns(plan.underlay_netns, configure)


def _build_external(plan: LabPlan) -> None:
    def configure() -> None:
        _apply_sysctls(_sysctls(plan, _COMMON_SYSCTLS, router=False))
        with IPRoute() as ipr:
            _set_up(ipr, "lo")
            eth0 = _set_up(ipr, names.EXTERNAL_IFNAME)
            ipr.addr("add", index=eth0, address=EXTERNAL_CLIENT_IP, prefixlen=EXTERNAL_NETWORK.prefixlen)
            ipr.route("add", dst="default", gateway=EXTERNAL_ROUTER_IP, oif=eth0)
            if plan.dual_stack:
                _add_address(ipr, eth0, EXTERNAL_CLIENT_IP6, EXTERNAL_NETWORK6.prefixlen)
                ipr.route("add", dst="default", gateway=EXTERNAL_ROUTER_IP6, oif=eth0)

    in_netns(plan.external_netns, configure)


def _attach_to_node(ipr: IPRoute, node: NodePlan, pods: Sequence[PodPlan]) -> None:
    for pod in pods:
        veth = _add_veth(ipr, pod.node_veth, names.POD_IFNAME, pod.netns)
        ipr.addr("add", index=veth, address=node.gateway_ip, prefixlen=32)
        ipr.route("add", dst=f"{pod.ip}/32", oif=veth, prefsrc=node.gateway_ip, scope=253)
        if pod.ip6 and node.gateway_ip6:
            _add_address(ipr, veth, node.gateway_ip6, 128)
            ipr.route("add", dst=f"{pod.ip6}/128", oif=veth, prefsrc=node.gateway_ip6)


def _node_routes(ipr: IPRoute, plan: LabPlan, node: NodePlan, eth0: int) -> None:
    """Default and service routes via the router, other nodes' podCIDRs via those nodes, per family."""
    ipr.route("add", dst="default", gateway=plan.router_ip, oif=eth0)
    if node.ip6 and plan.router_ip6:
        ipr.route("add", dst="default", gateway=plan.router_ip6, oif=eth0)
    for cidr in plan.service_cidrs:
        if ":" not in cidr:
            ipr.route("add", dst=cidr, gateway=plan.router_ip, oif=eth0)
        elif node.ip6 and plan.router_ip6:
            ipr.route("add", dst=cidr, gateway=plan.router_ip6, oif=eth0)
    for other in plan.nodes:
        if other.name == node.name:
            continue
        if other.pod_cidr:
            ipr.route("add", dst=other.pod_cidr, gateway=other.ip, oif=eth0)
        if other.pod_cidr6 and other.ip6 and node.ip6:
            ipr.route("add", dst=other.pod_cidr6, gateway=other.ip6, oif=eth0)


def _build_node(plan: LabPlan, node: NodePlan, pods: Sequence[PodPlan]) -> None:
    """The node's uplink and routes, and the node end of each of its pods' veths."""
    network = ipaddress.ip_network(plan.underlay_network)

    def configure() -> None:
        _apply_sysctls(_sysctls(plan, (*_COMMON_SYSCTLS, *_NODE_SYSCTLS), router=True))
        with IPRoute() as ipr:
            _set_up(ipr, "lo")
            eth0 = _set_up(ipr, names.NODE_UPLINK_IFNAME)
            ipr.addr("add", index=eth0, address=node.ip, prefixlen=network.prefixlen)
            if node.ip6 and plan.underlay_network6:
                _add_address(ipr, eth0, node.ip6, ipaddress.ip_network(plan.underlay_network6).prefixlen)
            for external_ip in node.external_ips:
                _add_address(ipr, eth0, external_ip, _host_prefixlen(external_ip))
            _node_routes(ipr, plan, node, eth0)
            _attach_to_node(ipr, node, pods)

    in_netns(node.netns, configure)


def _build_pod(pod: PodPlan, node: NodePlan) -> None:
    def configure() -> None:
        with IPRoute() as ipr:
            _set_up(ipr, "lo")
            eth0 = _set_up(ipr, names.POD_IFNAME)
            ipr.addr("add", index=eth0, address=pod.ip, prefixlen=32)
            ipr.route("add", dst="default", gateway=node.gateway_ip or "", oif=eth0, flags=RTNH_F_ONLINK)
            if pod.ip6 and node.gateway_ip6:
                _add_address(ipr, eth0, pod.ip6, 128)
                ipr.route("add", dst="default", gateway=node.gateway_ip6, oif=eth0, flags=RTNH_F_ONLINK)

    in_netns(pod.netns, configure)


def _prepare_pods(plan: LabPlan, pods: Sequence[PodPlan], workers: int) -> None:
    """In a dual-stack lab, write the IPv6 sysctls of each pod namespace before its `eth0` is born there."""
    if not plan.dual_stack or not pods:
        return
    apply = functools.partial(_apply_sysctls, _sysctls(plan, (), router=False))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pod-sysctl") as pool:
        list(pool.map(lambda pod: in_netns(pod.netns, apply), pods))


def _build_pods(plan: LabPlan, pods: Sequence[PodPlan], report: Progress, workers: int) -> None:
    nodes = {n.name: n for n in plan.nodes}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pod-net") as pool:
        futures = [pool.submit(_build_pod, pod, nodes[pod.node]) for pod in pods]
        for index, future in enumerate(futures, start=1):
            future.result()
            report("pods", index, len(futures))


def _no_progress(step: str, done: int, total: int) -> None:
    """The default progress callback: report nothing."""


def build_topology(plan: LabPlan, progress: Progress | None = None, workers: int = 4) -> None:
    """Configure every namespace of `plan` (they must exist already and be empty)."""
    report = progress or _no_progress
    _build_underlay(plan)
    _build_external(plan)
    report("underlay", 1, 1)
    netns_pods = [p for p in plan.pods if not p.host_network]
    _prepare_pods(plan, netns_pods, workers)
    for index, node in enumerate(plan.nodes, start=1):
        _build_node(plan, node, [p for p in netns_pods if p.node == node.name])
        report("nodes", index, len(plan.nodes))
    _build_pods(plan, netns_pods, report, workers)
    log.info("topology built lab=%s nodes=%d pods=%d", plan.lab, len(plan.nodes), len(netns_pods))


def add_pods(plan: LabPlan, pods: Sequence[PodPlan], workers: int = 4) -> None:
    """Wire new pods (their namespaces exist and are empty) to their nodes in an existing lab."""
    netns_pods = [p for p in pods if not p.host_network]
    _prepare_pods(plan, netns_pods, workers)
    for node in plan.nodes:
        local = [p for p in netns_pods if p.node == node.name]
        if local:
            in_netns(node.netns, functools.partial(_attach_with_new_socket, node, local))
    _build_pods(plan, netns_pods, _no_progress, workers)


def _attach_with_new_socket(node: NodePlan, pods: Sequence[PodPlan]) -> None:
    with IPRoute() as ipr:
        _attach_to_node(ipr, node, pods)


def detach_pods(plan: LabPlan, pods: Sequence[PodPlan]) -> None:
    """Delete the node end of each pod's veth now (the kernel would do it only once the pod's namespace is
    freed, later), so the pod's /32 route goes with it and the names are free for a replacement pod."""
    for node in plan.nodes:
        local = [p.node_veth for p in pods if p.node == node.name and not p.host_network]
        if local:
            in_netns(node.netns, functools.partial(_delete_links, local))


def _delete_links(ifnames: Sequence[str]) -> None:
    with IPRoute() as ipr:
        for ifname in ifnames:
            found = ipr.link_lookup(ifname=ifname)
            if found:
                ipr.link("del", index=found[0])


def sync_external_routes(plan: LabPlan, previous: Sequence[str]) -> None:
    """Make the router's LoadBalancer/externalIP routes those of `plan`, given the ones it had."""
    stale = [ip for ip in previous if ip not in plan.external_routes]
    fresh = [ip for ip in plan.external_routes if ip not in previous]
    if not stale and not fresh:
        return
    first_node = plan.nodes[0]

    def configure() -> None:
        with IPRoute() as ipr:
            for destination in stale:
                gateway = first_node.ip6 if ":" in destination else first_node.ip
                ipr.route("del", dst=f"{destination}/{_host_prefixlen(destination)}", gateway=gateway)
            for destination in fresh:
                _route_to(ipr, destination, first_node)

    in_netns(plan.underlay_netns, configure)
