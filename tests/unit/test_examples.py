"""Every example directory loads cleanly, and the examples show what their READMEs promise."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeplane.loader import load_cluster
from kubeplane.model.objects import Cluster, Service

EXAMPLES = Path(__file__).parents[2] / "examples"
EXAMPLE_DIRS = sorted(p for p in EXAMPLES.iterdir() if p.is_dir())


def _service(cluster: Cluster, name: str) -> Service:
    return next(s for s in cluster.services if s.meta.name == name)


@pytest.mark.parametrize("example", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_example_loads_without_errors_or_warnings_and_is_in_the_readme(example: Path) -> None:
    loaded = load_cluster([example])
    assert loaded.warnings == ()
    assert loaded.cluster.services and loaded.cluster.pods
    assert f"`{example.name}/`" in (EXAMPLES / "README.md").read_text()


def test_hello_is_one_node_one_pod_one_cluster_ip_service() -> None:
    cluster = load_cluster([EXAMPLES / "hello"]).cluster
    (node,), (pod,), (service,) = cluster.nodes, cluster.pods, cluster.services
    assert (node.meta.name, node.internal_ips, node.pod_cidrs) == (
        "node-1",
        ("198.51.100.2",),
        ("10.244.1.0/24",),
    )
    assert pod.node_name == "node-1" and (pod.pod_ip or "").startswith("10.244.1.")
    assert service.type == "ClusterIP" and (service.cluster_ip or "").startswith("10.")
    (endpoint_slice,) = cluster.endpoint_slices
    assert endpoint_slice.endpoints[0].addresses == (pod.pod_ip,)


def test_shop_has_every_service_kind_on_two_zoned_nodes() -> None:
    cluster = load_cluster([EXAMPLES / "shop"]).cluster
    assert [(n.meta.name, n.zone, n.internal_ips, n.pod_cidrs) for n in cluster.nodes] == [
        ("node-a", "zone-a", ("198.51.100.2",), ("10.244.1.0/24",)),
        ("node-b", "zone-b", ("198.51.100.3",), ("10.244.2.0/24",)),
    ]
    assert len(cluster.pods) < 15
    assert _service(cluster, "frontend").type == "NodePort"
    assert _service(cluster, "frontend").ports[0].node_port == 30080
    assert _service(cluster, "backend").ports[0].target_port == "http"
    assert _service(cluster, "db").headless
    assert _service(cluster, "search").external_name == "example.org"
    web = _service(cluster, "web")
    assert web.type == "LoadBalancer" and web.load_balancer_ingress[0].ip == "192.0.2.10"
    assert web.load_balancer_source_ranges == ("203.0.113.0/25",)
    assert cluster.proxy_config.cluster_cidr == "10.244.0.0/16"
    assert cluster.kubeplane_config.dns_service_ip == "10.96.0.10"


def test_shop_slices_resolve_named_ports_and_statefulset_hostnames() -> None:
    cluster = load_cluster([EXAMPLES / "shop"]).cluster
    slices = {s.service_name: s for s in cluster.endpoint_slices}
    assert {p.port for p in slices["backend"].ports} == {9376}
    assert sorted(e.hostname or "" for e in slices["db"].endpoints) == ["db-0", "db-1"]
    assert "search" not in slices
    zones = {e.zone for e in slices["frontend"].endpoints}
    assert zones == {"zone-a", "zone-b"}
