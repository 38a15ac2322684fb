"""`kubeplane proxy` without --host: a real cluster's objects become rules in a scratch node namespace only.

The API server is the local fake that speaks list/watch (tests/unit/test_sources_kubernetes.py). The test
reads what the kernel holds in the scratch namespace and checks that the root namespace got nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess

import pytest

from kubeplane.daemon.api_proxy import ApiProxyOptions, run_api_proxy
from kubeplane.daemon.node_sync import SyncPeriods
from kubeplane.daemon.proxiers import default_proxier_factory
from kubeplane.netns.names import node_netns
from kubeplane.netns.nsfs import netns_exists
from kubeplane.netns.run import run_in_netns
from kubeplane.sources.kubeconfig import ApiCredentials
from kubeplane.testing import skip_unless_root, unique_lab_name
from tests.unit.test_sources_kubernetes import REAL_NODE, REAL_POD, REAL_SLICE, FakeApiServer, running

pytestmark = pytest.mark.root

SERVICE = {
    "metadata": {"name": "kube-dns", "namespace": "kube-system"},
    "spec": {
        "clusterIP": "10.96.0.10",
        "clusterIPs": ["10.96.0.10"],
        "selector": {"k8s-app": "kube-dns"},
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}],
    },
}


def _root_nat_rules() -> list[str]:
    """The root namespace's nat table without iptables-save's timestamped comments."""
    text = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=False).stdout
    return [line for line in text.splitlines() if not line.startswith("#")]


async def test_api_objects_become_rules_in_the_scratch_namespace_and_it_is_removed() -> None:
    skip_unless_root()
    api = FakeApiServer()
    for path, obj in (
        ("/api/v1/nodes", REAL_NODE),
        ("/api/v1/pods", REAL_POD),
        ("/apis/discovery.k8s.io/v1/endpointslices", REAL_SLICE),
        ("/api/v1/services", SERVICE),
    ):
        api.put(path, obj)
    lab = unique_lab_name()
    netns = node_netns(lab, "kind-worker")
    root_before = _root_nat_rules()
    options = ApiProxyOptions(node="kind-worker", lab=lab, http_port=0, periods=SyncPeriods(0.01, 60.0))
    stop = asyncio.Event()
    async with running(api):
        task = asyncio.create_task(
            run_api_proxy(ApiCredentials(server=api.url), options, default_proxier_factory, stop)
        )
        try:
            async with asyncio.timeout(20):
                while True:
                    await asyncio.sleep(0.1)
                    if not netns_exists(netns):
                        continue
                    rules = await asyncio.to_thread(run_in_netns, netns, ["iptables-save", "-t", "nat"])
                    if "10.244.1.3:53" in rules:
                        break
            assert (
                '-d 10.96.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP"' in rules
            )
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert not netns_exists(netns)
    assert _root_nat_rules() == root_before
