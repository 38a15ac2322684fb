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

sys.path.insert(0, str(Path(__file__).parent.parent / "unit"))
from proxy_builders import make_endpoint, make_service, make_slice  # noqa: E402

from kubeplane.model.objects import (  # noqa: E402
    Cluster,
    Endpoint,
    EndpointSlice,
    KubeProxyConfiguration,
    LoadBalancerIngress,
    Service,
)
from kubeplane.netns.clients import http_request  # noqa: E402
from kubeplane.netns.demo_cluster import demo_node, demo_pod  # noqa: E402
from kubeplane.netns.lab import Lab  # noqa: E402
from kubeplane.netns.nsfs import in_netns  # noqa: E402
from kubeplane.proxy.iptables.proxier import NodeProxiers  # noqa: E402
from kubeplane.testing import skip_unless_root, unique_lab_name  # noqa: E402

pytestmark = pytest.mark.root

NODE_IPS = {"node-1": "198.51.100.2", "node-2": "198.51.100.3", "node-3": "198.51.100.4"}
EXTERNAL_IP = "203.0.113.10"
SECOND_EXTERNAL_IP = "203.0.113.20"
ECHO_PODS = {
    "echo-1-0": "10.244.1.2",
    "echo-1-1": "10.244.1.3",
    "echo-2-0": "10.244.2.2",
    "echo-2-1": "10.244.2.3",
}
POD_NODE = {"echo-1-0": "node-1", "echo-1-1": "node-1", "echo-2-0": "node-2", "echo-2-1": "node-2"}
CLIENT = "default/client"
CLIENT_IP = "10.244.3.2"


def svc(name: str, ip: str, port: int = 80, target: int = 8080, **fields: object) -> Service:
    return make_service(name, ip, port, namespace="default", port_name="http", target_port=target, **fields)


def eps(
    name: str, pods: tuple[str, ...], port: int = 8080, protocol: str = "TCP", **conditions: bool
) -> EndpointSlice:
    endpoints: tuple[Endpoint, ...] = tuple(
        make_endpoint(ECHO_PODS[p], POD_NODE[p], **conditions)
        for p in pods  # type: ignore[arg-type]
    )
    return make_slice(name, endpoints, port, namespace="default", port_name="http", protocol=protocol)  # type: ignore[arg-type]


ALL = tuple(ECHO_PODS)
BASE_SERVICES: dict[str, tuple[Service, EndpointSlice | None]] = {
    "web": (svc("web", "10.96.0.100"), eps("web", ALL)),
    "np": (svc("np", "10.96.0.101", type="NodePort", node_port=30080), eps("np", ("echo-2-0", "echo-2-1"))),
    "local": (
        svc(
            "local",
            "10.96.0.102",
            type="LoadBalancer",
            node_port=30081,
            external_traffic_policy="Local",
            health_check_node_port=32081,
            load_balancer_ingress=(LoadBalancerIngress(ip="192.0.2.10"),),
        ),
        eps("local", ("echo-1-0", "echo-1-1")),
    ),
    "fw": (
        svc(
            "fw",
            "10.96.0.103",
            type="LoadBalancer",
            node_port=30082,
            load_balancer_ingress=(LoadBalancerIngress(ip="192.0.2.20"),),
            load_balancer_source_ranges=(f"{EXTERNAL_IP}/32",),
        ),
        eps("fw", ("echo-2-0",)),
    ),
    "hair": (svc("hair", "10.96.0.104"), eps("hair", ("echo-1-0",))),
    "sticky": (svc("sticky", "10.96.0.105", session_affinity="ClientIP"), eps("sticky", ALL)),
    "empty": (svc("empty", "10.96.0.106"), None),
    "term": (svc("term", "10.96.0.107"), None),
    "dns": (svc("dns", "10.96.0.108", 53, 5353, protocol="UDP"), eps("dns", ("echo-1-0",), 5353, "UDP")),
    "long": (svc("long", "10.96.0.109"), eps("long", ("echo-2-0",))),
    "ext": (svc("ext", "10.96.0.110", external_ips=("192.0.2.30",)), eps("ext", ("echo-2-1",))),
}


def cluster_with(**overrides: tuple[Service, EndpointSlice | None]) -> Cluster:
    """The base cluster with some services (and their slices) replaced."""
    entries = {**BASE_SERVICES, **overrides}
    slices = [s for _, s in entries.values() if s is not None]
    pods = (
        *(
            demo_pod(name, int(POD_NODE[name][-1]), int(ip.rsplit(".", 1)[1]))
            for name, ip in ECHO_PODS.items()
        ),
        demo_pod("client", 3, 2),
    )
    return Cluster(
        services=tuple(s for s, _ in entries.values()),
        endpoint_slices=tuple(slices),
        pods=pods,
        nodes=tuple(demo_node(i) for i in (1, 2, 3)),
        proxy_config=KubeProxyConfiguration(cluster_cidr="10.244.0.0/16"),
    )


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    skip_unless_root()
    made = Lab(unique_lab_name())
    try:
        made.up(cluster_with())
        made.wait_ready([f"default/{p}" for p in (*ECHO_PODS, "client")])
        made.exec("external", ["ip", "addr", "add", f"{SECOND_EXTERNAL_IP}/24", "dev", "eth0"])
        yield made
    finally:
        made.down()


@pytest.fixture(scope="module")
def proxiers(lab: Lab) -> NodeProxiers:
    return NodeProxiers({node: lab.node_netns(node) for node in NODE_IPS})


def sync(proxiers: NodeProxiers, cluster: Cluster) -> None:
    results = proxiers.sync(cluster)
    assert all(r.ok for r in results.values()), {n: r.error for n, r in results.items()}


def get(lab: Lab, target: str, ip: str, port: int, timeout: float = 3.0) -> dict[str, object]:
    return lab.http_get(target, f"http://{ip}:{port}/", timeout=timeout)


def curl_from(lab: Lab, source_ip: str, url: str) -> int:
    """curl's exit code from the external namespace with a chosen source address (28 = timed out)."""
    return lab.exec("external", ["curl", "-s", "-m", "2", "--interface", source_ip, url]).returncode


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


def _udp_from_fixed_port(lab: Lab, source_port: int) -> dict[str, object]:
    import json

    def exchange() -> dict[str, object]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", source_port))
            sock.settimeout(2.0)
            sock.connect(("10.96.0.108", 53))
            sock.send(b"ping")
            reply: dict[str, object] = json.loads(sock.recv(65535))
            return reply

    return in_netns(lab.netns_of(CLIENT), exchange)


def test_udp_endpoint_switch_removes_stale_conntrack(lab: Lab, proxiers: NodeProxiers) -> None:
    dns = BASE_SERVICES["dns"][0]
    sync(proxiers, cluster_with())
    assert _udp_from_fixed_port(lab, 40053)["pod"] == "echo-1-0"
    sync(proxiers, cluster_with(dns=(dns, eps("dns", ("echo-2-0",), 5353, "UDP"))))
    assert _udp_from_fixed_port(lab, 40053)["pod"] == "echo-2-0"


def test_udp_service_scaled_to_zero_stops_using_the_old_endpoint(lab: Lab, proxiers: NodeProxiers) -> None:
    dns = BASE_SERVICES["dns"][0]
    sync(proxiers, cluster_with())
    assert _udp_from_fixed_port(lab, 40054)["pod"] == "echo-1-0"
    sync(proxiers, cluster_with(dns=(dns, None)))
    with pytest.raises(ConnectionRefusedError):
        _udp_from_fixed_port(lab, 40054)
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
