"""Real packets through IPVS under detectLocalMode InterfaceNamePrefix: pod traffic keeps its source.

IPVS mode masquerades ClusterIP traffic its local-traffic detector calls non-local (`! -i PREFIX+` in
KUBE-SERVICES). The lab's pod veths are named `p<hash>-<pod>`, so prefix `p` marks the pods' interfaces and
prefix `q` matches none; clusterCIDR is empty, so no CIDR rule can explain a result. Needs IP_VS (conftest).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))
from proxy_scenario import CLIENT, CLIENT_IP, COMMON_SERVICES, NODE_IPS, get, scenario_cluster, scenario_lab  # noqa: E402

from kubeplane.model.objects import Cluster, KubeProxyConfiguration  # noqa: E402
from kubeplane.netns.lab import Lab  # noqa: E402
from kubeplane.proxy.ipvs.proxier import IpvsProxier  # noqa: E402

pytestmark = pytest.mark.root

ON_NODE_2 = "10.96.0.101"  # `np`: endpoints echo-2-0 and echo-2-1, both on node-2


def cluster(prefix: str) -> Cluster:
    config = KubeProxyConfiguration(
        mode="ipvs",
        cluster_cidr="",
        detect_local_mode="InterfaceNamePrefix",
        detect_local_interface_name_prefix=prefix,
    )
    return scenario_cluster(COMMON_SERVICES, config)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from scenario_lab(cluster("p"), ready_timeout=30.0)


def client_address_after_sync(lab: Lab, prefix: str) -> str:
    for node in NODE_IPS:
        result = IpvsProxier(lab.node_netns(node), node).sync(cluster(prefix))
        assert result.ok, result.errors
    return str(get(lab, CLIENT, ON_NODE_2, 80)["client"]).rsplit(":", 1)[0]


def test_pod_traffic_through_a_prefixed_interface_keeps_its_source(lab: Lab) -> None:
    assert client_address_after_sync(lab, "p") == CLIENT_IP


def test_pod_traffic_through_no_prefixed_interface_is_masqueraded(lab: Lab) -> None:
    assert client_address_after_sync(lab, "q") == NODE_IPS["node-3"]
