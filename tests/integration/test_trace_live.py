"""Live trace agrees with explain on real packets: one lab, rules programmed by our iptables proxier.

Lab: node-1 (198.51.100.2) with pods shop/client and shop/web-1, node-2 (198.51.100.3) with shop/web-2,
the external client 203.0.113.10. Each test sends one real connection with `trace_live`, asserts on what the
echo pod reported (which pod answered, which client address it saw) and that the kernel agrees with explain.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kubeplane.cli.trace import register
from kubeplane.model.objects import (
    SERVICE_NAME_LABEL,
    Cluster,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    KubeProxyConfiguration,
    LoadBalancerIngress,
    ObjectMeta,
    ObjectReference,
    Protocol,
    Service,
    ServicePort,
)
from kubeplane.netns import names
from kubeplane.netns.demo_cluster import demo_node, demo_pod
from kubeplane.netns.lab import Lab
from kubeplane.netns.run import run_in_netns
from kubeplane.proxy.iptables.proxier import NodeProxiers
from kubeplane.testing import skip_unless_root, unique_lab_name
from kubeplane.trace.live import LiveTrace, trace_live
from kubeplane.trace.nft_trace import TRACE_TABLE

pytestmark = pytest.mark.root

NODE_1 = "198.51.100.2"
GATEWAY_1 = "10.244.1.1"
WEB_1, WEB_2 = "10.244.1.7", "10.244.2.9"
WEB = ((WEB_1, "node-1", "web-1"), (WEB_2, "node-2", "web-2"))


def service(name: str, ip: str, port: int = 80, protocol: Protocol = "TCP", **spec: object) -> Service:
    node_port = spec.pop("node_port", None)
    target = 5353 if protocol == "UDP" else 8080
    ports = (ServicePort(port, protocol, "http", target, node_port),)  # type: ignore[arg-type]
    return Service(ObjectMeta(name, "shop"), cluster_ips=(ip,), ports=ports, **spec)  # type: ignore[arg-type]


def endpoints(
    name: str, members: tuple[tuple[str, str, str], ...], protocol: Protocol = "TCP"
) -> EndpointSlice:
    return EndpointSlice(
        meta=ObjectMeta(f"{name}-1", "shop", labels={SERVICE_NAME_LABEL: name}),
        endpoints=tuple(
            Endpoint((ip,), node_name=node, target_ref=ObjectReference("Pod", pod, "shop"))
            for ip, node, pod in members
        ),
        ports=(EndpointPort(5353 if protocol == "UDP" else 8080, protocol, "http"),),
    )


CLUSTER = Cluster(
    services=(
        service("web", "10.96.12.40", type="NodePort", node_port=30080),
        service("local", "10.96.12.41", type="NodePort", node_port=30081, external_traffic_policy="Local"),
        service("empty", "10.96.12.42"),
        service(
            "lb",
            "10.96.12.43",
            type="LoadBalancer",
            node_port=30083,
            load_balancer_ingress=(LoadBalancerIngress(ip="192.0.2.80"),),
            load_balancer_source_ranges=("192.0.2.0/28",),
        ),
        service("solo", "10.96.12.44"),
        service("echo-udp", "10.96.12.45", port=53, protocol="UDP"),
    ),
    endpoint_slices=(
        endpoints("web", WEB),
        endpoints("local", WEB[1:]),
        endpoints("lb", WEB),
        endpoints("solo", WEB[:1]),
        endpoints("echo-udp", WEB, "UDP"),
    ),
    pods=(
        demo_pod("client", 1, 5, namespace="shop"),
        demo_pod("web-1", 1, 7, namespace="shop"),
        demo_pod("web-2", 2, 9, namespace="shop"),
    ),
    nodes=(demo_node(1), demo_node(2)),
    proxy_config=KubeProxyConfiguration(cluster_cidr="10.244.0.0/16"),
)


@pytest.fixture(scope="module")
def lab() -> Iterator[str]:
    skip_unless_root()
    handle = Lab(unique_lab_name())
    try:
        handle.up(CLUSTER)
        proxiers = NodeProxiers(
            {n.meta.name: names.node_netns(handle.name, n.meta.name) for n in CLUSTER.nodes}
        )
        results = proxiers.sync(CLUSTER)
        assert all(r.ok for r in results.values()), results
        yield handle.name
    finally:
        handle.down()


def agreed(trace: LiveTrace) -> LiveTrace:
    assert trace.disagreements == (), trace.disagreements
    return trace


def test_cluster_ip_from_a_pod_reaches_an_offered_endpoint_unmasqueraded(lab: str) -> None:
    trace = agreed(trace_live(lab, "shop/client", "10.96.12.40:80"))
    assert trace.delivered_to is not None
    assert trace.delivered_to.pod in ("shop/web-1", "shop/web-2")
    assert trace.delivered_to.endpoint in {c.endpoint for c in trace.explanation.endpoints}
    assert trace.source_seen_by_server == f"10.244.1.5:{trace.flow.packet.sport}"


def test_udp_cluster_ip_is_delivered_and_agrees(lab: str) -> None:
    trace = agreed(trace_live(lab, "shop/client", "10.96.12.45:53/udp"))
    assert trace.delivered_to is not None and trace.delivered_to.endpoint.endswith(":5353")


def test_node_port_from_outside_is_masqueraded_by_the_node(lab: str) -> None:
    trace = agreed(trace_live(lab, "external", f"{NODE_1}:30080"))
    assert trace.delivered_to is not None
    seen = (trace.source_seen_by_server or "").rpartition(":")[0]
    expected = GATEWAY_1 if trace.delivered_to.pod == "shop/web-1" else NODE_1
    assert seen == expected
    assert trace.observation.snat == expected


def test_hairpin_back_to_the_sending_pod_is_masqueraded_to_its_gateway(lab: str) -> None:
    trace = agreed(trace_live(lab, "shop/web-1", "10.96.12.44:80"))
    assert trace.delivered_to is not None and trace.delivered_to.pod == "shop/web-1"
    assert (trace.source_seen_by_server or "").startswith(f"{GATEWAY_1}:")


def test_external_traffic_policy_local_drops_on_a_node_without_local_endpoints(lab: str) -> None:
    trace = agreed(trace_live(lab, "external", f"{NODE_1}:30081", timeout=1.0))
    assert trace.probe.outcome == "timeout"
    assert trace.explanation.verdict == "DROP"
    assert trace.hits[-1].chain == "KUBE-EXTERNAL-SERVICES"


def test_service_without_endpoints_is_refused(lab: str) -> None:
    trace = agreed(trace_live(lab, "shop/client", "10.96.12.42:80"))
    assert trace.probe.outcome == "refused"
    assert trace.explanation.verdict == "REJECT"


def test_load_balancer_source_range_drops_an_unlisted_client(lab: str) -> None:
    trace = agreed(trace_live(lab, "external", "192.0.2.80:80", timeout=1.0))
    assert trace.probe.outcome == "timeout"
    assert trace.hits[-1].chain == "KUBE-PROXY-FIREWALL"


def test_trace_leaves_no_table_and_no_monitor_behind(lab: str) -> None:
    trace_live(lab, "shop/client", "10.96.12.40:80")
    for node in ("node-1", "node-2"):
        tables = run_in_netns(names.node_netns(lab, node), ["nft", "list", "tables"])
        assert TRACE_TABLE not in tables
    monitors = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"monitor" in argv and any(names.lab_prefix(lab).encode() in a for a in argv):
            monitors.append(argv)
    assert monitors == []


def test_cli_live_json_reports_where_the_packet_went(lab: str) -> None:
    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)
    result = CliRunner().invoke(
        app, ["trace", "--lab", lab, "--from", "shop/client", "--to", "10.96.12.44:80", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["delivered_to"] == {"pod": "shop/web-1", "endpoint": f"{WEB_1}:8080"}
    assert document["source_seen_by_server"].startswith("10.244.1.5:")
    assert document["agrees"] is True and document["verdict"] == "DNAT"
