"""The lab scenario that both proxy modes' traffic tests run in, so iptables and IPVS prove the same features.

Three nodes, four echo pods on node-1 and node-2, a client pod on node-3, and the external client with a
second address; a base set of Services (one per feature) that each test module extends with its own and
syncs in the variant a test needs. Assertions stay in the test modules: this holds the scenario and clients.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

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
from kubeplane.netns.demo_cluster import demo_node, demo_pod  # noqa: E402
from kubeplane.netns.lab import Lab  # noqa: E402
from kubeplane.netns.nsfs import in_netns  # noqa: E402
from kubeplane.proxy.iptables.proxier import NodeProxiers  # noqa: E402
from kubeplane.testing import skip_unless_root, unique_lab_name  # noqa: E402

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
ALL = tuple(ECHO_PODS)
CLIENT = "default/client"
CLIENT_IP = "10.244.3.2"
CURL_TIMED_OUT = 28

ServiceEntry = tuple[Service, EndpointSlice | None]


def svc(name: str, ip: str, port: int = 80, target: int = 8080, **fields: object) -> Service:
    return make_service(name, ip, port, namespace="default", port_name="http", target_port=target, **fields)


def eps(
    name: str, pods: tuple[str, ...], port: int = 8080, protocol: str = "TCP", **conditions: bool
) -> EndpointSlice:
    endpoints: tuple[Endpoint, ...] = tuple(
        make_endpoint(ECHO_PODS[p], POD_NODE[p], **conditions)  # type: ignore[arg-type]
        for p in pods
    )
    return make_slice(name, endpoints, port, namespace="default", port_name="http", protocol=protocol)  # type: ignore[arg-type]


COMMON_SERVICES: dict[str, ServiceEntry] = {
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
    "dns": (svc("dns", "10.96.0.108", 53, 5353, protocol="UDP"), eps("dns", ("echo-1-0",), 5353, "UDP")),
    "ext": (svc("ext", "10.96.0.110", external_ips=("192.0.2.30",)), eps("ext", ("echo-2-1",))),
}


def scenario_cluster(services: Mapping[str, ServiceEntry], proxy_config: KubeProxyConfiguration) -> Cluster:
    """The scenario's pods and nodes with these services and slices."""
    pods = (
        *(
            demo_pod(name, int(POD_NODE[name][-1]), int(ip.rsplit(".", 1)[1]))
            for name, ip in ECHO_PODS.items()
        ),
        demo_pod("client", 3, 2),
    )
    return Cluster(
        services=tuple(s for s, _ in services.values()),
        endpoint_slices=tuple(s for _, s in services.values() if s is not None),
        pods=pods,
        nodes=tuple(demo_node(i) for i in (1, 2, 3)),
        proxy_config=proxy_config,
    )


def scenario_lab(cluster: Cluster, ready_timeout: float) -> Iterator[Lab]:
    """A lab of the scenario: every pod ready, the external client's second address added; always down."""
    skip_unless_root()
    made = Lab(unique_lab_name())
    try:
        made.up(cluster)
        made.wait_ready([f"default/{p}" for p in (*ECHO_PODS, "client")], timeout=ready_timeout)
        made.exec("external", ["ip", "addr", "add", f"{SECOND_EXTERNAL_IP}/24", "dev", "eth0"])
        yield made
    finally:
        made.down()


def iptables_proxiers(lab: Lab) -> NodeProxiers:
    """One iptables proxier per scenario node, each in its node's namespace."""
    return NodeProxiers({node: lab.node_netns(node) for node in NODE_IPS})


def sync_iptables(proxiers: NodeProxiers, cluster: Cluster) -> None:
    """Sync every node and fail the test with each node's error if any sync failed."""
    results = proxiers.sync(cluster)
    assert all(r.ok for r in results.values()), {n: r.error for n, r in results.items()}


def get(lab: Lab, target: str, ip: str, port: int, timeout: float = 3.0) -> dict[str, object]:
    return lab.http_get(target, f"http://{ip}:{port}/", timeout=timeout)


def curl_from(lab: Lab, source_ip: str, url: str) -> int:
    """curl's exit code from the external namespace with a chosen source address (28 = timed out)."""
    return lab.exec("external", ["curl", "-s", "-m", "2", "--interface", source_ip, url]).returncode


def udp_from_fixed_port(lab: Lab, source_port: int) -> dict[str, object]:
    """The `dns` Service's UDP echo asked from the client pod's fixed port, so a conntrack entry can outlive a
    change of endpoints."""

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
