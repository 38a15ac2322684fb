"""Pure parts of conntrack cleanup and the health check server (no root)."""

from __future__ import annotations

import asyncio
import json
import socket

from proxy_builders import make_cluster, make_endpoint, make_service, make_slice

from kubeplane.model.objects import LoadBalancerIngress
from kubeplane.proxy.conntrack import FlowTuple, entry_is_stale, stale_targets
from kubeplane.proxy.healthcheck import (
    HealthCheckServers,
    HealthCheckService,
    health_check_services,
    response_bytes,
)
from kubeplane.proxy.plan import plan_node

UDP = socket.IPPROTO_UDP


def _udp_plan(endpoints: tuple, **fields: object):  # type: ignore[no-untyped-def, type-arg]
    svc = make_service("dns", "10.96.0.10", 53, protocol="UDP", node_port=30053, type="NodePort", **fields)
    slices = (make_slice("dns", endpoints, 53, protocol="UDP"),) if endpoints else ()
    return plan_node(make_cluster((svc,), slices), "node-a")


def test_entry_to_an_endpoint_that_stopped_serving_is_stale() -> None:
    plan = _udp_plan(
        (
            make_endpoint("10.244.1.1", "node-a"),
            make_endpoint("10.244.2.1", "node-b", serving=False, ready=False),
        )
    )
    targets = stale_targets(None, plan, "IPv4")
    assert not entry_is_stale(FlowTuple(UDP, "10.96.0.10", 53, "10.244.1.1"), targets)
    assert entry_is_stale(FlowTuple(UDP, "10.96.0.10", 53, "10.244.2.1"), targets)
    assert entry_is_stale(FlowTuple(UDP, "198.51.100.2", 30053, "10.244.2.1"), targets)


def test_entry_that_was_never_dnated_is_stale_once_endpoints_exist() -> None:
    targets = stale_targets(None, _udp_plan((make_endpoint("10.244.1.1", "node-a"),)), "IPv4")
    assert entry_is_stale(FlowTuple(UDP, "10.96.0.10", 53, "10.96.0.10"), targets)


def test_service_with_no_endpoints_still_clears_old_flows() -> None:
    targets = stale_targets(None, _udp_plan(()), "IPv4")
    assert entry_is_stale(FlowTuple(UDP, "10.96.0.10", 53, "10.244.1.1"), targets)


def test_deleted_service_clears_its_flows_and_tcp_is_never_touched() -> None:
    before = _udp_plan((make_endpoint("10.244.1.1", "node-a"),), external_ips=("192.0.2.5",))
    after = plan_node(make_cluster((), ()), "node-a")
    targets = stale_targets(before, after, "IPv4")
    assert entry_is_stale(FlowTuple(UDP, "192.0.2.5", 53, "10.244.1.1"), targets)
    assert not entry_is_stale(FlowTuple(socket.IPPROTO_TCP, "10.96.0.10", 53, "10.244.9.9"), targets)


def _lb_local_plan():  # type: ignore[no-untyped-def]
    svc = make_service(
        "web",
        "10.96.0.20",
        type="LoadBalancer",
        node_port=30080,
        external_traffic_policy="Local",
        health_check_node_port=32080,
        load_balancer_ingress=(LoadBalancerIngress(ip="192.0.2.10"),),
    )
    eps = (
        make_endpoint("10.244.1.1", "node-a"),
        make_endpoint("10.244.1.2", "node-a", ready=False),
        make_endpoint("10.244.2.1", "node-b"),
    )
    return plan_node(make_cluster((svc,), (make_slice("web", eps),)), "node-a")


def test_health_check_counts_local_ready_endpoints() -> None:
    assert health_check_services(_lb_local_plan()) == (HealthCheckService("ns1", "web", 32080, 1),)


def test_health_check_response_is_kube_proxys_json() -> None:
    head, body = response_bytes(HealthCheckService("ns1", "web", 32080, 0), True).split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"X-Load-Balancing-Endpoint-Weight: 0" in head
    assert (
        body == b'{"service":{"namespace":"ns1","name":"web"},"localEndpoints":0,"serviceProxyHealthy":true}'
    )


async def test_health_check_server_answers_on_its_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    plan = _lb_local_plan()
    plan = type(plan)(
        **{
            **plan.__dict__,
            "service_ports": tuple(
                type(sp)(**{**sp.__dict__, "health_check_node_port": port}) for sp in plan.service_ports
            ),
        }
    )
    servers = HealthCheckServers(None, "127.0.0.1")
    await servers.update(plan)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = await reader.read()
        writer.close()
    finally:
        await servers.close()
    head, body = raw.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert json.loads(body)["localEndpoints"] == 1
