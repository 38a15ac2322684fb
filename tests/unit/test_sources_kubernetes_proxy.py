"""`kubeplane proxy`: objects listed and watched from an API server reach the node's proxier as they are."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from kubeplane.daemon.api_proxy import ApiProxyOptions, run_api_proxy
from kubeplane.daemon.node_sync import NodeProxier, SyncPeriods
from kubeplane.daemon.proxiers import ProxyMode
from kubeplane.model.objects import Cluster
from kubeplane.model.parse import parse_object
from kubeplane.proxy.plan import NodePlan, plan_node
from kubeplane.sources.kubeconfig import ApiCredentials
from kubeplane.sources.kubernetes import assemble_cluster
from tests.unit.test_sources_kubernetes import REAL_NODE, REAL_POD, REAL_SLICE, FakeApiServer, running

SERVICE = {
    "metadata": {"name": "kube-dns", "namespace": "kube-system", "uid": "s1"},
    "spec": {
        "clusterIP": "10.96.0.10",
        "clusterIPs": ["10.96.0.10"],
        "selector": {"k8s-app": "kube-dns"},
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}],
        "type": "ClusterIP",
    },
}


@dataclass(frozen=True)
class Outcome:
    ok: bool
    full: bool
    plan: NodePlan
    error: str | None = None


class RecordingProxier:
    def __init__(self) -> None:
        self.synced: list[Cluster] = []
        self.changed = asyncio.Event()

    async def sync_async(self, cluster: Cluster) -> Outcome:
        self.synced.append(cluster)
        self.changed.set()
        return Outcome(True, len(self.synced) == 1, plan_node(cluster, "kind-worker"))

    def last_rules(self) -> str:
        return ""


async def test_listed_and_watched_objects_drive_the_node_proxier() -> None:
    api = FakeApiServer()
    api.put("/api/v1/nodes", REAL_NODE)
    api.put("/api/v1/pods", REAL_POD)
    api.put("/apis/discovery.k8s.io/v1/endpointslices", REAL_SLICE)
    api.put("/api/v1/services", SERVICE)
    proxier = RecordingProxier()

    def factory(mode: ProxyMode, netns: str | None, node: str) -> NodeProxier:
        assert netns is None and node == "kind-worker"
        return proxier

    stop = asyncio.Event()
    options = ApiProxyOptions(
        node="kind-worker", lab="t", host=True, http_port=0, periods=SyncPeriods(0.01, 60.0)
    )
    async with running(api):
        task = asyncio.create_task(run_api_proxy(ApiCredentials(server=api.url), options, factory, stop))
        try:
            async with asyncio.timeout(5):
                while not proxier.synced:
                    await proxier.changed.wait()
                    proxier.changed.clear()
            first = proxier.synced[-1]
            assert [s.meta.key for s in first.services] == ["kube-system/kube-dns"]
            assert [e.addresses for e in first.endpoint_slices[0].endpoints] == [("10.244.1.3",)]
            moved = dict(
                SERVICE, spec=dict(SERVICE["spec"], ports=[{"name": "dns", "port": 5353, "protocol": "UDP"}])
            )
            api.put("/api/v1/services", moved)
            async with asyncio.timeout(5):
                while proxier.synced[-1].services[0].ports[0].port != 5353:
                    await proxier.changed.wait()
                    proxier.changed.clear()
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    node_lists = [r for r in api.lists if r.path == "/api/v1/nodes"]
    assert node_lists[0].params["fieldSelector"] == "metadata.name=kind-worker"  # its own Node only
    assert not [r for r in api.lists if r.path == "/api/v1/pods"]  # kube-proxy does not watch Pods


def test_assembled_cluster_keeps_api_objects_as_given() -> None:
    pod = parse_object({"apiVersion": "v1", "kind": "Pod", **REAL_POD})
    cluster = assemble_cluster([pod])
    assert cluster.pods == (pod,)
    assert cluster.endpoint_slices == ()  # nothing derived: the API server's controllers publish slices
