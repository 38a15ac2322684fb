"""One node's kube-proxy loop: store change sets in, rate-limited syncs of that node's rules out.

Every node proxy subscribes to the one store. A change set marks the node's health as "update queued",
counts service and endpoint changes, remembers when it arrived (for the network-programming latency) and
asks the node's `BoundedFrequencyRunner` for a sync. The sync programs the store's *latest* snapshot, so a
burst of change sets costs one sync. Whether a sync is full or partial is the proxier's decision (first
sync, after a failure, hourly), reported back for kube-proxy's full/partial duration metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kubeplane.daemon.health import ProxierHealth
from kubeplane.daemon.metrics import ProxyMetrics
from kubeplane.daemon.runner import BoundedFrequencyRunner
from kubeplane.model.objects import Cluster
from kubeplane.proxy.healthcheck import HealthCheckServers
from kubeplane.proxy.plan import NodePlan
from kubeplane.store import ChangeSet, ClusterStore

log = logging.getLogger(__name__)

DEFAULT_BURST_SYNCS = 2  # kube-proxy's burstSyncs


class SyncOutcome(Protocol):
    """What a proxier reports about one sync (kubeplane.proxy.iptables.proxier.SyncResult has this shape)."""

    @property
    def ok(self) -> bool: ...

    @property
    def full(self) -> bool: ...

    @property
    def error(self) -> str | None: ...

    @property
    def plan(self) -> NodePlan: ...


class NodeProxier(Protocol):
    """A proxy backend for one node (iptables or IPVS): program the rules `cluster` implies.

    Failures are reported in the outcome (`ok` False), not raised; the loop counts and retries them."""

    async def sync_async(self, cluster: Cluster) -> SyncOutcome: ...

    def last_rules(self) -> str: ...


class SyncFailed(RuntimeError):
    """A proxier reported a failed sync; raised into the runner so that it retries."""


def count_rules(rules_text: str) -> dict[str, int]:
    """Rules per table in iptables-save text (`-A` lines after each `*table`)."""
    counts: dict[str, int] = {}
    table = ""
    for line in rules_text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            counts.setdefault(table, 0)
        elif line.startswith("-A ") and table:
            counts[table] += 1
    return counts


def no_local_endpoint_counts(plan: NodePlan) -> tuple[int, int]:
    """Services with a Local traffic policy but no endpoint on this node: (internal, external)."""
    internal = {
        sp.service_key for sp in plan.service_ports if sp.internal_policy_local and not sp.categories.local
    }
    external = {
        sp.service_key for sp in plan.service_ports if sp.external_policy_local and not sp.categories.local
    }
    return len(internal), len(external)


@dataclass(frozen=True)
class SyncRecord:
    """The last completed sync of one node: when it ended, how long it took, which store version it wrote."""

    finished_at: float
    seconds: float
    full: bool
    version: int


@dataclass(frozen=True)
class SyncPeriods:
    """The runner settings a node proxy uses (seconds): minSyncPeriod, syncPeriod, burst."""

    min_sync_period: float
    sync_period: float
    burst: int = DEFAULT_BURST_SYNCS


class NodeSyncLoop:
    """Drive one node's proxier from the store; `synced_version` tells what the kernel has."""

    def __init__(
        self,
        node_name: str,
        proxier: NodeProxier,
        store: ClusterStore,
        health: ProxierHealth,
        metrics: ProxyMetrics,
        periods: SyncPeriods,
        clock: Callable[[], float] = time.time,
        health_checks: HealthCheckServers | None = None,
    ) -> None:
        self.node_name = node_name
        self.proxier = proxier
        self.health_checks = health_checks
        self.last_sync: SyncRecord | None = None
        self.synced_version = 0
        self.started_version = 0
        self._store = store
        self.health = health
        self.metrics = metrics
        self._clock = clock
        self._runner = BoundedFrequencyRunner(
            f"proxy-{node_name}",
            self._sync,
            min_interval=periods.min_sync_period,
            max_interval=periods.sync_period,
            burst=periods.burst,
            # kube-proxy retries a failed sync after syncPeriod (new changes still trigger one sooner).
            retry_interval=periods.sync_period,
        )
        self._arrivals: list[float] = []
        self._queue: asyncio.Queue[ChangeSet] | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._synced = asyncio.Condition()
        self._start_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._counted_rules: str | None = None
        metrics.before_scrape(self._count_rules)

    def start(self) -> None:
        """Subscribe and start the runner; the store's current state arrives as the first change set."""
        self._queue = self._store.subscribe()
        self._runner.start()
        self._consumer = asyncio.get_running_loop().create_task(
            self._consume(self._queue), name=f"changes-{self.node_name}"
        )

    async def stop(self) -> None:
        if self._queue is not None:
            self._store.unsubscribe(self._queue)
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
        await self._runner.stop()
        if self.health_checks is not None:
            await self.health_checks.close()

    async def wait_synced(self, version: int, timeout: float) -> None:
        """Block until the store's `version` (or a later one) is programmed; TimeoutError otherwise."""
        async with asyncio.timeout(timeout), self._synced:
            await self._synced.wait_for(lambda: self.synced_version >= version)

    async def wait_sync_started(self, version: int) -> None:
        """Block until a sync of the store's `version` (or a later one) has begun.

        A partial sync (the usual kind) plans the node and starts its restore process without yielding to
        the event loop, so by the time a waiter runs, that process is already working: Python work done then
        (the DNS update) overlaps with the kernel's instead of delaying it."""
        if self.started_version >= version:
            return
        started = asyncio.get_running_loop().create_future()
        self._start_waiters.append((version, started))
        await started

    async def _consume(self, queue: asyncio.Queue[ChangeSet]) -> None:
        while True:
            change_sets = [await queue.get()]
            while not queue.empty():
                change_sets.append(queue.get_nowait())
            now = self._clock()
            services = sum(len(c.of_kind("Service")) for c in change_sets)
            endpoints = sum(len(c.of_kind("EndpointSlice")) for c in change_sets)
            self._arrivals.append(now)
            self.health.queued_update()
            self.metrics.queued(self.node_name, now, services, endpoints)
            node = next((n for n in self._store.cluster.nodes if n.meta.name == self.node_name), None)
            self.health.set_node_eligible(node is not None and node.meta.deletion_timestamp is None)
            self._runner.run()

    def _mark_started(self, version: int) -> None:
        """Release the `wait_sync_started` waiters `version` satisfies; they run once this sync yields."""
        self.started_version = version
        waiting = []
        for wanted, started in self._start_waiters:
            if started.done():
                continue
            if wanted <= version:
                started.set_result(None)
            else:
                waiting.append((wanted, started))
        self._start_waiters = waiting

    def _count_rules(self) -> None:
        """At scrape time: rules of the last sync per table (rendering them is too dear for every sync)."""
        rules_text = self.proxier.last_rules()
        if rules_text is not self._counted_rules:
            self._counted_rules = rules_text
            self.metrics.rule_counts(self.node_name, count_rules(rules_text))

    async def _sync(self) -> None:
        version, cluster = self._store.version, self._store.cluster
        self._mark_started(version)
        arrivals, self._arrivals = self._arrivals, []
        started = time.perf_counter()
        try:
            outcome = await self.proxier.sync_async(cluster)
        except BaseException:
            self._arrivals = arrivals + self._arrivals
            raise
        if not outcome.ok:
            self._arrivals = arrivals + self._arrivals
            self.metrics.restore_failed(self.node_name)
            raise SyncFailed(outcome.error or "sync failed")
        if self.health_checks is not None:
            # As kube-proxy's sync does: the health check ports follow the plan just programmed.
            await self.health_checks.update(outcome.plan)
        internal, external = no_local_endpoint_counts(outcome.plan)
        self.metrics.no_local(self.node_name, internal, external)
        seconds = time.perf_counter() - started
        finished = self._clock()
        self.health.updated()
        self.metrics.synced(self.node_name, seconds, outcome.full, finished)
        for arrived in arrivals:
            self.metrics.programmed(self.node_name, finished - arrived)
        self.last_sync = SyncRecord(finished, seconds, outcome.full, version)
        log.debug("synced node=%s version=%d seconds=%.4f", self.node_name, version, seconds)
        async with self._synced:
            self.synced_version = max(self.synced_version, version)
            self._synced.notify_all()
