"""`kubeplane proxy`: kube-proxy for one node of a real cluster, fed by list+watch from its API server.

The API server's objects are already defaulted, allocated and sliced by its controllers, so they go into
the store as they are (`assemble_cluster`); one `NodeSyncLoop` programs the node's rules. Where the rules go
is the caller's explicit choice: `--host` programs the current network namespace (a Linux VM joined to the
cluster, and the only path in kubeplane that touches the root namespace); otherwise a scratch namespace
`kp-<lab>-node-<node>` is created for the rules and removed on exit, so the rules can be inspected (via
`/rules`) without touching the machine. The HTTP API serves health, metrics, rules and state; it refuses
apply/delete, since the API server is the source of truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubeplane.daemon.control import RulesReader, iptables_rules_reader, list_manifest
from kubeplane.daemon.health import HealthBoard, ProxierHealth, UnknownNode
from kubeplane.daemon.http import DEFAULT_HOST, ChangeOutcome, ChangesNotAccepted, HttpServer
from kubeplane.daemon.metrics import ProxyMetrics
from kubeplane.daemon.node_sync import NodeSyncLoop, SyncPeriods
from kubeplane.daemon.proxiers import ProxierFactory, ProxyMode
from kubeplane.model.serialize import to_manifest
from kubeplane.netns.names import node_netns
from kubeplane.netns.nsfs import create_netns, remove_netns
from kubeplane.proxy.healthcheck import HealthCheckServers
from kubeplane.sources.kubeconfig import ApiCredentials
from kubeplane.sources.kubernetes import CORE_RESOURCES, KubernetesSource, WatchedResource, store_publisher
from kubeplane.store import ClusterStore

log = logging.getLogger(__name__)

API_MIN_SYNC_PERIOD = 1.0  # kube-proxy's default: a real cluster's churn is not a lab's
API_SYNC_PERIOD = 30.0


@dataclass(frozen=True)
class ApiProxyOptions:
    node: str
    lab: str
    mode: ProxyMode = "iptables"
    host: bool = False  # program the current network namespace
    http_host: str = DEFAULT_HOST
    http_port: int = 10256
    periods: SyncPeriods = SyncPeriods(API_MIN_SYNC_PERIOD, API_SYNC_PERIOD)


class ReadOnlyApi:
    """The HTTP API of a proxy whose objects come from an API server."""

    def __init__(
        self,
        store: ClusterStore,
        health: HealthBoard,
        metrics: ProxyMetrics,
        node: str,
        read_rules: RulesReader,
    ) -> None:
        self._store = store
        self._health = health
        self._metrics = metrics
        self._node = node
        self._read_rules = read_rules

    @property
    def health(self) -> HealthBoard:
        return self._health

    @property
    def metrics(self) -> ProxyMetrics:
        return self._metrics

    async def rules(self, node: str) -> str:
        if node != self._node:
            raise UnknownNode(node)
        return await self._read_rules(node)

    def state(self) -> Mapping[str, Any]:
        return list_manifest(self._store, to_manifest)

    async def apply(self, manifest_text: str, source_name: str) -> ChangeOutcome:
        raise ChangesNotAccepted("objects come from the API server; change them there")

    async def delete(self, manifest_text: str, source_name: str) -> ChangeOutcome:
        raise ChangesNotAccepted("objects come from the API server; change them there")


def proxy_resources(node: str) -> tuple[WatchedResource, ...]:
    """What kube-proxy watches: Services, EndpointSlices and its own Node (no Pods: endpoints carry all)."""
    own_node = WatchedResource("Node", "v1", "/api/v1/nodes", field_selector=f"metadata.name={node}")
    return (*(r for r in CORE_RESOURCES if r.kind in ("Service", "EndpointSlice", "Namespace")), own_node)


async def run_api_proxy(
    credentials: ApiCredentials,
    options: ApiProxyOptions,
    proxier_factory: ProxierFactory,
    stop: asyncio.Event,
) -> None:
    """Run until `stop` is set; the scratch namespace (when not --host) is removed on the way out."""
    netns = None if options.host else node_netns(options.lab, options.node)
    if netns is not None:
        create_netns([netns])
    store = ClusterStore()
    metrics = ProxyMetrics()
    health = ProxierHealth(options.node, 2 * options.periods.sync_period)
    board = HealthBoard([health])

    source = KubernetesSource(credentials, store_publisher(store), proxy_resources(options.node))
    loop = NodeSyncLoop(
        options.node,
        proxier_factory(options.mode, netns, options.node),
        store,
        health,
        metrics,
        options.periods,
        health_checks=HealthCheckServers(netns, proxy_health=health.healthy),
    )
    reader = iptables_rules_reader(lambda _node: netns, ipvs=options.mode == "ipvs")
    api = ReadOnlyApi(store, board, metrics, options.node, reader)
    http = HttpServer(api, options.http_host, options.http_port)
    source_task = asyncio.create_task(source.run(), name="kubernetes-source")
    try:
        loop.start()
        await http.start()
        where = netns or "<current>"
        log.info("proxy up node=%s server=%s netns=%s", options.node, credentials.server, where)
        await stop.wait()
    finally:
        source_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await source_task
        await loop.stop()
        await http.stop()
        if netns is not None:
            remove_netns(netns)
