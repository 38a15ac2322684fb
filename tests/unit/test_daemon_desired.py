"""Files and API writes share one cluster: last writer wins per object, and failures change nothing."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from kubeplane.daemon.desired import DesiredState, ManifestSink
from kubeplane.endpoints import with_derived_endpoint_slices
from kubeplane.model.complete import build_cluster
from kubeplane.model.errors import ManifestErrors
from kubeplane.model.objects import Cluster, KubeObject, Service
from kubeplane.model.parse import parse_text
from kubeplane.store import ClusterStore


def _service(name: str, port: int, cluster_ip: str = "") -> Service:
    ip_line = f"\n  clusterIP: {cluster_ip}" if cluster_ip else ""
    text = f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:{ip_line}
  selector: {{app: {name}}}
  ports: [{{port: {port}}}]
"""
    (service,) = parse_text(text, f"{name}.yaml").objects
    assert isinstance(service, Service)
    return service


def _desired() -> DesiredState:
    store = ClusterStore()

    def build(objects: Sequence[KubeObject]) -> Cluster:
        return with_derived_endpoint_slices(build_cluster(objects, previous=store.cluster))

    return DesiredState(store, build)


def _port(desired: DesiredState, name: str) -> int | None:
    found = [s for s in desired.store.cluster.services if s.meta.name == name]
    return found[0].ports[0].port if found else None


def test_applied_object_overrides_file_until_the_file_changes_it() -> None:
    desired = _desired()
    desired.set_files([_service("web", 80)])
    desired.apply([_service("web", 8080)])
    assert _port(desired, "web") == 8080
    desired.set_files([_service("web", 80), _service("other", 90)])  # web untouched in the file
    assert _port(desired, "web") == 8080
    desired.set_files([_service("web", 81), _service("other", 90)])  # web edited in the file: file wins
    assert _port(desired, "web") == 81


def test_deleted_file_object_stays_deleted_until_the_file_changes_it() -> None:
    desired = _desired()
    desired.set_files([_service("web", 80)])
    desired.delete([_service("web", 80)])
    assert _port(desired, "web") is None
    desired.set_files([_service("web", 80)])
    assert _port(desired, "web") is None
    desired.set_files([_service("web", 82)])
    assert _port(desired, "web") == 82


def test_failed_build_keeps_previous_objects_and_store() -> None:
    desired = _desired()
    desired.set_files([_service("a", 80, "10.96.5.5")])
    version = desired.store.version
    with pytest.raises(ManifestErrors):
        desired.apply([_service("b", 80, "10.96.5.5")])
    assert desired.store.version == version
    desired.apply([_service("c", 80)])
    assert {s.meta.name for s in desired.store.cluster.services} == {"a", "c"}


def test_sink_keeps_serving_when_files_conflict_with_applied_objects() -> None:
    desired = _desired()
    sink = ManifestSink(desired)
    sink.replace(build_cluster([_service("a", 80)]))
    desired.apply([_service("b", 80, "10.96.5.5")])
    version = desired.store.version
    change = sink.replace(build_cluster([_service("a", 80), _service("c", 80, "10.96.5.5")]))
    assert not change and desired.store.version == version
    assert "10.96.5.5" in str(sink.errors[0])
