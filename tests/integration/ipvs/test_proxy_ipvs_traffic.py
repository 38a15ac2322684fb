"""Real packets through IPVS in a lab: the Service features the iptables mode passes, in IPVS mode.

One lab (3 nodes, 4 echo pods on node-1 and node-2, a client pod on node-3, the external client) is built per
module; each test syncs the cluster variant it needs into every node namespace with IpvsProxier and asserts
on what the echo pods saw (`pod` that answered, `client` address). Needs a kernel with IP_VS (see conftest).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))
from proxy_scenario import (  # noqa: E402
    CLIENT,
    CLIENT_IP,
    COMMON_SERVICES,
    CURL_TIMED_OUT,
    ECHO_PODS,
    EXTERNAL_IP,
    NODE_IPS,
    SECOND_EXTERNAL_IP,
    ServiceEntry,
    curl_from,
    eps,
    get,
    make_endpoint,
    make_slice,
    scenario_cluster,
    scenario_lab,
    svc,
    udp_from_fixed_port,
)

from kubeplane.model.objects import Cluster, KubeProxyConfiguration  # noqa: E402
from kubeplane.netns.lab import Lab  # noqa: E402
from kubeplane.netns.nsfs import in_netns  # noqa: E402
from kubeplane.proxy.ipvs.netlink import IpvsNetlink  # noqa: E402
from kubeplane.proxy.ipvs.proxier import IpvsProxier  # noqa: E402
from kubeplane.proxy.ipvs.state import VirtualServerKey  # noqa: E402

pytestmark = pytest.mark.root

BASE_SERVICES: dict[str, ServiceEntry] = {
    **COMMON_SERVICES,
    "drain": (svc("drain", "10.96.0.107"), eps("drain", ("echo-2-0", "echo-2-1"))),
    "itp": (svc("itp", "10.96.0.111", internal_traffic_policy="Local"), eps("itp", ("echo-1-0", "echo-2-0"))),
}
PROXY_CONFIG = KubeProxyConfiguration(mode="ipvs", cluster_cidr="10.244.0.0/16")


def cluster_with(**overrides: ServiceEntry) -> Cluster:
    """The base cluster with some services (and their slices) replaced."""
    return scenario_cluster({**BASE_SERVICES, **overrides}, PROXY_CONFIG)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from scenario_lab(cluster_with(), ready_timeout=30.0)


@pytest.fixture(scope="module")
def proxiers(lab: Lab) -> dict[str, IpvsProxier]:
    return {node: IpvsProxier(lab.node_netns(node), node) for node in NODE_IPS}


def sync(proxiers: dict[str, IpvsProxier], cluster: Cluster) -> None:
    results = {node: proxier.sync(cluster) for node, proxier in proxiers.items()}
    assert all(r.ok for r in results.values()), {n: r.errors for n, r in results.items()}


def test_cluster_ip_spreads_over_all_endpoints(lab: Lab, proxiers: dict[str, IpvsProxier]) -> None:
    sync(proxiers, cluster_with())
    seen = [get(lab, CLIENT, "10.96.0.100", 80)["pod"] for _ in range(8)]
    assert set(seen) == set(ECHO_PODS)
    assert all(seen.count(pod) == 2 for pod in ECHO_PODS)  # round robin: each exactly twice


def test_pod_to_service_keeps_pod_source_ip(lab: Lab, proxiers: dict[str, IpvsProxier]) -> None:
    sync(proxiers, cluster_with())
    assert str(get(lab, CLIENT, "10.96.0.100", 80)["client"]).startswith(CLIENT_IP + ":")


def test_node_to_service_is_masqueraded(lab: Lab, proxiers: dict[str, IpvsProxier]) -> None:
    sync(proxiers, cluster_with())
    reply = get(lab, "node/node-3", "10.96.0.104", 80)
    assert reply["pod"] == "echo-1-0"
    assert str(reply["client"]).startswith(NODE_IPS["node-3"] + ":")


def test_nodeport_from_external_is_masqueraded_to_the_node(
    lab: Lab, proxiers: dict[str, IpvsProxier]
) -> None:
    sync(proxiers, cluster_with())
    reply = get(lab, "external", NODE_IPS["node-1"], 30080)
    assert reply["pod"] in ("echo-2-0", "echo-2-1")
    assert str(reply["client"]).startswith(NODE_IPS["node-1"] + ":")


def test_nodeport_from_a_pod(lab: Lab, proxiers: dict[str, IpvsProxier]) -> None:
    sync(proxiers, cluster_with())
    assert get(lab, CLIENT, NODE_IPS["node-2"], 30080)["pod"] in ("echo-2-0", "echo-2-1")


def test_external_ip_reaches_the_service(lab: Lab, proxiers: dict[str, IpvsProxier]) -> None:
    sync(proxiers, cluster_with())
    assert get(lab, "external", "192.0.2.30", 80)["pod"] == "echo-2-1"


def test_hairpin_reaches_itself_through_the_service(lab: Lab, proxiers: dict[str, IpvsProxier]) -> None:
    sync(proxiers, cluster_with())
    reply = get(lab, "default/echo-1-0", "10.96.0.104", 80)
    assert reply["pod"] == "echo-1-0"
    assert not str(reply["client"]).startswith(ECHO_PODS["echo-1-0"] + ":")


def test_load_balancer_source_ranges_accept_one_client_and_drop_another(
    lab: Lab, proxiers: dict[str, IpvsProxier]
) -> None:
    sync(proxiers, cluster_with())
    assert curl_from(lab, EXTERNAL_IP, "http://192.0.2.20/") == 0
    assert curl_from(lab, SECOND_EXTERNAL_IP, "http://192.0.2.20/") == CURL_TIMED_OUT
    assert curl_from(lab, SECOND_EXTERNAL_IP, "http://192.0.2.10/") == 0  # the second client is routable


def test_external_local_policy_preserves_client_ip(lab: Lab, proxiers: dict[str, IpvsProxier]) -> None:
    sync(proxiers, cluster_with())
    for address, port in ((NODE_IPS["node-1"], 30081), ("192.0.2.10", 80)):
        reply = get(lab, "external", address, port)
        assert reply["pod"] in ("echo-1-0", "echo-1-1")
        assert str(reply["client"]).startswith(EXTERNAL_IP + ":")


def test_external_local_policy_without_local_endpoints_fails_for_external_clients_only(
    lab: Lab, proxiers: dict[str, IpvsProxier]
) -> None:
    sync(proxiers, cluster_with())
    # IPVS mode forwards to remote endpoints without masquerading; the reply comes from the pod's address,
    # which the external client does not accept.
    assert curl_from(lab, EXTERNAL_IP, f"http://{NODE_IPS['node-3']}:30081/") != 0
    assert curl_from(lab, EXTERNAL_IP, f"http://{NODE_IPS['node-3']}:30080/") == 0  # node-3 is reachable
    assert get(lab, CLIENT, NODE_IPS["node-3"], 30081)["pod"] in ("echo-1-0", "echo-1-1")


def test_internal_local_policy_uses_only_the_local_endpoint(
    lab: Lab, proxiers: dict[str, IpvsProxier]
) -> None:
    sync(proxiers, cluster_with())
    assert {get(lab, "default/echo-1-1", "10.96.0.111", 80)["pod"] for _ in range(6)} == {"echo-1-0"}
    assert {get(lab, "default/echo-2-1", "10.96.0.111", 80)["pod"] for _ in range(6)} == {"echo-2-0"}


def test_client_ip_affinity_sticks_to_one_endpoint(lab: Lab, proxiers: dict[str, IpvsProxier]) -> None:
    sync(proxiers, cluster_with())
    assert len({get(lab, CLIENT, "10.96.0.105", 80)["pod"] for _ in range(12)}) == 1


def test_service_without_endpoints_refuses_connections_at_once(
    lab: Lab, proxiers: dict[str, IpvsProxier]
) -> None:
    sync(proxiers, cluster_with())

    def connect() -> float:
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("10.96.0.106", 80), timeout=3.0)
        return time.monotonic() - started

    assert in_netns(lab.netns_of(CLIENT), connect) < 1.0


def test_unused_port_on_a_vip_is_rejected_although_the_node_listens(
    lab: Lab, proxiers: dict[str, IpvsProxier]
) -> None:
    sync(proxiers, cluster_with())
    node = lab.node_netns("node-3")
    listener = subprocess.Popen(
        ["ip", "netns", "exec", node, "socat", "TCP-LISTEN:9999,fork,reuseaddr", "SYSTEM:echo node"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        assert lab.tcp_connect(CLIENT, NODE_IPS["node-3"], 9999) == b"node\n"
        with pytest.raises(ConnectionRefusedError):
            lab.tcp_connect(CLIENT, "10.96.0.100", 9999)
    finally:
        listener.kill()
        listener.wait()


def test_udp_endpoint_switch_moves_the_flow_at_once(lab: Lab, proxiers: dict[str, IpvsProxier]) -> None:
    dns = BASE_SERVICES["dns"][0]
    sync(proxiers, cluster_with())
    assert udp_from_fixed_port(lab, 40053)["pod"] == "echo-1-0"
    sync(proxiers, cluster_with(dns=(dns, eps("dns", ("echo-2-0",), 5353, "UDP"))))
    assert udp_from_fixed_port(lab, 40053)["pod"] == "echo-2-0"
    sync(proxiers, cluster_with())


def _real_server_weights(lab: Lab, vip: str) -> dict[str, int]:
    with IpvsNetlink(lab.node_netns("node-3")) as ipvs:
        (service,) = ipvs.dump([VirtualServerKey("TCP", vip, 80)])
    return {r.real.address: r.real.weight for r in service.real_servers}


def test_terminating_endpoint_drains_then_goes(lab: Lab, proxiers: dict[str, IpvsProxier]) -> None:
    drain_svc = BASE_SERVICES["drain"][0]
    old, kept = ECHO_PODS["echo-2-0"], ECHO_PODS["echo-2-1"]
    terminating = make_slice(
        "drain",
        (
            make_endpoint(old, "node-2", ready=False, serving=True, terminating=True),
            make_endpoint(kept, "node-2"),
        ),
        8080,
        namespace="default",
        port_name="http",
    )
    sync(proxiers, cluster_with(drain=(drain_svc, eps("drain", ("echo-2-0",)))))
    sock = in_netns(lab.netns_of(CLIENT), lambda: socket.create_connection(("10.96.0.107", 80), timeout=3.0))
    try:
        sock.sendall(b"before\n")
        assert sock.recv(64) == b"before\n"
        sync(proxiers, cluster_with(drain=(drain_svc, terminating)))
        assert _real_server_weights(lab, "10.96.0.107") == {old: 0, kept: 1}
        # The open connection still works; new connections avoid the draining endpoint.
        sock.sendall(b"during\n")
        assert sock.recv(64) == b"during\n"
        assert {get(lab, CLIENT, "10.96.0.107", 80)["pod"] for _ in range(4)} == {"echo-2-1"}
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset: IPVS keeps a reset connection 10 s, a closed one 2 min
    deadline = time.monotonic() + 30
    while _real_server_weights(lab, "10.96.0.107") != {kept: 1} and time.monotonic() < deadline:
        time.sleep(1.0)
        sync(proxiers, cluster_with(drain=(drain_svc, terminating)))
    assert _real_server_weights(lab, "10.96.0.107") == {kept: 1}
    sync(proxiers, cluster_with())


def _bound_vips(lab: Lab, node: str) -> set[str]:
    out = lab.exec(f"node/{node}", ["ip", "-o", "-4", "addr", "show", "dev", "kube-ipvs0"]).stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines()}


def test_resync_changes_nothing_and_a_removed_service_loses_its_vip(
    lab: Lab, proxiers: dict[str, IpvsProxier]
) -> None:
    sync(proxiers, cluster_with())
    again = proxiers["node-3"].sync(cluster_with())
    assert (again.ipvs_operations, again.ipset_changes, again.addresses_bound) == (0, 0, 0)
    without_web = cluster_with()
    without_web = Cluster(
        services=tuple(s for s in without_web.services if s.meta.name != "web"),
        endpoint_slices=tuple(s for s in without_web.endpoint_slices if s.service_name != "web"),
        pods=without_web.pods,
        nodes=without_web.nodes,
        proxy_config=without_web.proxy_config,
    )
    assert "10.96.0.100" in _bound_vips(lab, "node-3")
    sync(proxiers, without_web)
    try:
        assert "10.96.0.100" not in _bound_vips(lab, "node-3")
        assert "10.96.0.104" in _bound_vips(lab, "node-3")
        with IpvsNetlink(lab.node_netns("node-3")) as ipvs:
            assert VirtualServerKey("TCP", "10.96.0.100", 80) not in {s.key for s in ipvs.dump_servers()}
        assert lab.exec(CLIENT, ["curl", "-s", "-m", "2", "http://10.96.0.100/"]).returncode != 0
    finally:
        sync(proxiers, cluster_with())
    assert get(lab, CLIENT, "10.96.0.100", 80)["pod"] in ECHO_PODS
