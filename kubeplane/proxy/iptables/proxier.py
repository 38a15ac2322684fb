"""Apply the iptables plan of a node to its namespace, full or partial, as kube-proxy's syncProxyRules does.

The first sync, a sync after a failure, a sync that finds the KUBE-PROXY-CANARY chain (mangle) gone, and
one sync per `full_sync_period` are full: every chain is rewritten, missing jump rules are inserted, and
stale KUBE-SVC/SEP/... chains found with iptables-save are deleted. Every other sync is partial: the plan of
each service port is compared with the previous one, only changed ports' own chains are written (plus the
shared dispatch chains), and chains no longer used are deleted. Each sync is one `iptables-restore
--noflush` per family, atomic per table. After a successful sync, stale UDP/SCTP conntrack entries are
cleared (kubeplane.proxy.conntrack).

A full sync streams its restore input (kubeplane.proxy.iptables.stream): restore starts at once and
parses services while the next ones are planned and rendered, and the iptables-save reads run meanwhile,
since only the end of each table (stale chains, missing jumps) depends on them. When the full sync is due
whatever the tables hold (first, after a failure, periodic), even the planning of services is left to the
stream (kubeplane.proxy.plan.plan_node_lazily), so nothing proportional to the cluster precedes restore.

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
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace

from kubeplane.model.objects import Cluster, IPFamily
from kubeplane.netns.nsfs import in_netns, write_sysctl
from kubeplane.netns.run import CommandFailed
from kubeplane.proxy.conntrack import PROTOCOL_NUMBERS, clear_stale_entries_async, stale_targets
from kubeplane.proxy.iptables.chains import KUBE_PROXY_CANARY
from kubeplane.proxy.iptables.partial import PartialRestore, changed_ports, partial_restore
from kubeplane.proxy.iptables.render import (
    JumpRule,
    RenderedRuleset,
    jump_rules,
    node_context,
    render_iptables,
)
from kubeplane.proxy.iptables.service_rules import NodeContext
from kubeplane.proxy.iptables.stream import FullRestoreStream
from kubeplane.proxy.iptables.tools import DEFAULT_BACKEND, IptablesBackend, IptablesTools
from kubeplane.proxy.plan import NodePlan, PlanCache, ServicePortPlan, plan_node_lazily

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
        facts, lazy_ports = plan_node_lazily(cluster, self.node_name, self._plans)
        # A full sync due whatever the tables hold streams IPv4 while its services are being planned, so
        # restore starts at once; otherwise the whole plan comes first (a partial sync diffs it, and the
        # canary check needs its families).
        streamed = self._full_sync_forced()
        plan = None if streamed else replace(facts, service_ports=lazy_ports.all())
        full = streamed or await self._full_sync_due(self._families(plan or facts))
        changed = deleted = 0
        try:
            if full and self._last_full is None:
                await self._enable_localhost_node_ports()
            if streamed:
                changed, deleted = await self._full_sync_family(facts, "IPv4", lazy_ports.family("IPv4"))
            plan = plan or replace(facts, service_ports=lazy_ports.all())
            for family in self._families(plan)[1 if streamed else 0 :]:
                family_changed, family_deleted, family_full = await self._sync_family(plan, family, full)
                full = full or family_full
                changed += family_changed
                deleted += family_deleted
        except (CommandFailed, OSError) as err:
            plan = plan or replace(facts, service_ports=lazy_ports.all())
            self._needs_full = True
            log.error("iptables sync failed node=%s full=%s error=%s", self.node_name, full, err)
            return SyncResult(
                node=self.node_name,
                ok=False,
                full=full,
                families=self._families(plan),
                changed_service_ports=changed,
                deleted_chains=deleted,
                conntrack_deleted=0,
                seconds=time.perf_counter() - started,
                plan=plan,
                error=str(err),
            )
        families = self._families(plan)
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

    def _families(self, plan: NodePlan) -> tuple[IPFamily, ...]:
        if plan.ports_for("IPv6") or "IPv6" in self._applied:
            return ("IPv4", "IPv6")
        return ("IPv4",)

    def _full_sync_forced(self) -> bool:
        """Whether this sync is full whatever the tables hold: the first, after a failure, or periodic."""
        if self._needs_full or self._last_full is None:
            return True
        return self._clock() - self._last_full > self.full_sync_period

    async def _full_sync_due(self, families: tuple[IPFamily, ...]) -> bool:
        """Whether this sync (not forced full) must be full because the canary chain is gone."""
        now = self._clock()
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
        applied = self._applied.get(family)
        ports = plan.ports_for(family)
        context = node_context(plan, family)
        full = full or applied is None or applied.context != context
        if full or applied is None:
            return (*await self._full_sync_family(plan, family), True)
        skeleton = render_iptables(replace(plan, service_ports=()), family)
        changed_ids = changed_ports(applied.ports, ports)
        partial = partial_restore(
            ports, changed_ids, context, skeleton, _settled(applied), applied.active_nat_chains
        )
        if partial.text:
            await self._tools(family).restore_async(partial.text)
        self._applied[family] = _AppliedFamily(ports, partial.active_nat_chains, context, skeleton, partial)
        return len(changed_ids), len(partial.stale_chains), False

    async def _full_sync_family(
        self, plan: NodePlan, family: IPFamily, source: Iterable[ServicePortPlan] | None = None
    ) -> tuple[int, int]:
        """Rewrite every chain of `family` in one streamed restore; returns (service ports written, chains
        deleted). The ports are `source` when given (planned as the stream reaches them: `plan` then only
        gives the node facts), else the plan's. The tables are read with iptables-save while restore
        already parses the services; only the end of each table depends on what they hold."""
        tools = self._tools(family)
        stream = FullRestoreStream(plan, family, source)
        current = asyncio.ensure_future(_current_tables(tools, family))

        async def chunks() -> AsyncGenerator[str, None]:
            for chunk in stream.head_chunks():
                yield chunk
            existing, missing = await current
            for chunk in stream.tail_chunks(existing, missing):
                yield chunk
            yield CANARY_TEXT

        try:
            async with contextlib.aclosing(chunks()) as produced:
                await tools.restore_stream_async(produced)
        finally:
            if not current.done():
                current.cancel()
            with contextlib.suppress(asyncio.CancelledError, CommandFailed, OSError):
                await current
        assert stream.context is not None
        skeleton = render_iptables(replace(plan, service_ports=()), family)
        self._applied[family] = _AppliedFamily(
            tuple(stream.ports), frozenset(stream.active_nat_chains), stream.context, skeleton
        )
        return len(stream.ports), len(stream.stale_chains)

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


async def _current_tables(
    tools: IptablesTools, family: IPFamily
) -> tuple[frozenset[str], tuple[JumpRule, ...]]:
    """The nat chains that exist and the jump rules missing from the built-in chains: kube-proxy reads
    iptables-save before a full restore to find stale service chains and missing jumps (ours may have been
    flushed by someone, or left by an earlier run)."""
    nat_saved, filter_saved = await asyncio.gather(tools.save_async("nat"), tools.save_async("filter"))
    existing = frozenset(line[1:].split()[0] for line in nat_saved.splitlines() if line.startswith(":"))
    present = set(nat_saved.splitlines()) | set(filter_saved.splitlines())
    return existing, tuple(j for j in jump_rules(family) if f"-A {j.chain} {j.spec}" not in present)


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


def _settled(applied: _AppliedFamily) -> PartialRestore:
    """The last partial sync, or after a full one what it wrote as a partial sync sees it (nothing to
    restore): the first change after a full sync then edits the dispatch chains in place instead of
    rewriting them (at 1k services ~45 restore lines instead of ~1,100, for ~15 ms of rendering)."""
    if applied.partial is not None:
        return applied.partial
    return partial_restore(
        applied.ports, (), applied.context, applied.skeleton, None, applied.active_nat_chains
    )
