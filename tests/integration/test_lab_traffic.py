"""Packets between lab namespaces: pod to pod (same node, across nodes), UDP, nodes, external, hostNetwork."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kubeplane.model.objects import Cluster, Container, ContainerPort, NodeAddress, ObjectMeta, Pod
from kubeplane.netns.demo_cluster import demo_cluster
from kubeplane.netns.lab import Lab

pytestmark = pytest.mark.root


def _host_network_pod(node_index: int, port: int) -> Pod:
    return Pod(
        meta=ObjectMeta(name=f"hostnet-{node_index}", namespace="kube-system"),
        node_name=f"node-{node_index}",
        containers=(Container("app", (ContainerPort(port),)),),
        host_network=True,
    )


@pytest.fixture
def lab(lab_factory) -> Lab:
    base = demo_cluster(nodes=2, pods_per_node=2)
    node_2 = base.nodes[1]
    node_2 = replace(node_2, addresses=(*node_2.addresses, NodeAddress("ExternalIP", "192.0.2.20")))
    nodes = (base.nodes[0], node_2)
    return lab_factory(Cluster(nodes=nodes, pods=(*base.pods, _host_network_pod(2, 10080))))


def test_pod_reaches_pod_on_another_node_and_echo_sees_the_pod_ip(lab: Lab) -> None:
    reply = lab.http_get("default/echo-1-0", "http://10.244.2.3:8080/hello")
    assert (reply["pod"], reply["node"], reply["podIP"]) == ("echo-2-1", "node-2", "10.244.2.3")
    assert reply["port"] == 8080
    assert reply["client"].split(":")[0] == lab.pod_ip("default", "echo-1-0")
    assert reply["path"] == "/hello"


def test_pod_reaches_pod_on_the_same_node(lab: Lab) -> None:
    reply = lab.http_get("default/echo-1-0", "http://10.244.1.3:8080/")
    assert reply["pod"] == "echo-1-1"
    assert reply["client"].split(":")[0] == "10.244.1.2"


def test_pod_reaches_itself_through_its_own_ip(lab: Lab) -> None:
    reply = lab.http_get("default/echo-2-0", "http://10.244.2.2:8080/")
    assert reply["pod"] == "echo-2-0"
    assert reply["client"].split(":")[0] == "10.244.2.2"


def test_udp_echo_replies_with_the_client_address(lab: Lab) -> None:
    reply = lab.udp_echo("default/echo-2-1", "10.244.1.2", 5353, payload=b"marco")
    assert (reply["pod"], reply["port"], reply["data"]) == ("echo-1-0", 5353, "marco")
    assert reply["client"].split(":")[0] == "10.244.2.3"


def test_tcp_client_that_is_not_http_gets_a_plain_echo(lab: Lab) -> None:
    assert lab.tcp_connect("default/echo-1-0", "10.244.2.2", 8080, b"hello there\n") == b"hello there\n"


def test_node_reaches_a_pod_on_another_node_from_its_internal_ip(lab: Lab) -> None:
    reply = lab.http_get("node/node-1", "http://10.244.2.2:8080/")
    assert reply["pod"] == "echo-2-0"
    assert reply["client"].split(":")[0] == "198.51.100.2"


def test_external_client_reaches_a_host_network_pod_on_the_node_ip(lab: Lab) -> None:
    reply = lab.http_get("external", "http://198.51.100.3:10080/")
    assert (reply["pod"], reply["podIP"]) == ("hostnet-2", "198.51.100.3")
    assert reply["client"].split(":")[0] == "203.0.113.10"


def test_external_client_reaches_a_node_on_its_external_ip(lab: Lab) -> None:
    reply = lab.http_get("external", "http://192.0.2.20:10080/")
    assert (reply["pod"], reply["host"]) == ("hostnet-2", "192.0.2.20:10080")
    assert reply["client"].split(":")[0] == "203.0.113.10"


def test_host_network_pod_shares_the_node_namespace(lab: Lab) -> None:
    assert lab.pod_netns("kube-system", "hostnet-2") == lab.node_netns("node-2")
    reply = lab.http_get("default/echo-1-0", "http://198.51.100.3:10080/")
    assert reply["client"].split(":")[0] == "10.244.1.2"


def test_external_client_cannot_reach_pod_ips_directly(lab: Lab) -> None:
    with pytest.raises(OSError):
        lab.tcp_connect("external", "10.244.1.2", 8080, timeout=0.5)
