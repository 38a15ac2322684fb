"""The streamed full restore (kubeplane.proxy.iptables.stream) and the batched chain names it relies on."""

from __future__ import annotations

import base64
import hashlib

import pytest
from proxy_builders import make_cluster, make_endpoint, make_node, make_service, make_slice
from test_proxy_iptables_render import grouped

from kubeplane.model.objects import Cluster
from kubeplane.proxy.iptables.chains import endpoint_chain, endpoint_chains
from kubeplane.proxy.iptables.render import (
    LARGE_CLUSTER_ENDPOINTS,
    jump_rules,
    node_context,
    render_iptables,
)
from kubeplane.proxy.iptables.stream import SERVICES_PER_CHUNK, FullRestoreStream
from kubeplane.proxy.plan import plan_node, plan_node_lazily


def test_batched_endpoint_chain_names_equal_kube_proxys_encoding() -> None:
    endpoints = tuple(f"10.{i // 256}.{i % 256}.7:{8000 + i}" for i in range(300)) + ("[fd00::5]:53",)
    for name, protocol in (("ns1/svc1:p80", "TCP"), ("default/kubernetes", "sctp")):
        expected = tuple(
            "KUBE-SEP-"
            + base64.b32encode(hashlib.sha256(f"{name}{protocol.lower()}{e}".encode()).digest()).decode()[:16]
            for e in endpoints
        )
        assert endpoint_chains(name, protocol, endpoints) == expected
        assert tuple(endpoint_chain(name, protocol, e) for e in endpoints) == expected


def test_stream_of_many_batches_holds_the_same_rules_as_the_render() -> None:
    services, slices = [], []
    for i in range(3 * SERVICES_PER_CHUNK + 5):
        fields: dict[str, object] = {}
        if i % 3 == 0:
            fields["session_affinity"] = "ClientIP"
        if i % 4 == 0:
            fields.update(type="NodePort", node_port=30000 + i, external_traffic_policy="Local")
        services.append(make_service(f"s{i}", f"10.96.{i // 200}.{i % 200 + 10}", **fields))
        endpoints = tuple(make_endpoint(f"10.244.{n}.{i % 250 + 2}", f"node-{n}") for n in ("a", "b"))
        slices.append(make_slice(f"s{i}", endpoints))
    nodes = (
        make_node("node-a", "198.51.100.2", "10.244.1.0/24"),
        make_node("node-b", "198.51.100.3", "10.244.2.0/24"),
    )
    plan = plan_node(make_cluster(tuple(services), tuple(slices), nodes), "node-a")
    stream = FullRestoreStream(plan, "IPv4")
    streamed = grouped("".join(stream.chunks()))
    rendered = render_iptables(plan)
    assert streamed == grouped(rendered.restore_text("filter") + rendered.restore_text("nat"))
    assert stream.active_nat_chains == set(rendered.active_nat_chains)


def _cluster_with_endpoints(total: int) -> Cluster:
    """Services of 10 endpoints each (the last one fewer) adding up to `total` endpoints."""
    services, slices = [], []
    for i in range((total + 9) // 10):
        services.append(make_service(f"s{i:03}", f"10.96.{i // 200}.{i % 200 + 10}"))
        count = min(10, total - 10 * i)
        endpoints = tuple(make_endpoint(f"10.{i}.{n}.7", "node-b") for n in range(count))
        slices.append(make_slice(f"s{i:03}", endpoints))
    return make_cluster(tuple(services), tuple(slices))


@pytest.mark.parametrize("total", [LARGE_CLUSTER_ENDPOINTS, LARGE_CLUSTER_ENDPOINTS + 1, 2000])
def test_stream_of_lazily_planned_ports_decides_large_cluster_mode_as_the_render(total: int) -> None:
    cluster = _cluster_with_endpoints(total)
    plan = plan_node(cluster, "node-a")
    facts, lazy = plan_node_lazily(cluster, "node-a")
    stream = FullRestoreStream(facts, "IPv4", lazy.family("IPv4"))
    streamed = "".join(stream.chunks())
    rendered = render_iptables(plan)
    assert grouped(streamed) == grouped(rendered.restore_text("filter") + rendered.restore_text("nat"))
    assert stream.context == node_context(plan, "IPv4")
    assert stream.context is not None and stream.context.large_cluster == (total > LARGE_CLUSTER_ENDPOINTS)
    assert tuple(stream.ports) == plan.ports_for("IPv4")


def test_missing_jumps_are_inserted_after_the_rules_that_do_not_depend_on_the_current_tables() -> None:
    plan = plan_node(_cluster_with_endpoints(30), "node-a")
    stream = FullRestoreStream(plan, "IPv4")
    head = "".join(stream.head_chunks())
    tail = "".join(stream.tail_chunks(frozenset(), jump_rules("IPv4")))
    assert "-I " not in head and "COMMIT" not in head
    rendered = render_iptables(plan)
    for table in ("nat", "filter"):
        expected = [
            ln for ln in rendered.restore_text(table, jump_rules("IPv4")).splitlines() if ln[:3] == "-I "
        ]
        section = tail[tail.index(f"*{table}") :] if table == "filter" else tail[: tail.index("*filter")]
        assert [ln for ln in section.splitlines() if ln[:3] == "-I "] == expected
        assert expected
