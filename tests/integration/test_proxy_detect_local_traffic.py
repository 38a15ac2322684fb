"""Real packets under detectLocalMode InterfaceNamePrefix and BridgeInterface: who gets masqueraded.

kube-proxy masquerades ClusterIP traffic that its local-traffic detector calls non-local. In the lab every
pod's node-side veth is named `p<hash>-<pod>` and the node's other interfaces are `lo` and `eth0`, so prefix
`p` marks exactly the pods' interfaces. clusterCIDR is left empty, so no CIDR rule can explain a result.
The echo pods report the source address they saw: a masqueraded connection shows a node address (the node's
uplink address, or the pod gateway 10.244.N.1 when the endpoint is on the same node), an untouched one the
sender's own address.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from proxy_scenario import (  # noqa: E402
    CLIENT,
    CLIENT_IP,
    COMMON_SERVICES,
    NODE_IPS,
    get,
    iptables_proxiers,
    scenario_cluster,
    scenario_lab,
)
from proxy_scenario import (
    sync_iptables as sync,
)

from kubeplane.model.objects import Cluster, KubeProxyConfiguration  # noqa: E402
from kubeplane.netns.lab import Lab  # noqa: E402
from kubeplane.netns.names import pod_veth_ifname  # noqa: E402
from kubeplane.proxy.iptables.proxier import NodeProxiers  # noqa: E402

pytestmark = pytest.mark.root

ON_NODE_2 = "10.96.0.101"  # `np`: endpoints echo-2-0 and echo-2-1, both on node-2
ON_NODE_1 = "10.96.0.104"  # `hair`: endpoint echo-1-0 on node-1
NODE_1_POD_GATEWAY = "10.244.1.1"


def cluster(**detect_local: str) -> Cluster:
    return scenario_cluster(COMMON_SERVICES, KubeProxyConfiguration(cluster_cidr="", **detect_local))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from scenario_lab(cluster(), ready_timeout=10.0)


@pytest.fixture(scope="module")
def proxiers(lab: Lab) -> NodeProxiers:
    return iptables_proxiers(lab)


def client_address(lab: Lab, source: str, service_ip: str) -> str:
    return str(get(lab, source, service_ip, 80)["client"]).rsplit(":", 1)[0]


def test_interface_prefix_leaves_pod_traffic_alone_and_masquerades_the_node(
    lab: Lab, proxiers: NodeProxiers
) -> None:
    sync(proxiers, cluster(detect_local_mode="InterfaceNamePrefix", detect_local_interface_name_prefix="p"))
    assert client_address(lab, CLIENT, ON_NODE_2) == CLIENT_IP
    assert client_address(lab, "node/node-1", ON_NODE_1) == NODE_1_POD_GATEWAY


def test_interface_prefix_matching_no_interface_masquerades_pod_traffic(
    lab: Lab, proxiers: NodeProxiers
) -> None:
    sync(proxiers, cluster(detect_local_mode="InterfaceNamePrefix", detect_local_interface_name_prefix="q"))
    assert client_address(lab, CLIENT, ON_NODE_2) == NODE_IPS["node-3"]


def test_bridge_interface_counts_only_that_interface_as_local(lab: Lab, proxiers: NodeProxiers) -> None:
    client_veth = pod_veth_ifname(*CLIENT.split("/"))
    sync(proxiers, cluster(detect_local_mode="BridgeInterface", detect_local_bridge_interface=client_veth))
    assert client_address(lab, CLIENT, ON_NODE_2) == CLIENT_IP
    sync(proxiers, cluster(detect_local_mode="BridgeInterface", detect_local_bridge_interface="cbr0"))
    assert client_address(lab, CLIENT, ON_NODE_2) == NODE_IPS["node-3"]
