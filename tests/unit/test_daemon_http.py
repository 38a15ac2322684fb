"""The daemon's HTTP API on loopback: probes, metrics, rules, apply and delete through the client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from kubeplane.daemon.client import DaemonClient, DaemonEndpoint, DaemonRejected, DaemonRequestFailed
from kubeplane.daemon.control import DaemonApi
from kubeplane.daemon.desired import DesiredState
from kubeplane.daemon.health import HealthBoard, ProxierHealth
from kubeplane.daemon.http import HttpServer
from kubeplane.daemon.metrics import ProxyMetrics
from kubeplane.endpoints import with_derived_endpoint_slices
from kubeplane.model.complete import build_cluster
from kubeplane.model.objects import Cluster, KubeObject
from kubeplane.model.parse import parse_text
from kubeplane.model.serialize import to_manifest
from kubeplane.store import ClusterStore

BASE = """
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: web, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""

EXTRA_SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  clusterIP: 10.96.7.7
  selector: {app: web}
  ports: [{name: http, port: 81, targetPort: 8080}]
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(
        self, client: DaemonClient, store: ClusterStore, health: ProxierHealth, clock: FakeClock
    ) -> None:
        self.client, self.store, self.health, self.clock = client, store, health, clock

    async def call(self, method: str, *args: Any) -> Any:
        return await asyncio.to_thread(getattr(self.client, method), *args)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    store = ClusterStore()

    def build(objects: Sequence[KubeObject]) -> Cluster:
        return with_derived_endpoint_slices(build_cluster(objects, previous=store.cluster))

    desired = DesiredState(store, build)
    desired.set_files(parse_text(BASE, "manifests/base.yaml").objects)
    clock = FakeClock()
    health = ProxierHealth("n1", health_timeout=60.0, clock=clock)
    metrics = ProxyMetrics()

    async def read_rules(node: str) -> str:
        return f"*nat\n-A KUBE-SERVICES -m comment --comment {node}\nCOMMIT\n"

    api = DaemonApi(
        desired,
        HealthBoard([health], clock=clock),
        metrics,
        lambda text, name: parse_text(text, name).objects,
        to_manifest,
        read_rules,
        lambda: ("n1",),
    )
    server = HttpServer(api, "127.0.0.1", 0)
    await server.start()
    try:
        yield Harness(DaemonClient(DaemonEndpoint("t", 0, "127.0.0.1", server.port)), store, health, clock)
    finally:
        await server.stop()


def _service_keys(store: ClusterStore) -> set[str]:
    return {s.meta.key for s in store.cluster.services}


async def test_apply_adds_objects_and_reports_each_change(harness: Harness) -> None:
    outcome = await harness.call("apply", EXTRA_SERVICE, "extra.yaml")
    assert "Service shop/api added" in outcome.changes
    assert any(line.startswith("EndpointSlice shop/api-") for line in outcome.changes)
    assert outcome.version == harness.store.version
    assert "shop/api" in _service_keys(harness.store)


async def test_invalid_apply_is_rejected_with_one_line_per_error_and_nothing_changes(
    harness: Harness,
) -> None:
    before = harness.store.version
    broken = EXTRA_SERVICE.replace("port: 81", "port: 70000")
    with pytest.raises(DaemonRejected) as rejected:
        await harness.call("apply", broken, "extra.yaml")
    assert len(rejected.value.lines) == 1
    assert rejected.value.lines[0].startswith("extra.yaml#0 Service shop/api: spec.ports[0].port")
    assert harness.store.version == before
    assert "shop/api" not in _service_keys(harness.store)


async def test_apply_that_conflicts_with_served_objects_changes_nothing(harness: Harness) -> None:
    await harness.call("apply", EXTRA_SERVICE, "extra.yaml")
    before = harness.store.version
    clash = EXTRA_SERVICE.replace("name: api", "name: api2")  # same clusterIP as shop/api
    with pytest.raises(DaemonRejected) as rejected:
        await harness.call("apply", clash, "clash.yaml")
    assert "10.96.7.7" in rejected.value.lines[0]
    assert harness.store.version == before


async def test_delete_removes_and_unknown_object_fails_whole_delete(harness: Harness) -> None:
    await harness.call("apply", EXTRA_SERVICE, "extra.yaml")
    both = EXTRA_SERVICE + "---\n" + EXTRA_SERVICE.replace("name: api", "name: nope")
    before = harness.store.version
    with pytest.raises(DaemonRejected) as rejected:
        await harness.call("delete", both, "both.yaml")
    assert rejected.value.lines == ("both.yaml#1 Service shop/nope: not found",)
    assert harness.store.version == before
    outcome = await harness.call("delete", EXTRA_SERVICE, "extra.yaml")
    assert "Service shop/api deleted" in outcome.changes
    assert "shop/api" not in _service_keys(harness.store)


async def test_healthz_goes_503_when_a_queued_update_outlives_the_timeout(harness: Harness) -> None:
    healthy, body = await harness.call("health")
    assert healthy and set(body) == {"lastUpdated", "currentTime", "nodeEligible"}
    harness.health.queued_update()
    harness.clock.now += 61
    healthy, body = await harness.call("health")
    assert not healthy and body["nodeEligible"] is True
    live, live_body = await harness.call("health", "n1", True)
    assert not live and "nodeEligible" not in live_body
    harness.health.updated()
    healthy, body = await harness.call("health", "n1")
    assert healthy and body["lastUpdated"].endswith("+0000 UTC")


async def test_unknown_node_is_404_for_health_and_rules(harness: Harness) -> None:
    with pytest.raises(DaemonRequestFailed, match="HTTP 404"):
        await harness.call("health", "n9")
    with pytest.raises(DaemonRequestFailed, match="HTTP 404"):
        await harness.call("rules", "n9")
    assert "--comment n1" in await harness.call("rules", "n1")


async def test_metrics_are_prometheus_text_with_probe_counts(harness: Harness) -> None:
    await harness.call("health")
    text = await harness.call("metrics")
    assert 'kubeproxy_proxy_healthz_total{code="200"} 1.0' in text
    assert "# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram" in text


async def test_state_lists_every_served_object_with_the_store_version(harness: Harness) -> None:
    state = await harness.call("state")
    assert state["kind"] == "List"
    assert state["metadata"]["resourceVersion"] == str(harness.store.version)
    kinds = {(item["kind"], item["metadata"]["name"]) for item in state["items"]}
    assert {("Service", "web"), ("Pod", "web-1")} <= kinds
