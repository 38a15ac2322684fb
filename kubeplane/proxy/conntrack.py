"""Stale UDP/SCTP conntrack cleanup inside a node namespace (kube-proxy's conntrack reconciler).

Connectionless flows keep their conntrack entry, and so their DNAT decision, for as long as packets keep
coming. After a sync, an entry is stale when its original destination is a service address (cluster IP,
external IP, LB IP) or a NodePort of a UDP/SCTP service port and its reply source is not a serving
endpoint of that port any more. That covers an endpoint going away, a service going from 0 to N endpoints
(the entry was never DNATed: its reply source is the service IP itself), and, unlike kube-proxy before
kubernetes#139629, a service going down to zero endpoints or being deleted (kubernetes#139628, #141371):
those ports are checked against an empty endpoint set instead of being skipped.

Deciding is pure (`stale_targets`, `entry_is_stale`); deleting uses conntrack netlink through pyroute2,
run on a thread that entered the node's namespace (a netlink socket belongs to the namespace it was
opened in).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass

from pyroute2 import Conntrack
from pyroute2.netlink.exceptions import NetlinkError

from kubeplane.model.objects import IPFamily
from kubeplane.netns.nsfs import in_netns
from kubeplane.proxy.plan import NodePlan, ServicePortPlan

log = logging.getLogger(__name__)

PROTOCOL_NUMBERS = {"UDP": socket.IPPROTO_UDP, "SCTP": socket.IPPROTO_SCTP}
FAMILY_NUMBERS = {"IPv4": socket.AF_INET, "IPv6": socket.AF_INET6}


@dataclass(frozen=True)
class ConntrackTargets:
    """For one family: which serving endpoint IPs are acceptable reply sources per service address and
    per NodePort (keys carry the IP protocol number)."""

    family: IPFamily
    by_address: dict[tuple[int, str, int], frozenset[str]]
    by_node_port: dict[tuple[int, int], frozenset[str]]

    def __bool__(self) -> bool:
        return bool(self.by_address or self.by_node_port)


@dataclass(frozen=True)
class FlowTuple:
    """The parts of a conntrack entry cleanup looks at."""

    protocol: int
    orig_dst: str
    orig_dport: int
    reply_src: str


def _serving_ips(sp: ServicePortPlan | None) -> frozenset[str]:
    return frozenset(ep.ip for ep in sp.endpoints if ep.serving) if sp is not None else frozenset()


def stale_targets(previous: NodePlan | None, current: NodePlan, family: IPFamily) -> ConntrackTargets:
    """Every UDP/SCTP service port of `current` with its serving endpoints, plus the ports `previous`
    had and `current` lost, with no endpoints at all."""
    ports: list[tuple[ServicePortPlan, frozenset[str]]] = [
        (sp, _serving_ips(sp)) for sp in current.ports_for(family) if sp.protocol in PROTOCOL_NUMBERS
    ]
    if previous is not None:
        kept = {sp.identity for sp in current.service_ports}
        ports.extend(
            (sp, frozenset())
            for sp in previous.ports_for(family)
            if sp.protocol in PROTOCOL_NUMBERS and sp.identity not in kept
        )
    by_address: dict[tuple[int, str, int], frozenset[str]] = {}
    by_node_port: dict[tuple[int, int], frozenset[str]] = {}
    for sp, serving in ports:
        proto = PROTOCOL_NUMBERS[sp.protocol]
        for ip in (sp.cluster_ip, *sp.external_ips, *sp.load_balancer_ips):
            by_address[(proto, ip, sp.port)] = serving
        if sp.node_port:
            by_node_port[(proto, sp.node_port)] = serving
    return ConntrackTargets(family=family, by_address=by_address, by_node_port=by_node_port)


def entry_is_stale(flow: FlowTuple, targets: ConntrackTargets) -> bool:
    serving = targets.by_address.get((flow.protocol, flow.orig_dst, flow.orig_dport))
    if serving is not None and flow.reply_src not in serving:
        return True
    serving = targets.by_node_port.get((flow.protocol, flow.orig_dport))
    return serving is not None and flow.reply_src not in serving


def _clear_here(targets: ConntrackTargets) -> int:
    """Dump this namespace's entries of the family and delete the stale ones; returns how many."""
    deleted = 0
    ct = Conntrack(nfgen_family=FAMILY_NUMBERS[targets.family])
    try:
        stale = []
        for entry in ct.dump_entries():
            orig, reply = entry.tuple_orig, entry.tuple_reply
            if orig is None or reply is None or orig.proto not in PROTOCOL_NUMBERS.values():
                continue
            flow = FlowTuple(orig.proto, str(orig.daddr), int(orig.dport or 0), str(reply.saddr))
            if entry_is_stale(flow, targets):
                stale.append(orig)
        for orig in stale:
            try:
                ct.entry("del", tuple_orig=orig)
                deleted += 1
            except (OSError, NetlinkError) as err:  # the flow may have expired between dump and delete
                log.debug("conntrack delete skipped error=%s", err)
    finally:
        ct.close()
    return deleted


def clear_stale_entries(netns: str | None, targets: ConntrackTargets) -> int:
    """Delete stale entries inside `netns` (None: the current namespace); returns how many."""
    if not targets:
        return 0
    if netns is None:
        return _clear_here(targets)
    return in_netns(netns, lambda: _clear_here(targets))


async def clear_stale_entries_async(netns: str | None, targets: ConntrackTargets) -> int:
    return await asyncio.to_thread(clear_stale_entries, netns, targets)
