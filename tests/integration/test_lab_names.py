"""Clients resolve names the way a pod would: its resolv.conf, queries sent from inside its namespace."""

from __future__ import annotations

import socket
import threading

import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from kubeplane.model.objects import Cluster, KubeplaneConfiguration
from kubeplane.netns.clients import NameResolutionError
from kubeplane.netns.demo_cluster import demo_cluster, demo_pod
from kubeplane.netns.lab import Lab
from kubeplane.netns.nsfs import open_socket_in_netns

pytestmark = pytest.mark.root

DNS_POD_IP = "10.244.1.53"
RECORDS = {"web.shop.svc.cluster.local.": "10.244.2.2"}


def _serve_dns(sock: socket.socket, asked: list[tuple[str, str]], stop: threading.Event) -> None:
    sock.setblocking(True)
    sock.settimeout(0.1)
    while not stop.is_set():
        try:
            data, client = sock.recvfrom(512)
        except TimeoutError:
            continue
        query = DNSRecord.parse(data)
        name = str(query.q.qname)
        asked.append((name, client[0]))
        reply = query.reply()
        if name in RECORDS and query.q.qtype == QTYPE.A:
            reply.add_answer(RR(name, QTYPE.A, rdata=A(RECORDS[name]), ttl=5))
        else:
            reply.header.rcode = 3
        sock.sendto(reply.pack(), client)


@pytest.fixture
def lab(lab_factory) -> Lab:
    base = demo_cluster(nodes=2, pods_per_node=1)
    dns = demo_pod("dns", 1, 53, namespace="kube-system", annotations={"kubeplane.dev/workload": "none"})
    config = KubeplaneConfiguration(dns_service_ip=DNS_POD_IP)
    return lab_factory(Cluster(nodes=base.nodes, pods=(*base.pods, dns), kubeplane_config=config))


def test_short_name_is_expanded_by_the_pods_search_list_and_asked_from_the_pod(lab: Lab) -> None:
    sock = open_socket_in_netns(
        lab.pod_netns("kube-system", "dns"), socket.AF_INET, socket.SOCK_DGRAM, ("0.0.0.0", 53)
    )
    asked: list[tuple[str, str]] = []
    stop = threading.Event()
    server = threading.Thread(target=_serve_dns, args=(sock, asked, stop), daemon=True)
    server.start()
    try:
        reply = lab.http_get("default/echo-1-0", "http://web.shop:8080/by-name")
        with pytest.raises(NameResolutionError):
            lab.resolve("default/echo-1-0", "missing")
    finally:
        stop.set()
        server.join(2)
        sock.close()
    assert reply["pod"] == "echo-2-0"
    # ndots:5: "web.shop" goes through the search list first; every query came from the pod's own IP.
    assert asked[:2] == [
        ("web.shop.default.svc.cluster.local.", "10.244.1.2"),
        ("web.shop.svc.cluster.local.", "10.244.1.2"),
    ]
