"""The daemon's metrics carry kube-proxy's names and count what the sync loop reports."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from kubeplane.daemon.metrics import ProxyMetrics


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_sync_and_change_counters_use_kube_proxy_names() -> None:
    metrics = ProxyMetrics()
    metrics.queued("n1", at=100.0, service_changes=2, endpoint_changes=3)
    metrics.synced("n1", seconds=0.004, full=False, finished_at=101.0)
    metrics.rule_counts("n1", {"nat": 40, "filter": 7})
    metrics.restore_failed("n1")
    metrics.no_local("n1", internal=1, external=0)
    metrics.programmed("n1", 0.02)
    samples = _samples(metrics.render())
    node = (("node", "n1"),)
    assert samples[("kubeproxy_sync_proxy_rules_service_changes_total", node)] == 2
    assert samples[("kubeproxy_sync_proxy_rules_endpoint_changes_total", node)] == 3
    assert samples[("kubeproxy_sync_proxy_rules_endpoint_changes_pending", node)] == 0
    assert samples[("kubeproxy_sync_proxy_rules_duration_seconds_count", node)] == 1
    assert samples[("kubeproxy_sync_partial_proxy_rules_duration_seconds_count", node)] == 1
    assert samples[("kubeproxy_sync_proxy_rules_last_timestamp_seconds", node)] == 101.0
    assert samples[("kubeproxy_sync_proxy_rules_iptables_total", (("node", "n1"), ("table", "nat")))] == 40
    assert samples[("kubeproxy_sync_proxy_rules_iptables_restore_failures_total", node)] == 1
    labels = (("node", "n1"), ("traffic_policy", "internal"))
    key = ("kubeproxy_sync_proxy_rules_no_local_endpoints_total", labels)
    assert samples[key] == 1
    assert samples[("kubeproxy_network_programming_duration_seconds_count", node)] == 1


def test_render_appends_other_registries() -> None:
    dns_registry = CollectorRegistry()
    Counter("coredns_dns_requests_total", "DNS requests", registry=dns_registry).inc()
    text = ProxyMetrics().render([dns_registry])
    assert _samples(text)[("coredns_dns_requests_total", ())] == 1


def test_two_daemons_in_one_process_do_not_share_series() -> None:
    first, second = ProxyMetrics(), ProxyMetrics()
    first.restore_failed("n1")
    assert ("kubeproxy_sync_proxy_rules_iptables_restore_failures_total", (("node", "n1"),)) not in _samples(
        second.render()
    )
