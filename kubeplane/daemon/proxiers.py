"""Which proxy backend programs a node: iptables (kube-proxy's default) or IPVS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from kubeplane.daemon.node_sync import NodeProxier
from kubeplane.model.objects import Cluster
from kubeplane.proxy.iptables.proxier import IptablesProxier
from kubeplane.proxy.ipvs.proxier import IpvsProxier
from kubeplane.proxy.plan import NodePlan

ProxyMode = Literal["iptables", "ipvs"]
# How often a daemon's iptables proxier looks for its canary chain (a process spawn each time). kube-proxy
# checks from a background monitor every syncPeriod (30 s by default); every 10 s notices a flushed table
# sooner while keeping the check off nearly every change's path.
CANARY_PERIOD_SECONDS = 10.0
ProxierFactory = Callable[[ProxyMode, str | None, str], NodeProxier]


class BackendUnavailable(RuntimeError):
    """The requested proxy mode cannot run here."""


@dataclass(frozen=True)
class IpvsOutcome:
    ok: bool
    full: bool
    error: str | None
    plan: NodePlan


class IpvsNodeProxier:
    """The IPVS proxier in the shape the sync loop drives (its result lists errors; rules are not text)."""

    def __init__(self, proxier: IpvsProxier) -> None:
        self.proxier = proxier

    async def sync_async(self, cluster: Cluster) -> IpvsOutcome:
        result = await self.proxier.sync_async(cluster)
        return IpvsOutcome(result.ok, result.full, "; ".join(result.errors) or None, result.plan)

    def last_rules(self) -> str:
        return ""


def default_proxier_factory(mode: ProxyMode, netns: str | None, node: str) -> NodeProxier:
    """The backend for `mode`, programming `netns` (None: the current namespace) as node `node`."""
    if mode == "ipvs":
        if netns is None:
            raise BackendUnavailable("--mode ipvs programs lab namespaces only, not the current one")
        return IpvsNodeProxier(IpvsProxier(netns, node))
    return IptablesProxier(netns, node, canary_period=CANARY_PERIOD_SECONDS)
