"""A running daemon follows manifest edits with real traffic and DNS; health, metrics and apply over HTTP.

Each test starts the daemon in-process on a unique lab, edits its manifest files (or uses the HTTP API) and
asserts on what pods actually receive: which backend answered a request sent to a service name, whether a
name resolves through the cluster DNS behind the kube-dns Service. Clients run on threads (the daemon's DNS
server lives on the test's event loop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubeplane.daemon.app import Daemon, DaemonOptions
from kubeplane.daemon.client import DaemonClient, DaemonRejected
from kubeplane.daemon.node_sync import NodeProxier, SyncOutcome
from kubeplane.daemon.proxiers import ProxyMode, default_proxier_factory
from kubeplane.model.objects import Cluster
from kubeplane.testing import skip_unless_root, unique_lab_name

pytestmark = pytest.mark.root

T = TypeVar("T")

CLUSTER = """
apiVersion: v1
kind: Node
metadata: {name: node-a}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec: {nodeName: node-a, containers: [{name: c}]}
"""


def _backend(name: str, node: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: shop, labels: {{app: web}}}}
spec:
  nodeName: {node}
  containers: [{{name: web, ports: [{{name: http, containerPort: 8080}}]}}]
"""


def _service(port: int) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: {port}, targetPort: http}}]
"""


class GatedProxier:
    """The real iptables proxier, with a gate a test can close to hold syncs as a stuck kernel call would."""

    def __init__(self, inner: NodeProxier) -> None:
        self.inner = inner
        self.open = asyncio.Event()
        self.open.set()

    async def sync_async(self, cluster: Cluster) -> SyncOutcome:
        await self.open.wait()
        return await self.inner.sync_async(cluster)

    def last_rules(self) -> str:
        return self.inner.last_rules()


@dataclass
class Running:
    daemon: Daemon
    manifests: Path
    gates: dict[str, GatedProxier]

    @property
    def client(self) -> DaemonClient:
        return DaemonClient.for_lab(self.daemon.lab.name)

    def write(self, name: str, text: str) -> None:
        (self.manifests / name).write_text(text)

    def remove(self, name: str) -> None:
        (self.manifests / name).unlink()

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(function, *args)

    async def backend_names(self, url: str, requests: int = 30) -> set[str]:
        """Which pods answered `requests` GETs of `url` from the client pod (failures are skipped)."""
        lab = self.daemon.lab

        def collect() -> set[str]:
            seen: set[str] = set()
            for _ in range(requests):
                try:
                    seen.add(lab.http_get("shop/client", url, timeout=1.0)["pod"])
                except OSError:
                    continue
            return seen

        return await asyncio.to_thread(collect)


async def _until(check: Callable[[], Any], timeout: float = 10.0) -> None:
    """Await `check()` (a coroutine function) until it returns truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.1)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    skip_unless_root()
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "cluster.yaml").write_text(CLUSTER)
    (manifests / "web-1.yaml").write_text(_backend("web-1", "node-a"))
    (manifests / "web-2.yaml").write_text(_backend("web-2", "node-b"))
    (manifests / "service.yaml").write_text(_service(80))
    gates: dict[str, GatedProxier] = {}

    def factory(mode: ProxyMode, netns: str | None, node: str) -> NodeProxier:
        gates[node] = GatedProxier(default_proxier_factory(mode, netns, node))
        return gates[node]

    options = DaemonOptions(paths=(manifests,), lab=unique_lab_name(), health_timeout=1.0)
    daemon = Daemon(options, proxier_factory=factory)
    await daemon.start()
    try:
        state = Running(daemon, manifests, gates)
        await _until(lambda: _answers(state, {"web-1", "web-2"}))
        yield state
    finally:
        for gate in gates.values():
            gate.open.set()
        await daemon.stop()


async def _answers(state: Running, expected: set[str], url: str = "http://web/") -> bool:
    return await state.backend_names(url) == expected


async def test_scaling_pods_up_and_down_changes_who_answers_the_service_name(running: Running) -> None:
    running.write("web-3.yaml", _backend("web-3", "node-b"))
    await _until(lambda: _answers(running, {"web-1", "web-2", "web-3"}))
    running.remove("web-1.yaml")
    await _until(lambda: _answers(running, {"web-2", "web-3"}))


async def test_changed_port_moves_the_service_and_deleted_service_leaves_dns(running: Running) -> None:
    running.write("service.yaml", _service(8081))
    await _until(lambda: _answers(running, {"web-1", "web-2"}, "http://web.shop.svc.cluster.local:8081/"))
    assert await running.backend_names("http://web/", requests=3) == set()
    running.remove("service.yaml")
    lab = running.daemon.lab

    async def name_gone() -> bool:
        try:
            await asyncio.to_thread(lab.resolve, "shop/client", "web.shop.svc.cluster.local")
        except OSError:
            return True
        return False

    await _until(name_gone)


async def test_health_is_503_while_a_sync_is_stuck_and_200_after(running: Running) -> None:
    client = running.client
    healthy, _ = await running.call(client.health)
    assert healthy
    running.gates["node-b"].open.clear()
    running.write("web-3.yaml", _backend("web-3", "node-b"))

    async def unhealthy() -> bool:
        healthy, body = await running.call(client.health, "node-b")
        return not healthy and body["nodeEligible"] is True

    await _until(unhealthy)
    assert (await running.call(client.health, "node-a"))[0]
    running.gates["node-b"].open.set()

    async def healthy_again() -> bool:
        return (await running.call(client.health))[0]

    await _until(healthy_again)


async def test_metrics_count_each_sync_and_the_programming_latency(running: Running) -> None:
    def count(text: str, name: str) -> float:
        prefix = f'{name}{{node="node-a"}} '
        return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))

    before = await running.call(running.client.metrics)
    running.write("web-3.yaml", _backend("web-3", "node-b"))
    await _until(lambda: _answers(running, {"web-1", "web-2", "web-3"}))
    after = await running.call(running.client.metrics)
    for name in (
        "kubeproxy_sync_proxy_rules_duration_seconds_count",
        "kubeproxy_network_programming_duration_seconds_count",
        "kubeproxy_sync_proxy_rules_endpoint_changes_total",
    ):
        assert count(after, name) > count(before, name), name
    assert count(after, "kubeproxy_sync_proxy_rules_iptables_restore_failures_total") == 0


async def test_invalid_apply_is_rejected_and_changes_nothing_in_the_kernel(running: Running) -> None:
    client = running.client
    rules_before = await running.call(client.rules, "node-a")
    version = running.daemon.store.version
    with pytest.raises(DaemonRejected) as rejected:
        await running.call(client.apply, _service(80).replace("port: 80", "port: 0"), "bad.yaml")
    assert rejected.value.lines[0].startswith("bad.yaml#0 Service shop/web: spec.ports[0].port")
    await asyncio.sleep(0.3)
    assert running.daemon.store.version == version
    rules_after = await running.call(client.rules, "node-a")
    assert _rules_only(rules_after) == _rules_only(rules_before)
    assert await running.backend_names("http://web/") == {"web-1", "web-2"}


async def test_apply_over_http_adds_a_service_that_pods_reach_by_name(running: Running) -> None:
    extra = _service(80).replace("name: web,", "name: api,")
    outcome = await running.call(running.client.apply, extra, "api.yaml")
    assert "Service shop/api added" in outcome.changes
    await _until(lambda: _answers(running, {"web-1", "web-2"}, "http://api/"))


def _rules_only(iptables_save: str) -> list[str]:
    """iptables-save output without its timestamped comment lines and packet counters."""
    return [
        line for line in iptables_save.splitlines() if not line.startswith("#") and not line.startswith(":")
    ]
