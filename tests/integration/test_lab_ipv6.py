"""Dual-stack in the lab: IPv6 packets between pods, through Service rules (ip6tables) and in from outside.

Most tests share one lab of examples/dual-stack, with kube-proxy's iptables rules synced once per node by an
IptablesProxier (IPv4 and IPv6 tables, as the daemon does). The last test runs the whole daemon, so endpoints
come from the lab's readiness and names from the cluster DNS. Every assertion is on what the echo workload
that answered reports: its pod, the address it was reached on and the client address it saw.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeplane.daemon.app import Daemon, DaemonOptions
from kubeplane.model.objects import Cluster, Service
from kubeplane.netns.clients import http_request
from kubeplane.netns.lab import Lab, load_manifests
from kubeplane.netns.plan import EXTERNAL_CLIENT_IP6
from kubeplane.proxy.healthcheck import HealthCheckServers
from kubeplane.proxy.iptables.proxier import IptablesProxier
from kubeplane.proxy.plan import plan_node
from kubeplane.testing import skip_unless_root, unique_lab_name

pytestmark = pytest.mark.root

EXAMPLE = Path(__file__).parents[2] / "examples" / "dual-stack"
BACKENDS = {"web-1", "web-2"}
CLIENT = "demo/client"
LB_INGRESS_IP6 = "2001:db8:200::10"
NODE_PORT = 30080
UDP_NODE_PORT = 30053
LOCAL_NODE_PORT = 30081


def _ipv6_cluster_ip(cluster: Cluster, name: str) -> str:
    service: Service = next(s for s in cluster.services if s.meta.name == name)
    return next(ip for ip in service.cluster_ips if ":" in ip)


def _client_ip(reply: dict[str, object]) -> str:
    """The address part of the echo's `client` (`[ip]:port` for IPv6, `ip:port` for IPv4)."""
    text = str(reply["client"])
    return text[1 : text.index("]")] if text.startswith("[") else text.rsplit(":", 1)[0]


def _url(ip: str, port: int) -> str:
    return f"http://[{ip}]:{port}/" if ":" in ip else f"http://{ip}:{port}/"


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return load_manifests([EXAMPLE])


@pytest.fixture(scope="module")
def lab(cluster: Cluster) -> Iterator[Lab]:
    skip_unless_root()
    made = Lab(unique_lab_name())
    try:
        made.up(cluster)
        made.wait_ready([f"demo/{p.meta.name}" for p in cluster.pods])
        for node in cluster.nodes:
            result = IptablesProxier(made.node_netns(node.meta.name), node.meta.name).sync(cluster)
            assert result.ok, result
        yield made
    finally:
        made.down()


@pytest.mark.parametrize(("target", "node"), [("web-2", "node-b"), ("web-1", "node-a")])
def test_pod_reaches_pods_on_its_own_and_another_node_over_ipv6(lab: Lab, target: str, node: str) -> None:
    assert lab.pod("demo", "client").node == "node-a"
    address = lab.pod("demo", target).ip6
    assert address is not None
    reply = lab.http_get(CLIENT, _url(address, 8080))
    assert (reply["pod"], reply["node"], reply["podIP"]) == (target, node, address)
    assert _client_ip(reply) == lab.pod("demo", "client").ip6


def test_ipv6_cluster_ip_of_a_dual_stack_service_lands_on_every_backend_unmasqueraded(
    lab: Lab, cluster: Cluster
) -> None:
    url = _url(_ipv6_cluster_ip(cluster, "web"), 80)
    replies = [lab.http_get(CLIENT, url, timeout=2.0) for _ in range(24)]
    assert {r["pod"] for r in replies} == BACKENDS
    for reply in replies:
        assert reply["podIP"] == lab.pod("demo", str(reply["pod"])).ip6
        assert _client_ip(reply) == lab.pod("demo", "client").ip6


def test_ipv4_cluster_ip_of_the_same_service_still_answers_over_ipv4(lab: Lab, cluster: Cluster) -> None:
    service = next(s for s in cluster.services if s.meta.name == "web")
    reply = lab.http_get(CLIENT, _url(service.cluster_ips[0], 80))
    assert reply["pod"] in BACKENDS
    assert reply["podIP"] == lab.pod("demo", str(reply["pod"])).ip
    assert _client_ip(reply) == lab.pod("demo", "client").ip


def test_udp_to_the_ipv6_cluster_ip_reaches_a_backend_udp_echo(lab: Lab, cluster: Cluster) -> None:
    reply = lab.udp_echo(CLIENT, _ipv6_cluster_ip(cluster, "web"), 53, b"over-v6")
    assert reply["pod"] in BACKENDS and reply["data"] == "over-v6"
    assert reply["podIP"] == lab.pod("demo", str(reply["pod"])).ip6
    assert _client_ip(reply) == lab.pod("demo", "client").ip6


def test_pod_reaching_itself_through_the_ipv6_cluster_ip_is_masqueraded_hairpin(
    lab: Lab, cluster: Cluster
) -> None:
    url = _url(_ipv6_cluster_ip(cluster, "web"), 80)
    own = [r for r in (lab.http_get("demo/web-1", url) for _ in range(24)) if r["pod"] == "web-1"]
    assert own, "24 requests never landed on the sender itself"
    node_a = lab.plan.node("node-a")
    assert {_client_ip(r) for r in own} == {node_a.gateway_ip6}


def test_nodeport_over_ipv6_from_the_external_client_is_masqueraded_by_the_node(lab: Lab) -> None:
    for node in lab.plan.nodes:
        assert node.ip6 is not None
        replies = [lab.http_get("external", _url(node.ip6, NODE_PORT)) for _ in range(16)]
        assert {r["pod"] for r in replies} == BACKENDS
        for reply in replies:
            assert reply["podIP"] == lab.pod("demo", str(reply["pod"])).ip6
            assert _client_ip(reply) in (node.ip6, node.gateway_ip6)
            assert _client_ip(reply) != EXTERNAL_CLIENT_IP6


def test_udp_nodeport_over_ipv6_reaches_a_backend_masqueraded(lab: Lab) -> None:
    node = lab.plan.node("node-b")
    reply = lab.udp_echo("external", str(node.ip6), UDP_NODE_PORT, b"np-v6")
    assert reply["pod"] in BACKENDS and reply["data"] == "np-v6"
    assert reply["podIP"] == lab.pod("demo", str(reply["pod"])).ip6
    assert _client_ip(reply) in (node.ip6, node.gateway_ip6)


def test_ipv6_load_balancer_ingress_with_local_policy_keeps_the_external_client_address(lab: Lab) -> None:
    # The router sends the ingress address to the first node, node-a; only its own backend may answer.
    replies = [lab.http_get("external", _url(LB_INGRESS_IP6, 80)) for _ in range(8)]
    assert {(r["pod"], r["podIP"]) for r in replies} == {("web-1", lab.pod("demo", "web-1").ip6)}
    assert {_client_ip(r) for r in replies} == {EXTERNAL_CLIENT_IP6}


def test_local_policy_nodeport_over_ipv6_answers_from_the_node_own_backend(lab: Lab) -> None:
    node_b = lab.plan.node("node-b")
    replies = [lab.http_get("external", _url(str(node_b.ip6), LOCAL_NODE_PORT)) for _ in range(8)]
    assert {(r["pod"], r["node"]) for r in replies} == {("web-2", "node-b")}
    assert {_client_ip(r) for r in replies} == {EXTERNAL_CLIENT_IP6}


async def test_health_check_node_port_answers_on_both_families_counting_a_dual_stack_pod_once(
    lab: Lab, cluster: Cluster
) -> None:
    edge = next(s for s in cluster.services if s.meta.name == "edge")
    assert edge.health_check_node_port
    servers = [HealthCheckServers(lab.node_netns(node.meta.name)) for node in cluster.nodes]
    try:
        for node, server in zip(cluster.nodes, servers, strict=True):
            await server.update(plan_node(cluster, node.meta.name))
        for node in lab.plan.nodes:
            for address in (node.ip, str(node.ip6)):
                url = f"{_url(address, edge.health_check_node_port)}healthz"
                response = await asyncio.to_thread(http_request, lab.external_netns, url, 2.0)
                assert response.status == 200, (node.name, address)
                assert json.loads(response.body)["localEndpoints"] == 1
    finally:
        for server in servers:
            await server.close()


def test_single_stack_service_in_a_dual_stack_cluster_serves_ipv4_only(lab: Lab, cluster: Cluster) -> None:
    legacy = next(s for s in cluster.services if s.meta.name == "legacy")
    (address,) = legacy.cluster_ips
    reply = lab.http_get(CLIENT, _url(address, 80))
    assert reply["pod"] in BACKENDS
    assert reply["podIP"] == lab.pod("demo", str(reply["pod"])).ip


def test_pod_hosts_file_lists_both_pod_ips(lab: Lab) -> None:
    client = lab.pod("demo", "client")
    lines = lab.exec(CLIENT, ["cat", "/etc/hosts"]).stdout.splitlines()
    assert f"{client.ip}\tclient" in lines and f"{client.ip6}\tclient" in lines


def _ipv6_routes(lab: Lab, target: str) -> list[dict[str, object]]:
    shown = lab.exec(target, ["ip", "-6", "-j", "route", "show"])
    routes: list[dict[str, object]] = json.loads(shown.stdout)
    return routes


def test_the_ipv6_underlay_has_no_way_out_of_the_lab(lab: Lab) -> None:
    underlay = subprocess.run(
        ["ip", "-n", lab.underlay_netns, "-6", "-j", "route", "show"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert not [r for r in json.loads(underlay.stdout) if r["dst"] == "default"]
    assert [r for r in _ipv6_routes(lab, "external") if r["dst"] == "default"]
    with pytest.raises(OSError):
        lab.tcp_connect("external", "2001:db8:ffff::1", 80, timeout=1.0)


# --- the whole daemon -----------------------------------------------------------------------------------


async def _until_answered(lab: Lab, url: str, expected: set[tuple[str, str]], timeout: float = 15.0) -> None:
    """Until 16 GETs of `url` from the client are answered by exactly the `expected` (pod, node) pairs."""
    deadline = time.monotonic() + timeout

    def seen() -> set[tuple[str, str]]:
        pods: set[tuple[str, str]] = set()
        for _ in range(16):
            try:
                reply = lab.http_get(CLIENT, url, timeout=1.0)
            except OSError:
                continue
            pods.add((str(reply["pod"]), str(reply["node"])))
        return pods

    while await asyncio.to_thread(seen) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not answered by {sorted(expected)} within {timeout}s")
        await asyncio.sleep(0.2)


async def test_daemon_serves_a_dual_stack_service_by_name_over_ipv6(tmp_path: Path) -> None:
    skip_unless_root()
    manifests = tmp_path / "manifests"
    shutil.copytree(EXAMPLE, manifests)
    daemon = Daemon(DaemonOptions(paths=(manifests,), lab=unique_lab_name(), health_timeout=1.0))
    await daemon.start()
    try:
        lab = daemon.lab
        address = await asyncio.to_thread(lab.resolve, CLIENT, "web.demo.svc.cluster.local", 2.0, "IPv6")
        assert address.startswith("fd00:10:96:")
        await _until_answered(lab, _url(address, 80), {("web-1", "node-a"), ("web-2", "node-b")})
        (manifests / "apps.yaml").write_text(
            (manifests / "apps.yaml").read_text().replace("nodeName: node-b", "nodeName: node-a")
        )
        await _until_answered(lab, _url(address, 80), {("web-1", "node-a"), ("web-2", "node-a")})
        moved = await asyncio.to_thread(
            lab.http_get, "demo/web-1", _url(str(lab.pod("demo", "web-2").ip6), 8080)
        )
        assert (moved["pod"], moved["podIP"]) == ("web-2", lab.pod("demo", "web-2").ip6)
        assert str(moved["podIP"]).startswith("fd00:10:244:1:")
    finally:
        await daemon.stop()
