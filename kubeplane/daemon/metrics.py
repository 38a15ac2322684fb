"""kube-proxy's sync metrics under kube-proxy's names, in a prometheus_client registry of the daemon's own.

Names, types and histogram buckets follow pkg/proxy/metrics so existing dashboards and alerts read kubeplane
unchanged. One difference: kube-proxy is one process per node, kubeplane runs a proxy per lab node in one
process, so every series carries a `node` label.

The registry is private (not prometheus_client's global REGISTRY) so tests and several daemons in one process
never collide; `/metrics` renders it together with any other registries handed in (the DNS server's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# prometheus.ExponentialBuckets(0.001, 2, 15): 1 ms .. ~16 s.
SYNC_DURATION_BUCKETS = tuple(0.001 * 2**i for i in range(15))
# LinearBuckets(0.25, 0.25, 2) + LinearBuckets(1, 1, 59) + LinearBuckets(60, 5, 12)
# + LinearBuckets(120, 30, 7)
NETWORK_PROGRAMMING_BUCKETS = (
    (0.25, 0.5)
    + tuple(float(i) for i in range(1, 60))
    + tuple(60.0 + 5 * i for i in range(12))
    + tuple(120.0 + 30 * i for i in range(7))
)


class ProxyMetrics:
    """The kubeproxy_* series for every node proxy of one daemon, plus the probe counters."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._scrape_hooks: list[Callable[[], None]] = []
        reg = self.registry
        node = ["node"]
        self.sync_duration = Histogram(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            node,
            buckets=SYNC_DURATION_BUCKETS,
            registry=reg,
        )
        self.sync_full_duration = Histogram(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            node,
            buckets=SYNC_DURATION_BUCKETS,
            registry=reg,
        )
        self.sync_partial_duration = Histogram(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            node,
            buckets=SYNC_DURATION_BUCKETS,
            registry=reg,
        )
        self.network_programming = Histogram(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            node,
            buckets=NETWORK_PROGRAMMING_BUCKETS,
            registry=reg,
        )
        self.endpoint_changes_pending = Gauge(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            node,
            registry=reg,
        )
        self.endpoint_changes_total = Counter(
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            "Cumulative proxy rules Endpoint changes",
            node,
            registry=reg,
        )
        self.service_changes_pending = Gauge(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            node,
            registry=reg,
        )
        self.service_changes_total = Counter(
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "Cumulative proxy rules Service changes",
            node,
            registry=reg,
        )
        self.iptables_rules_total = Gauge(
            "kubeproxy_sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by kube-proxy",
            ["node", "table"],
            registry=reg,
        )
        self.iptables_rules_last = Gauge(
            "kubeproxy_sync_proxy_rules_iptables_last",
            "Number of iptables rules written by kube-proxy in last sync",
            ["node", "table"],
            registry=reg,
        )
        self.iptables_restore_failures = Counter(
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
            "Cumulative proxy iptables restore failures",
            node,
            registry=reg,
        )
        self.no_local_endpoints = Gauge(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            ["node", "traffic_policy"],
            registry=reg,
        )
        self.last_sync_timestamp = Gauge(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            node,
            registry=reg,
        )
        self.last_queued_timestamp = Gauge(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            node,
            registry=reg,
        )
        self.healthz_total = Counter(
            "kubeproxy_proxy_healthz_total", "Cumulative proxy healthz HTTP status", ["code"], registry=reg
        )
        self.livez_total = Counter(
            "kubeproxy_proxy_livez_total", "Cumulative proxy livez HTTP status", ["code"], registry=reg
        )

    def before_scrape(self, hook: Callable[[], None]) -> None:
        """Run `hook` before each render: for gauges that are cheaper to compute on demand than per sync."""
        self._scrape_hooks.append(hook)

    def queued(self, node: str, at: float, service_changes: int, endpoint_changes: int) -> None:
        """A change set reached a node's proxy and waits for its next sync."""
        self.last_queued_timestamp.labels(node).set(at)
        self.service_changes_total.labels(node).inc(service_changes)
        self.endpoint_changes_total.labels(node).inc(endpoint_changes)
        self.service_changes_pending.labels(node).inc(service_changes)
        self.endpoint_changes_pending.labels(node).inc(endpoint_changes)

    def synced(self, node: str, seconds: float, full: bool, finished_at: float) -> None:
        """A sync programmed the rules: its duration, and nothing is pending any more."""
        self.sync_duration.labels(node).observe(seconds)
        (self.sync_full_duration if full else self.sync_partial_duration).labels(node).observe(seconds)
        self.last_sync_timestamp.labels(node).set(finished_at)
        self.service_changes_pending.labels(node).set(0)
        self.endpoint_changes_pending.labels(node).set(0)

    def programmed(self, node: str, latency_seconds: float) -> None:
        """A change became live on a node, `latency_seconds` after it entered the daemon."""
        self.network_programming.labels(node).observe(latency_seconds)

    def rule_counts(self, node: str, rules_by_table: Mapping[str, int]) -> None:
        for table, count in rules_by_table.items():
            self.iptables_rules_total.labels(node, table).set(count)
            self.iptables_rules_last.labels(node, table).set(count)

    def restore_failed(self, node: str) -> None:
        self.iptables_restore_failures.labels(node).inc()

    def no_local(self, node: str, internal: int, external: int) -> None:
        self.no_local_endpoints.labels(node, "internal").set(internal)
        self.no_local_endpoints.labels(node, "external").set(external)

    def probed(self, liveness: bool, code: int) -> None:
        (self.livez_total if liveness else self.healthz_total).labels(str(code)).inc()

    def render(self, extra_registries: Iterable[CollectorRegistry] = ()) -> bytes:
        """Prometheus text exposition of the proxy series followed by each extra registry's."""
        for hook in self._scrape_hooks:
            hook()
        return b"".join(generate_latest(r) for r in (self.registry, *extra_registries))
