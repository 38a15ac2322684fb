"""to_manifest: completed objects back to Kubernetes-shaped dicts that parse to equal objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeplane.loader import load_cluster
from kubeplane.model.objects import KubeObject
from kubeplane.model.parse import parse_object
from kubeplane.model.serialize import to_list_manifest, to_manifest

EXAMPLES = Path(__file__).parents[2] / "examples"


def _all_objects() -> list[KubeObject]:
    cluster = load_cluster([EXAMPLES / "shop"]).cluster
    return [
        *cluster.services,
        *cluster.endpoint_slices,
        *cluster.pods,
        *cluster.nodes,
        *cluster.namespaces,
        *cluster.service_cidrs,
        cluster.proxy_config,
        cluster.kubeplane_config,
    ]


@pytest.mark.parametrize("obj", _all_objects(), ids=lambda o: f"{type(o).__name__}:{o.meta.key}")
def test_manifest_parses_back_to_an_equal_object(obj: KubeObject) -> None:
    assert parse_object(to_manifest(obj)) == obj


def test_service_manifest_shows_allocations_like_the_api_server() -> None:
    cluster = load_cluster([EXAMPLES / "shop"]).cluster
    web = next(s for s in cluster.services if s.meta.name == "web")
    manifest = to_manifest(web)
    assert manifest["apiVersion"] == "v1" and manifest["kind"] == "Service"
    assert manifest["metadata"] == {"name": "web", "namespace": "shop"}
    assert manifest["spec"]["clusterIP"] == web.cluster_ip
    assert manifest["spec"]["ports"][0]["nodePort"] == web.ports[0].node_port
    assert manifest["spec"]["healthCheckNodePort"] == web.health_check_node_port
    assert manifest["status"] == {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}


def test_list_manifest_wraps_items() -> None:
    objects = _all_objects()[:2]
    assert to_list_manifest(objects) == {
        "apiVersion": "v1",
        "kind": "List",
        "items": [to_manifest(o) for o in objects],
    }
