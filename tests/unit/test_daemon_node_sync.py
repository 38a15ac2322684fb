"""A node's proxy loop: store changes reach the proxier rate-limited, with health and metrics kept."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from prometheus_client.parser import text_string_to_metric_families

from kubeplane.daemon.health import ProxierHealth
from kubeplane.daemon.metrics import ProxyMetrics
from kubeplane.daemon.node_sync import NodeSyncLoop, SyncPeriods
from kubeplane.model.objects import Cluster, Node, NodeAddress, ObjectMeta, Service, ServicePort
from kubeplane.proxy.plan import NodePlan, plan_node
from kubeplane.store import ClusterStore


def _cluster(*service_names: str) -> Cluster:
    services = tuple(
        Service(ObjectMeta(name, "default"), cluster_ips=(f"10.96.0.{i + 1}",), ports=(ServicePort(80),))
        for i, name in enumerate(service_names)
    )
    node = Node(
        ObjectMeta("n1"), pod_cidrs=("10.244.1.0/24",), addresses=(NodeAddress("InternalIP", "198.51.100.2"),)
    )
    return Cluster(services=services, nodes=(node,))


@dataclass(frozen=True)
class Outcome:
    ok: bool
    full: bool
    plan: NodePlan
    error: str | None = None


class RecordingProxier:
    """Stands in for the kernel: records each snapshot it was asked to program; can block or fail."""

    def __init__(self) -> None:
        self.synced: list[Cluster] = []
        self.gate: asyncio.Event | None = None
        self.failures = 0

    async def sync_async(self, cluster: Cluster) -> Outcome:
        if self.gate is not None:
            await self.gate.wait()
        plan = plan_node(cluster, "n1")
        if self.failures:
            self.failures -= 1
            return Outcome(False, True, plan, "iptables-restore: line 3 failed")
        self.synced.append(cluster)
        return Outcome(True, len(self.synced) == 1, plan)

    def last_rules(self) -> str:
        filter_table = "*filter\n:KUBE-SERVICES - [0:0]\nCOMMIT\n"
        return filter_table + "*nat\n-A KUBE-SERVICES -j KUBE-SVC-X\n-A KUBE-SVC-X -j KUBE-SEP-Y\nCOMMIT\n"


def _metric(metrics: ProxyMetrics, name: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("node") == "n1":
                return sample.value
    raise AssertionError(f"no sample {name}")


def _loop(
    store: ClusterStore, proxier: RecordingProxier, health_timeout: float = 60.0, sync_period: float = 60.0
) -> NodeSyncLoop:
    return NodeSyncLoop(
        "n1",
        proxier,
        store,
        ProxierHealth("n1", health_timeout),
        ProxyMetrics(),
        SyncPeriods(min_sync_period=0.01, sync_period=sync_period),
    )


async def test_change_reaches_proxier_as_latest_snapshot() -> None:
    store = ClusterStore(_cluster("web"))
    proxier = RecordingProxier()
    loop = _loop(store, proxier)
    loop.start()
    try:
        await loop.wait_synced(store.version, timeout=2)
        store.replace(_cluster("web", "api"))
        await loop.wait_synced(store.version, timeout=2)
        assert [s.meta.name for s in proxier.synced[-1].services] == ["web", "api"]
        assert loop.last_sync is not None and loop.last_sync.version == store.version
    finally:
        await loop.stop()


async def test_burst_of_changes_during_a_sync_costs_one_more_sync() -> None:
    store = ClusterStore(_cluster("a"))
    proxier = RecordingProxier()
    proxier.gate = asyncio.Event()
    loop = _loop(store, proxier)
    loop.start()
    try:
        await asyncio.sleep(0.05)  # first sync is blocked in the proxier
        for i in range(20):
            store.replace(_cluster(*(f"s{j}" for j in range(i + 1))))
        proxier.gate.set()
        await loop.wait_synced(store.version, timeout=2)
        await asyncio.sleep(0.05)
        assert len(proxier.synced) == 2
        assert len(proxier.synced[-1].services) == 20
    finally:
        await loop.stop()


async def test_failed_restore_is_counted_and_retried_until_programmed() -> None:
    store = ClusterStore(_cluster("web"))
    proxier = RecordingProxier()
    proxier.failures = 2
    loop = _loop(store, proxier, sync_period=0.05)  # a failed sync is retried after syncPeriod
    loop.start()
    try:
        await loop.wait_synced(store.version, timeout=5)
        assert _metric(loop.metrics, "kubeproxy_sync_proxy_rules_iptables_restore_failures_total") == 2
        assert _metric(loop.metrics, "kubeproxy_network_programming_duration_seconds_count") == 1
        assert _metric(loop.metrics, "kubeproxy_sync_full_proxy_rules_duration_seconds_count") == 1
    finally:
        await loop.stop()


async def test_stuck_sync_turns_health_red_and_recovers_after_it_completes() -> None:
    store = ClusterStore(_cluster("web"))
    proxier = RecordingProxier()
    proxier.gate = asyncio.Event()
    loop = _loop(store, proxier, health_timeout=0.1)
    loop.start()
    try:
        await asyncio.sleep(0.2)
        assert not loop.health.status().healthy
        proxier.gate.set()
        await loop.wait_synced(store.version, timeout=2)
        assert loop.health.status().healthy
    finally:
        await loop.stop()


async def test_deleting_node_is_not_eligible_for_healthz() -> None:
    store = ClusterStore(_cluster("web"))
    loop = _loop(store, RecordingProxier())
    loop.start()
    try:
        await loop.wait_synced(store.version, timeout=2)
        deleting = replace(
            store.cluster.nodes[0], meta=ObjectMeta("n1", deletion_timestamp="2026-01-01T00:00:00Z")
        )
        store.replace(Cluster(services=store.cluster.services, nodes=(deleting,)))
        await loop.wait_synced(store.version, timeout=2)
        assert not loop.health.status().healthy
        assert loop.health.status(liveness=True).healthy
    finally:
        await loop.stop()


async def test_rule_counts_are_taken_from_last_rules_at_scrape_time() -> None:
    store = ClusterStore(_cluster("web"))
    loop = _loop(store, RecordingProxier())
    loop.start()
    try:
        await loop.wait_synced(store.version, timeout=2)
        text = loop.metrics.render().decode()
        assert 'kubeproxy_sync_proxy_rules_iptables_total{node="n1",table="nat"} 2.0' in text
        assert 'kubeproxy_sync_proxy_rules_iptables_total{node="n1",table="filter"} 0.0' in text
    finally:
        await loop.stop()


async def test_wait_sync_started_returns_while_that_sync_is_still_running() -> None:
    store = ClusterStore(_cluster("web"))
    proxier = RecordingProxier()
    loop = _loop(store, proxier)
    loop.start()
    try:
        await loop.wait_synced(store.version, timeout=2)
        proxier.gate = asyncio.Event()
        store.replace(_cluster("web", "api"))
        await asyncio.wait_for(loop.wait_sync_started(store.version), timeout=2)
        assert loop.started_version == store.version
        assert loop.synced_version < store.version  # the proxier is still held at its gate
        proxier.gate.set()
        await loop.wait_synced(store.version, timeout=2)
    finally:
        await loop.stop()


async def test_wait_sync_started_waits_for_a_later_version() -> None:
    store = ClusterStore(_cluster("web"))
    proxier = RecordingProxier()
    loop = _loop(store, proxier)
    loop.start()
    try:
        await loop.wait_synced(store.version, timeout=2)
        waiter = asyncio.create_task(loop.wait_sync_started(store.version + 1))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        store.replace(_cluster("web", "api"))
        await asyncio.wait_for(waiter, timeout=2)
    finally:
        await loop.stop()
