"""`kubeplane up`: manifests -> store -> lab -> one proxy per node, cluster DNS, HTTP API, live until stopped.

Data flows one way. The manifest source re-reads the watched paths into the `DesiredState` (which also takes
`apply`/`delete` from the HTTP API), which completes objects into a `Cluster` (API defaulting, the kube-dns
objects, the lab's Pod readiness, derived EndpointSlices) and hands it to the store. Subscribers follow the
store: one `NodeSyncLoop` per node (a kube-proxy programming that node's namespace, rate-limited by its
bounded-frequency runner) and the DNS server, which serves from the `kube-system/coredns` pod's namespace
behind the `kube-dns` Service, so pods' DNS queries cross the proxy's rules like in a cluster.

Periods: minSyncPeriod and syncPeriod come from the KubeProxyConfiguration when it sets them; otherwise the
daemon uses a 10 ms minSyncPeriod (a change is live in tens of milliseconds, where kube-proxy's default 1 s
would dominate) and kube-proxy's 30 s syncPeriod. The health timeout is kube-proxy's: twice syncPeriod.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubeplane.daemon.client import DaemonEndpoint, remove_state_file, write_state_file
from kubeplane.daemon.cluster_dns import DNS_NAMESPACE, DNS_POD_NAME, follow_store_for_dns, with_cluster_dns
from kubeplane.daemon.control import DaemonApi, iptables_rules_reader
from kubeplane.daemon.desired import DesiredState, ManifestSink
from kubeplane.daemon.health import HealthBoard, ProxierHealth
from kubeplane.daemon.http import DEFAULT_HOST, HttpServer
from kubeplane.daemon.metrics import ProxyMetrics
from kubeplane.daemon.node_sync import NodeSyncLoop, SyncPeriods
from kubeplane.daemon.proxiers import ProxierFactory, ProxyMode, default_proxier_factory
from kubeplane.dns.server import DnsServer
from kubeplane.endpoints import with_derived_endpoint_slices
from kubeplane.model.complete import build_cluster
from kubeplane.model.complete_services import FamilyMemo
from kubeplane.model.objects import Cluster, KubeObject
from kubeplane.model.parse import parse_text
from kubeplane.model.serialize import to_manifest
from kubeplane.netns.lab import Lab, LabError
from kubeplane.netns.names import DEFAULT_LAB
from kubeplane.netns.nsfs import open_socket_in_netns
from kubeplane.netns.plan import LabPlanError, plan_lab
from kubeplane.netns.ready import mark_ready
from kubeplane.proxy.healthcheck import HealthCheckServers
from kubeplane.sources.manifests import ManifestSource
from kubeplane.store import ClusterStore

log = logging.getLogger(__name__)


DEFAULT_MIN_SYNC_PERIOD = 0.01
READINESS_POLL_SECONDS = 0.1
DNS_PORT = 53
FIRST_SYNC_LIMIT_SECONDS = 600.0
# How long the DNS and lab followers let the node proxies go first with a change (see `_proxies_first`):
# long enough for the usual path (the syncs start within a few event loop turns), short enough that a
# rate-limited or busy proxy delays DNS by no more than this.
PROXIES_FIRST_SECONDS = 0.01


class DaemonStartError(RuntimeError):
    """The daemon cannot start: the message is one line per problem (manifest errors, lab errors)."""


@dataclass(frozen=True)
class DaemonOptions:
    paths: tuple[Path, ...]
    lab: str = DEFAULT_LAB
    mode: ProxyMode = "iptables"
    http_host: str = DEFAULT_HOST
    http_port: int = 0
    min_sync_period: float | None = None  # None: the configuration's, else DEFAULT_MIN_SYNC_PERIOD
    sync_period: float | None = None  # None: the configuration's (30 s by default)
    health_timeout: float | None = None  # None: 2 x syncPeriod, as kube-proxy
    keep: bool = False


@dataclass(frozen=True)
class DaemonStatus:
    """What the status line shows."""

    nodes: int
    pods: int
    services: int
    version: int
    healthy: bool
    last_sync_at: float | None
    last_sync_seconds: float | None


def runner_periods(cluster: Cluster, options: DaemonOptions) -> SyncPeriods:
    """The runner settings: explicit options, else what the configuration sets, else ours."""
    config = cluster.proxy_config
    configured = config.ipvs if options.mode == "ipvs" else config.iptables
    min_period = next(
        period
        for period in (options.min_sync_period, configured.min_sync_period, DEFAULT_MIN_SYNC_PERIOD)
        if period is not None
    )
    sync_period = options.sync_period if options.sync_period is not None else configured.sync_period
    return SyncPeriods(min_sync_period=min_period, sync_period=max(sync_period, min_period))


class Daemon:
    """One lab, its proxies, its DNS and its HTTP API; `start` then `stop` (or `async with`)."""

    def __init__(
        self, options: DaemonOptions, proxier_factory: ProxierFactory = default_proxier_factory
    ) -> None:
        self.options = options
        self.store = ClusterStore()
        self.metrics = ProxyMetrics()
        self.health = HealthBoard()
        self.lab = Lab(options.lab)
        self.desired = DesiredState(self.store, self._complete)
        self.sink = ManifestSink(self.desired)
        self.manifests = ManifestSource(options.paths, self.sink)
        self.node_loops: dict[str, NodeSyncLoop] = {}
        self.dns: DnsServer | None = None
        self.dns_version = 0
        self.api = DaemonApi(
            self.desired,
            self.health,
            self.metrics,
            lambda text, name: parse_text(text, name).objects,
            to_manifest,
            iptables_rules_reader(self.lab.node_netns, ipvs=options.mode == "ipvs"),
            lambda: tuple(self.node_loops),
        )
        self.http = HttpServer(self.api, options.http_host, options.http_port)
        self._proxier_factory = proxier_factory
        self._ready_pods: frozenset[str] = frozenset()
        self._family_memo = FamilyMemo()
        self._tasks: list[asyncio.Task[None]] = []
        self._lab_up = False

    def _complete(self, objects: Sequence[KubeObject]) -> Cluster:
        cluster = build_cluster(with_cluster_dns(objects), self.store.cluster, self._family_memo)
        return with_derived_endpoint_slices(mark_ready(cluster, self._ready_pods))

    # --- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.manifests.load()
        problems = self.manifests.errors + self.sink.errors
        if problems:  # at start there is no last good state to keep serving: refuse, change nothing
            raise DaemonStartError("\n".join(str(p) for p in problems))
        try:
            await asyncio.to_thread(self.lab.up, self.store.cluster)
            self._lab_up = True
            self._ready_pods = await asyncio.to_thread(self.lab.ready_pods)
            self.desired.refresh()
            self._start_proxies()
            await self._start_dns()
            self._spawn(self.manifests.watch(), "manifests")
            self._spawn(self._follow_readiness(), "readiness")
            self._spawn(self._follow_store_for_lab(), "lab")
            self._spawn(self._freeze_heap_after_first_sync(), "gc-freeze")
            await self.http.start()
            write_state_file(DaemonEndpoint(self.lab.name, os.getpid(), self.http.host, self.http.port))
        except BaseException:
            await self.stop()
            raise
        log.info("daemon up lab=%s http=%s:%d nodes=%d", self.lab.name, self.http.host, self.http.port,
                 len(self.node_loops))  # fmt: skip

    async def stop(self) -> None:
        """Undo `start` in reverse; safe to call on a partial start and more than once."""
        remove_state_file(self.lab.name, os.getpid())
        with contextlib.suppress(RuntimeError):
            await self.http.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for loop in self.node_loops.values():
            await loop.stop()
        if self.dns is not None:
            await self.dns.stop()
            self.dns = None
        if self._lab_up and not self.options.keep:
            await asyncio.to_thread(self.lab.down)
        self._lab_up = False

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coroutine, name=name))

    # --- parts ---------------------------------------------------------------------------------------------

    def _start_proxies(self) -> None:
        periods = runner_periods(self.store.cluster, self.options)
        timeout = self.options.health_timeout or 2 * periods.sync_period
        for node in self.store.cluster.nodes:
            name = node.meta.name
            health = ProxierHealth(name, timeout)
            self.health.add(health)
            netns = self.lab.node_netns(name)
            proxier = self._proxier_factory(self.options.mode, netns, name)
            checks = HealthCheckServers(netns, proxy_health=health.healthy)
            loop = NodeSyncLoop(
                name, proxier, self.store, health, self.metrics, periods, health_checks=checks
            )
            self.node_loops[name] = loop
            loop.start()
        log.info("proxies started nodes=%d min_sync_period=%.3f sync_period=%.1f health_timeout=%.1f",
                 len(self.node_loops), periods.min_sync_period, periods.sync_period, timeout)  # fmt: skip

    async def _start_dns(self) -> None:
        netns = self.lab.pod_netns(DNS_NAMESPACE, DNS_POD_NAME)
        udp = open_socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM, ("0.0.0.0", DNS_PORT))
        tcp = open_socket_in_netns(netns, socket.AF_INET, socket.SOCK_STREAM, ("0.0.0.0", DNS_PORT))
        self.dns = DnsServer(self.store.cluster, registry=self.metrics.registry)
        await self.dns.start(udp_sock=udp, tcp_sock=tcp)
        self.dns_version = self.store.version
        self._spawn(
            follow_store_for_dns(self.store, self.dns, self._dns_published, self._proxies_first), "dns"
        )

    def _dns_published(self, version: int) -> None:
        self.dns_version = version

    async def _proxies_first(self, version: int) -> None:
        """Wait (at most PROXIES_FIRST_SECONDS) until every node proxy has begun syncing `version`.

        The proxies, the DNS server and the lab all follow the store on this one event loop. A node sync
        spends a few milliseconds of Python before its restore process starts, and the kernel then works
        for tens of milliseconds on its own; DNS and lab updates are Python too. Run them first and the
        restores start that much later; run them after and they overlap with the restores."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PROXIES_FIRST_SECONDS):
                for loop in self.node_loops.values():
                    await loop.wait_sync_started(version)

    async def _follow_store_for_lab(self) -> None:
        """Pods added, removed or moved in the manifests get (or lose) their namespace and workload."""
        queue = self.store.subscribe()
        try:
            while True:
                version = (await queue.get()).version
                while not queue.empty():
                    version = queue.get_nowait().version
                await self._proxies_first(version)
                cluster = self.store.cluster
                try:
                    if plan_lab(self.lab.name, cluster) == self.lab.plan:
                        continue
                    report = await asyncio.to_thread(self.lab.apply, cluster)
                except (LabError, LabPlanError) as err:
                    log.error("lab not updated (rules and DNS still follow the manifests): %s", err)
                    continue
                log.info("lab updated pods_removed=%d pods_added=%d", len(report.removed), len(report.added))
        finally:
            self.store.unsubscribe(queue)

    async def _freeze_heap_after_first_sync(self) -> None:
        """Move what the first sync built (the snapshot, every node's plans, the DNS zone) out of the cyclic
        collector's sight. Those objects live for the daemon's life and hold no cycles; at 1k services
        there are millions of them, and every full collection scanning them again costs tens to hundreds
        of milliseconds, landing on whichever change is being programmed at the time."""
        with contextlib.suppress(TimeoutError):
            await self.wait_programmed(self.store.version, FIRST_SYNC_LIMIT_SECONDS)
        gc.collect()
        gc.freeze()
        log.info("heap frozen after first sync objects=%d", gc.get_freeze_count())

    async def _follow_readiness(self) -> None:
        """Pods become Ready when their workload serves (the lab's supervisor reports it)."""
        while True:
            await asyncio.sleep(READINESS_POLL_SECONDS)
            ready = await asyncio.to_thread(self.lab.ready_pods)
            if ready != self._ready_pods:
                self._ready_pods = ready
                self.desired.refresh()

    # --- observation ---------------------------------------------------------------------------------------

    def status(self) -> DaemonStatus:
        cluster = self.store.cluster
        syncs = [loop.last_sync for loop in self.node_loops.values() if loop.last_sync is not None]
        last = max(syncs, key=lambda record: record.finished_at, default=None)
        return DaemonStatus(
            nodes=len(cluster.nodes),
            pods=len(cluster.pods),
            services=len(cluster.services),
            version=self.store.version,
            healthy=self.health.status().healthy,
            last_sync_at=last.finished_at if last else None,
            last_sync_seconds=last.seconds if last else None,
        )

    async def wait_rules(self, version: int, timeout: float) -> None:
        """Until every node's rules reflect store `version` (TimeoutError otherwise)."""
        async with asyncio.timeout(timeout):
            for loop in self.node_loops.values():
                await loop.wait_synced(version, timeout)

    async def wait_programmed(self, version: int, timeout: float) -> None:
        """Until every node's rules and the DNS zone reflect store `version` (TimeoutError otherwise)."""
        async with asyncio.timeout(timeout):
            await self.wait_rules(version, timeout)
            while self.dns_version < version:
                await asyncio.sleep(0.001)
