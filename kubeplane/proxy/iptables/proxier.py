"""Apply the iptables plan of a node to its namespace, full or partial, as kube-proxy's syncProxyRules does.

The first sync, a sync after a failure, a sync that finds the KUBE-PROXY-CANARY chain (mangle) gone, and
one sync per `full_sync_period` are full: every chain is rewritten, missing jump rules are inserted, and
stale KUBE-SVC/SEP/... chains found with iptables-save are deleted. Every other sync is partial: the plan of
each service port is compared with the previous one, only changed ports' own chains are written (plus the
shared dispatch chains), and chains no longer used are deleted. Each sync is one `iptables-restore
--noflush` per family, atomic per table. After a successful sync, stale UDP/SCTP conntrack entries are
cleared (kubeplane.proxy.conntrack).

A change's latency must not grow with the cluster, so a partial sync avoids work proportional to it where
the result is the same: services are planned through a per-node `PlanCache` (only changed services are
planned again), only changed ports are rendered, and unchanged shared chains are left out of the restore
(kubeplane.proxy.iptables.partial); a sync with nothing to write runs no restore at all. The canary chain
is checked at most once per `canary_period` (kube-proxy checks it from a background monitor every
syncPeriod), since each check is a process spawn.

The core is asyncio (`sync_async`, for the daemon); `sync` is a thin blocking wrapper for tests and tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

from kubeplane.model.objects import Cluster, IPFamily
from kubeplane.netns.nsfs import in_netns, write_sysctl
from kubeplane.netns.run import CommandFailed
from kubeplane.proxy.conntrack import PROTOCOL_NUMBERS, clear_stale_entries_async, stale_targets
from kubeplane.proxy.iptables.chains import KUBE_PROXY_CANARY
from kubeplane.proxy.iptables.partial import PartialRestore, changed_ports, partial_restore
from kubeplane.proxy.iptables.render import RenderedRuleset, jump_rules, node_context, render_iptables
from kubeplane.proxy.iptables.service_rules import NodeContext
from kubeplane.proxy.iptables.stream import FullRestoreStream
from kubeplane.proxy.iptables.tools import DEFAULT_BACKEND, IptablesBackend, IptablesTools
from kubeplane.proxy.plan import NodePlan, PlanCache, ServicePortPlan, plan_node

log = logging.getLogger(__name__)

FULL_SYNC_PERIOD_SECONDS = 3600.0  # kube-proxy's proxyutil.FullSyncPeriod
CANARY_TEXT = f"*mangle\n:{KUBE_PROXY_CANARY} - [0:0]\nCOMMIT\n"


@dataclass(frozen=True)
class SyncResult:
    """What one sync did. `ok` False means nothing was guaranteed applied and the next sync is full."""

    node: str
    ok: bool
    full: bool
    families: tuple[IPFamily, ...]
    changed_service_ports: int
    deleted_chains: int
    conntrack_deleted: int
    seconds: float
    plan: NodePlan
    error: str | None = None


@dataclass(frozen=True)
class _AppliedFamily:
    """What the kernel holds for one family after the last successful sync.

    `skeleton` renders the node-wide rules (everything but service ports); `partial` is the last partial
    sync (None after a full one), which the next partial sync builds on."""

    ports: tuple[ServicePortPlan, ...]
    active_nat_chains: frozenset[str]
    context: NodeContext
    skeleton: RenderedRuleset
    partial: PartialRestore | None = None


class IptablesProxier:
    """Keeps one node namespace's iptables in line with the cluster (netns None: the current namespace)."""

    def __init__(
        self,
        netns: str | None,
        node_name: str,
        *,
        backend: IptablesBackend = DEFAULT_BACKEND,
        full_sync_period: float = FULL_SYNC_PERIOD_SECONDS,
        canary_period: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.netns = netns
        self.node_name = node_name
        self.backend = backend
        self.full_sync_period = full_sync_period
        self.canary_period = canary_period
        self._clock = clock
        self._needs_full = True
        self._last_full: float | None = None
        self._canary_checked: float | None = None
        self._plans = PlanCache()
        self._applied: dict[IPFamily, _AppliedFamily] = {}
        self._plan: NodePlan | None = None
        self._rules_cache: tuple[NodePlan, str] | None = None

    @property
    def last_plan(self) -> NodePlan | None:
        """The plan of the last successful sync (what health check servers and /rules report)."""
        return self._plan

    def request_full_sync(self) -> None:
        self._needs_full = True

    def sync(self, cluster: Cluster) -> SyncResult:
        """Blocking wrapper of sync_async (runs its own event loop)."""
        return asyncio.run(self.sync_async(cluster))

    async def sync_async(self, cluster: Cluster) -> SyncResult:
        """Plan the node from `cluster` and apply it; failures are reported in the result, not raised
        (except a node missing from the cluster: kubeplane.proxy.plan.UnknownNodeError)."""
        with _cyclic_gc_paused():
            return await self._sync(cluster)

    async def _sync(self, cluster: Cluster) -> SyncResult:
        started = time.perf_counter()
        plan = plan_node(cluster, self.node_name, self._plans)
        families: tuple[IPFamily, ...] = ("IPv4", "IPv6") if self._uses_ipv6(plan) else ("IPv4",)
        full = await self._full_sync_due(families)
        changed = deleted = 0
        try:
            if full and self._last_full is None:
                await self._enable_localhost_node_ports()
            for family in families:
                family_changed, family_deleted, family_full = await self._sync_family(plan, family, full)
                full = full or family_full
                changed += family_changed
                deleted += family_deleted
        except (CommandFailed, OSError) as err:
            self._needs_full = True
            log.error("iptables sync failed node=%s full=%s error=%s", self.node_name, full, err)
            return SyncResult(
                node=self.node_name,
                ok=False,
                full=full,
                families=families,
                changed_service_ports=changed,
                deleted_chains=deleted,
                conntrack_deleted=0,
                seconds=time.perf_counter() - started,
                plan=plan,
                error=str(err),
            )
        if full:
            self._needs_full = False
            self._last_full = self._canary_checked = self._clock()
        conntrack_deleted = await self._clear_conntrack(plan, families)
        self._plan = plan
        seconds = time.perf_counter() - started
        log.info(
            "iptables sync node=%s full=%s changed=%d deleted_chains=%d conntrack_deleted=%d seconds=%.3f",
            self.node_name,
            full,
            changed,
            deleted,
            conntrack_deleted,
            seconds,
        )
        return SyncResult(
            node=self.node_name,
            ok=True,
            full=full,
            families=families,
            changed_service_ports=changed,
            deleted_chains=deleted,
            conntrack_deleted=conntrack_deleted,
            seconds=seconds,
            plan=plan,
        )

    def last_rules(self) -> str:
        """The full rules of the last successful sync in iptables-save format ("" before the first one);
        IPv6 tables follow an `# ip6tables` line."""
        plan = self._plan
        if plan is None:
            return ""
        if self._rules_cache is None or self._rules_cache[0] is not plan:
            text = render_iptables(plan, "IPv4").text
            if "IPv6" in self._applied:
                text += "# ip6tables\n" + render_iptables(plan, "IPv6").text
            self._rules_cache = (plan, text)
        return self._rules_cache[1]

    def _uses_ipv6(self, plan: NodePlan) -> bool:
        return bool(plan.ports_for("IPv6")) or "IPv6" in self._applied

    async def _full_sync_due(self, families: tuple[IPFamily, ...]) -> bool:
        if self._needs_full or self._last_full is None:
            return True
        now = self._clock()
        if now - self._last_full > self.full_sync_period:
            return True
        if self._canary_checked is not None and now - self._canary_checked < self.canary_period:
            return False
        self._canary_checked = now
        for family in families:
            if not await self._tools(family).chain_exists_async("mangle", KUBE_PROXY_CANARY):
                log.warning(
                    "canary chain missing, forcing full sync node=%s family=%s", self.node_name, family
                )
                return True
        return False

    def _tools(self, family: IPFamily) -> IptablesTools:
        return IptablesTools(self.netns, family, self.backend)

    async def _sync_family(self, plan: NodePlan, family: IPFamily, full: bool) -> tuple[int, int, bool]:
        """Apply one family; returns (service ports written, chains deleted, whether it was a full sync)."""
        tools = self._tools(family)
        applied = self._applied.get(family)
        ports = plan.ports_for(family)
        context = node_context(plan, family)
        skeleton = render_iptables(replace(plan, service_ports=()), family)
        full = full or applied is None or applied.context != context
        if full or applied is None:
            stream = await self._full_stream(tools, plan, family)
            await tools.restore_stream_async(itertools.chain(stream.chunks(), [CANARY_TEXT]))
            active, stale = frozenset(stream.active_nat_chains), set(stream.stale_chains)
            self._applied[family] = _AppliedFamily(ports, active, context, skeleton)
            return len(ports), len(stale), True
        changed_ids = changed_ports(applied.ports, ports)
        partial = partial_restore(
            ports, changed_ids, context, skeleton, applied.partial, applied.active_nat_chains
        )
        if partial.text:
            await tools.restore_async(partial.text)
        self._applied[family] = _AppliedFamily(ports, partial.active_nat_chains, context, skeleton, partial)
        return len(changed_ids), len(partial.stale_chains), False

    @staticmethod
    async def _full_stream(tools: IptablesTools, plan: NodePlan, family: IPFamily) -> FullRestoreStream:
        """What a full sync writes: kube-proxy reads iptables-save first to find missing jump rules and
        stale service chains (ours may have been flushed by someone, or left by an earlier run)."""
        nat_saved, filter_saved = await asyncio.gather(tools.save_async("nat"), tools.save_async("filter"))
        existing = frozenset(line[1:].split()[0] for line in nat_saved.splitlines() if line.startswith(":"))
        present = set(nat_saved.splitlines()) | set(filter_saved.splitlines())
        missing = tuple(j for j in jump_rules(family) if f"-A {j.chain} {j.spec}" not in present)
        return FullRestoreStream(plan, family, existing, missing)

    async def _enable_localhost_node_ports(self) -> None:
        """kube-proxy sets route_localnet so IPv4 NodePorts answer on 127.0.0.1 (KUBE-FIREWALL guards it)."""
        if self.netns is None:
            return
        netns = self.netns
        await asyncio.to_thread(
            in_netns, netns, lambda: write_sysctl("net.ipv4.conf.all.route_localnet", "1")
        )

    async def _clear_conntrack(self, plan: NodePlan, families: tuple[IPFamily, ...]) -> int:
        previous = self._plan
        if previous is not None and not _connectionless_changed(previous, plan):
            return 0
        deleted = 0
        for family in families:
            try:
                deleted += await clear_stale_entries_async(self.netns, stale_targets(previous, plan, family))
            except OSError as err:
                log.error("conntrack cleanup failed node=%s family=%s error=%s", self.node_name, family, err)
        return deleted


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Planning and rendering allocate a few objects per endpoint (1M at 10k services) and build no reference
    cycles; with the cyclic collector on, its scans of that growing heap cost as much as the work itself."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _connectionless_changed(previous: NodePlan, current: NodePlan) -> bool:
    """Whether a UDP/SCTP service port appeared, changed or went away (kube-proxy's cleanup trigger)."""
    before = {sp.identity: sp for sp in previous.service_ports if sp.protocol in PROTOCOL_NUMBERS}
    after = {sp.identity: sp for sp in current.service_ports if sp.protocol in PROTOCOL_NUMBERS}
    return before != after


class NodeProxiers:
    """One IptablesProxier per node, synced together; the daemon's /rules reads `last_rules(node)`."""

    def __init__(
        self, netns_by_node: Mapping[str, str | None], backend: IptablesBackend = DEFAULT_BACKEND
    ) -> None:
        self.proxiers = {
            node: IptablesProxier(netns, node, backend=backend) for node, netns in netns_by_node.items()
        }

    async def sync_async(self, cluster: Cluster) -> dict[str, SyncResult]:
        results = await asyncio.gather(*(p.sync_async(cluster) for p in self.proxiers.values()))
        return {r.node: r for r in results}

    def sync(self, cluster: Cluster) -> dict[str, SyncResult]:
        return asyncio.run(self.sync_async(cluster))

    def last_rules(self, node: str) -> str:
        return self.proxiers[node].last_rules()
