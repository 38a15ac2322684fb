"""The daemon serves each LoadBalancer eTP=Local service's healthCheckNodePort on every node, like kube-proxy.

A daemon runs in-process on a two-node lab with one backend pod on node-a. A load balancer probing from the
lab's external namespace must get 200 and kube-proxy's JSON from the node with the local endpoint, 503 from
the node without, and the answer must follow the endpoints when the pod goes away.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kubeplane.daemon.app import Daemon, DaemonOptions
from kubeplane.netns.clients import HttpResponse, http_request
from kubeplane.testing import skip_unless_root, unique_lab_name

pytestmark = pytest.mark.root

HEALTH_PORT = 32123
NODE_IPS = {"node-a": "198.51.100.2", "node-b": "198.51.100.3"}
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
kind: Service
metadata: {name: lb, namespace: shop}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  healthCheckNodePort: 32123
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""
BACKEND = """
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: web, ports: [{containerPort: 8080}]}]}
"""


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    skip_unless_root()
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    (tmp_path / "backend.yaml").write_text(BACKEND)
    running = Daemon(DaemonOptions(paths=(tmp_path,), lab=unique_lab_name()))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def _probe(daemon: Daemon, node: str) -> HttpResponse | None:
    url = f"http://{NODE_IPS[node]}:{HEALTH_PORT}/healthz"
    try:
        return await asyncio.to_thread(http_request, daemon.lab.external_netns, url, 1.0)
    except OSError:
        return None


async def _until_status(daemon: Daemon, node: str, status: int, timeout: float = 15.0) -> HttpResponse:
    """Probe `node` until it answers `status` (the pod must become ready first); bounded in time."""
    deadline = time.monotonic() + timeout
    while True:
        response = await _probe(daemon, node)
        if response is not None and response.status == status:
            return response
        if time.monotonic() > deadline:
            raise AssertionError(f"{node} answered {response and response.status}, wanted {status}")
        await asyncio.sleep(0.1)


def _body(local_endpoints: int) -> dict[str, object]:
    return {
        "service": {"namespace": "shop", "name": "lb"},
        "localEndpoints": local_endpoints,
        "serviceProxyHealthy": True,
    }


async def test_health_check_port_answers_200_only_where_the_service_has_local_endpoints(
    daemon: Daemon, tmp_path: Path
) -> None:
    with_endpoint = await _until_status(daemon, "node-a", 200)
    assert json.loads(with_endpoint.body) == _body(1)
    assert with_endpoint.headers["x-load-balancing-endpoint-weight"] == "1"
    without = await _until_status(daemon, "node-b", 503)
    assert json.loads(without.body) == _body(0)

    (tmp_path / "backend.yaml").unlink()
    gone = await _until_status(daemon, "node-a", 503)
    assert json.loads(gone.body) == _body(0)


async def test_health_check_ports_close_when_the_daemon_stops(daemon: Daemon) -> None:
    await _until_status(daemon, "node-a", 200)
    checks = [loop.health_checks for loop in daemon.node_loops.values()]
    assert all(c is not None and c.ports == (HEALTH_PORT,) for c in checks)
    for loop in daemon.node_loops.values():
        await loop.stop()
    assert await _probe(daemon, "node-a") is None
