"""Real packets through our iptables rules in a lab: one test per Service feature.

One lab (3 nodes, 4 echo pods on node-1 and node-2, a client pod on node-3, the external client) is built per
module; each test syncs the cluster variant it needs into every node namespace and asserts on what the echo
pods saw (`pod` that answered, `client` address).
"""

from __future__ import annotations

import dataclasses
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from proxy_scenario import (  # noqa: E402
    CLIENT,
    CLIENT_IP,
    COMMON_SERVICES,
    ECHO_PODS,
    EXTERNAL_IP,
    NODE_IPS,
    SECOND_EXTERNAL_IP,
    ServiceEntry,
    curl_from,
    eps,
    get,
    iptables_proxiers,
    make_endpoint,
    make_slice,
    scenario_cluster,
    scenario_lab,
    svc,
    udp_from_fixed_port,
)
from proxy_scenario import (
    sync_iptables as sync,
)

from kubeplane.model.objects import Cluster, KubeProxyConfiguration  # noqa: E402
from kubeplane.netns.clients import http_request  # noqa: E402
from kubeplane.netns.lab import Lab  # noqa: E402
from kubeplane.netns.nsfs import in_netns  # noqa: E402
from kubeplane.proxy.iptables.proxier import NodeProxiers  # noqa: E402

pytestmark = pytest.mark.root

BASE_SERVICES: dict[str, ServiceEntry] = {
    **COMMON_SERVICES,
    "term": (svc("term", "10.96.0.107"), None),
    "long": (svc("long", "10.96.0.109"), eps("long", ("echo-2-0",))),
}
PROXY_CONFIG = KubeProxyConfiguration(cluster_cidr="10.244.0.0/16")


def cluster_with(**overrides: ServiceEntry) -> Cluster:
    """The base cluster with some services (and their slices) replaced."""
    return scenario_cluster({**BASE_SERVICES, **overrides}, PROXY_CONFIG)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from scenario_lab(cluster_with(), ready_timeout=10.0)


@pytest.fixture(scope="module")
def proxiers(lab: Lab) -> NodeProxiers:
    return iptables_proxiers(lab)


def test_cluster_ip_spreads_over_all_endpoints(lab: Lab, proxiers: NodeProxiers) -> None:
    sync(proxiers, cluster_with())
    seen = {get(lab, CLIENT, "10.96.0.100", 80)["pod"] for _ in range(40)}
    assert seen == set(ECHO_PODS)


def test_pod_to_service_keeps_pod_source_ip(lab: Lab, proxiers: NodeProxiers) -> None:
    sync(proxiers, cluster_with())
    assert str(get(lab, CLIENT, "10.96.0.109", 80)["client"]).startswith(CLIENT_IP + ":")


def test_nodeport_from_external_is_masqueraded_to_the_node(lab: Lab, proxiers: NodeProxiers) -> None:
    sync(proxiers, cluster_with())
    reply = get(lab, "external", NODE_IPS["node-1"], 30080)
    assert reply["pod"] in ("echo-2-0", "echo-2-1")
    assert str(reply["client"]).startswith(NODE_IPS["node-1"] + ":")


def test_nodeport_from_a_pod(lab: Lab, proxiers: NodeProxiers) -> None:
    sync(proxiers, cluster_with())
    assert get(lab, CLIENT, NODE_IPS["node-2"], 30080)["pod"] in ("echo-2-0", "echo-2-1")


def test_external_ip_reaches_the_service(lab: Lab, proxiers: NodeProxiers) -> None:
    sync(proxiers, cluster_with())
    assert get(lab, "external", "192.0.2.30", 80)["pod"] == "echo-2-1"


def test_hairpin_reaches_itself_through_the_service(lab: Lab, proxiers: NodeProxiers) -> None:
    sync(proxiers, cluster_with())
    reply = get(lab, "default/echo-1-0", "10.96.0.104", 80)
    assert reply["pod"] == "echo-1-0"
    assert not str(reply["client"]).startswith(ECHO_PODS["echo-1-0"] + ":")


def test_load_balancer_source_ranges_accept_one_client_and_drop_another(
    lab: Lab, proxiers: NodeProxiers
) -> None:
    sync(proxiers, cluster_with())
    assert curl_from(lab, EXTERNAL_IP, "http://192.0.2.20/") == 0
    assert curl_from(lab, SECOND_EXTERNAL_IP, "http://192.0.2.20/") == 28
    assert curl_from(lab, SECOND_EXTERNAL_IP, "http://192.0.2.10/") == 0  # the second client is routable


def test_external_local_policy_preserves_client_ip(lab: Lab, proxiers: NodeProxiers) -> None:
    sync(proxiers, cluster_with())
    for address, port in ((NODE_IPS["node-1"], 30081), ("192.0.2.10", 80)):
        reply = get(lab, "external", address, port)
        assert reply["pod"] in ("echo-1-0", "echo-1-1")
        assert str(reply["client"]).startswith(EXTERNAL_IP + ":")


def test_external_local_policy_drops_on_node_without_local_endpoints(
    lab: Lab, proxiers: NodeProxiers
) -> None:
    sync(proxiers, cluster_with())
    assert curl_from(lab, EXTERNAL_IP, f"http://{NODE_IPS['node-3']}:30081/") == 28
    assert curl_from(lab, EXTERNAL_IP, f"http://{NODE_IPS['node-3']}:30080/") == 0  # node-3 is reachable
    # Pods on that node still reach the service (the short-circuit to the cluster-wide chain).
    assert get(lab, CLIENT, NODE_IPS["node-3"], 30081)["pod"] in ("echo-1-0", "echo-1-1")


def test_client_ip_affinity_sticks_to_one_endpoint(lab: Lab, proxiers: NodeProxiers) -> None:
    sync(proxiers, cluster_with())
    assert len({get(lab, CLIENT, "10.96.0.105", 80)["pod"] for _ in range(15)}) == 1


def test_service_without_endpoints_refuses_connections_at_once(lab: Lab, proxiers: NodeProxiers) -> None:
    sync(proxiers, cluster_with())

    def connect() -> float:
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("10.96.0.106", 80), timeout=3.0)
        return time.monotonic() - started

    assert in_netns(lab.netns_of(CLIENT), connect) < 1.0


def test_terminating_endpoints_serve_when_none_is_ready(lab: Lab, proxiers: NodeProxiers) -> None:
    term = BASE_SERVICES["term"][0]
    slice_ = make_slice(
        "term",
        (
            make_endpoint(ECHO_PODS["echo-1-0"], "node-1", ready=False, serving=True, terminating=True),
            make_endpoint(ECHO_PODS["echo-2-0"], "node-2", ready=False, serving=False, terminating=True),
        ),
        8080,
        namespace="default",
        port_name="http",
    )
    sync(proxiers, cluster_with(term=(term, slice_)))
    assert {get(lab, CLIENT, "10.96.0.107", 80)["pod"] for _ in range(10)} == {"echo-1-0"}


def test_udp_endpoint_switch_removes_stale_conntrack(lab: Lab, proxiers: NodeProxiers) -> None:
    dns = BASE_SERVICES["dns"][0]
    sync(proxiers, cluster_with())
    assert udp_from_fixed_port(lab, 40053)["pod"] == "echo-1-0"
    sync(proxiers, cluster_with(dns=(dns, eps("dns", ("echo-2-0",), 5353, "UDP"))))
    assert udp_from_fixed_port(lab, 40053)["pod"] == "echo-2-0"


def test_udp_service_scaled_to_zero_stops_using_the_old_endpoint(lab: Lab, proxiers: NodeProxiers) -> None:
    dns = BASE_SERVICES["dns"][0]
    sync(proxiers, cluster_with())
    assert udp_from_fixed_port(lab, 40054)["pod"] == "echo-1-0"
    sync(proxiers, cluster_with(dns=(dns, None)))
    with pytest.raises(ConnectionRefusedError):
        udp_from_fixed_port(lab, 40054)
    sync(proxiers, cluster_with())


def test_long_tcp_connection_survives_a_service_change(lab: Lab, proxiers: NodeProxiers) -> None:
    sync(proxiers, cluster_with())

    def converse() -> list[bytes]:
        answers = []
        with socket.create_connection(("10.96.0.109", 80), timeout=3.0) as sock:
            for step in range(2):
                sock.sendall(b"hello\n")
                answers.append(sock.recv(64))
                if step == 0:
                    changed = dataclasses.replace(BASE_SERVICES["long"][0], session_affinity="ClientIP")
                    web = (BASE_SERVICES["web"][0], eps("web", ("echo-1-0",)))
                    sync(
                        proxiers, cluster_with(long=(changed, eps("long", ("echo-2-0", "echo-2-1"))), web=web)
                    )
        return answers

    assert in_netns(lab.netns_of(CLIENT), converse) == [b"hello\n", b"hello\n"]
    sync(proxiers, cluster_with())


def test_health_check_node_port_reports_local_endpoints(lab: Lab, proxiers: NodeProxiers) -> None:
    import asyncio

    from kubeplane.proxy.healthcheck import HealthCheckServers

    sync(proxiers, cluster_with())

    async def probe() -> list[tuple[int, dict[str, object]]]:
        servers = {node: HealthCheckServers(lab.node_netns(node)) for node in ("node-1", "node-3")}
        try:
            for node, server in servers.items():
                await server.update(proxiers.proxiers[node].last_plan)  # type: ignore[arg-type]
            answers = []
            for node in ("node-1", "node-3"):
                url = f"http://{NODE_IPS[node]}:32081/healthz"
                response = await asyncio.to_thread(http_request, lab.netns_of("external"), url)
                answers.append((response.status, response.json()))
            return answers
        finally:
            for server in servers.values():
                await server.close()

    body = {"service": {"namespace": "default", "name": "local"}, "serviceProxyHealthy": True}
    assert asyncio.run(probe()) == [
        (200, {**body, "localEndpoints": 2}),
        (503, {**body, "localEndpoints": 0}),
    ]
