"""The manifest source loads and watches real files, keeping the last good state through bad edits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from kubeplane.model.objects import Cluster
from kubeplane.sources.manifests import ManifestSource
from kubeplane.store import ChangeSet, ClusterStore

WAIT_SECONDS = 3.0

WEB_SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: %(target)s}]
"""

WEB_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: %(name)s, namespace: default, labels: {app: web}}
spec:
  containers: [{name: app, ports: [{name: http, containerPort: 8080}]}]
"""

DB_SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  selector: {app: db}
  ports: [{port: 5432}]
"""


def web_service(target: int | str = 8080) -> str:
    return WEB_SERVICE % {"target": target}


def web_pod(name: str = "web-1") -> str:
    return WEB_POD % {"name": name}


def service_ports(cluster: Cluster, key: str) -> tuple[int, ...]:
    (service,) = [s for s in cluster.services if s.meta.key == key]
    return tuple(p.port for p in service.ports)


def endpoint_addresses(cluster: Cluster, service_name: str) -> set[str]:
    return {
        address
        for endpoint_slice in cluster.endpoint_slices
        if endpoint_slice.service_name == service_name
        for endpoint in endpoint_slice.endpoints
        for address in endpoint.addresses
    }


@dataclass
class Watched:
    """A watching source over a tmp tree, with the store's change sets as they arrive."""

    root: Path
    store: ClusterStore
    source: ManifestSource
    changes: asyncio.Queue[ChangeSet]

    def write(self, name: str, text: str) -> None:
        # Write then rename, as editors do, so the poller never sees half a file.
        target = self.root / name
        scratch = self.root / f".{name}.tmp"
        scratch.write_text(text)
        scratch.rename(target)

    async def next_change(self) -> ChangeSet:
        return await asyncio.wait_for(self.changes.get(), timeout=WAIT_SECONDS)

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait (bounded) for a condition that no change set announces, such as an error being reported."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_SECONDS
        while not condition():
            assert loop.time() < deadline, "condition not reached in time"
            await asyncio.sleep(0.01)


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[Watched]:
    (tmp_path / "web.yaml").write_text(web_service() + "---\n" + web_pod())
    (tmp_path / "db.yaml").write_text(DB_SERVICE)
    store = ClusterStore()
    source = ManifestSource([tmp_path], store, poll_interval=0.02, quiet_period=0.05)
    source.load()
    changes = store.subscribe()
    changes.get_nowait()  # the primed current state
    task = asyncio.create_task(source.watch())
    try:
        yield Watched(tmp_path, store, source, changes)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_load_once_reads_every_file_and_derives_endpoint_slices(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(web_service() + "---\n" + web_pod())
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "db.yml").write_text(DB_SERVICE)
    store = ClusterStore()
    change_set = ManifestSource([tmp_path], store).load()

    assert change_set.keys("Service", "added") == {"default/web", "default/db"}
    assert store.version == 1
    (pod,) = store.cluster.pods
    assert endpoint_addresses(store.cluster, "web") == set(pod.pod_ips)


def test_loading_unchanged_files_again_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(web_service() + "---\n" + web_pod())
    store = ClusterStore()
    source = ManifestSource([tmp_path], store)
    source.load()
    assert not source.load()
    assert store.version == 1


def test_first_load_with_a_bad_file_serves_the_good_ones_and_reports_the_bad(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(web_service(target=70000))
    (tmp_path / "db.yaml").write_text(DB_SERVICE)
    store = ClusterStore()
    source = ManifestSource([tmp_path], store)
    source.load()
    assert {s.meta.key for s in store.cluster.services} == {"default/db"}
    (error,) = source.errors
    assert "web.yaml" in str(error)
    assert "targetPort" in str(error)


def test_missing_path_is_reported(tmp_path: Path) -> None:
    source = ManifestSource([tmp_path / "absent.yaml"], ClusterStore())
    source.load()
    assert source.errors
    assert "absent.yaml" in str(source.errors[0])


def test_transform_runs_before_the_endpoints_controller(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(web_service() + "---\n" + web_pod())

    def nothing_ready(cluster: Cluster) -> Cluster:
        return replace(cluster, pods=tuple(replace(pod, ready=False) for pod in cluster.pods))

    store = ClusterStore()
    ManifestSource([tmp_path], store, transform=nothing_ready).load()
    (web_slice,) = [s for s in store.cluster.endpoint_slices if s.service_name == "web"]
    assert [e.conditions.ready for e in web_slice.endpoints] == [False]


def test_refresh_reapplies_a_transform_whose_outside_state_changed(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(web_service() + "---\n" + web_pod())
    ready_pods: set[str] = set()

    def readiness(cluster: Cluster) -> Cluster:
        return replace(cluster, pods=tuple(replace(p, ready=p.meta.name in ready_pods) for p in cluster.pods))

    store = ClusterStore()
    source = ManifestSource([tmp_path], store, transform=readiness)
    source.load()
    ready_pods.add("web-1")
    change_set = source.refresh()
    assert change_set.keys("Pod", "updated") == {"default/web-1"}
    assert change_set.affected_service_keys == {"default/web"}


async def test_editing_a_file_publishes_a_new_snapshot(watched: Watched) -> None:
    watched.write("db.yaml", DB_SERVICE.replace("5432", "5433"))
    change_set = await watched.next_change()
    assert change_set.keys("Service", "updated") == {"default/db"}
    assert service_ports(watched.store.cluster, "default/db") == (5433,)


async def test_adding_a_file_adds_its_objects(watched: Watched) -> None:
    watched.write("more.yaml", web_pod("web-2"))
    change_set = await watched.next_change()
    assert change_set.keys("Pod", "added") == {"default/web-2"}
    assert len(endpoint_addresses(watched.store.cluster, "web")) == 2


async def test_broken_file_keeps_its_last_good_objects_and_fixing_it_recovers(watched: Watched) -> None:
    before = watched.store.cluster
    watched.write("db.yaml", DB_SERVICE.replace("5432", "70000"))
    await watched.until(lambda: bool(watched.source.errors))
    (error,) = watched.source.errors
    assert "db.yaml" in str(error)
    assert watched.store.cluster is before
    assert watched.changes.empty()

    watched.write("db.yaml", DB_SERVICE.replace("5432", "6432"))
    change_set = await watched.next_change()
    assert change_set.keys("Service", "updated") == {"default/db"}
    assert service_ports(watched.store.cluster, "default/db") == (6432,)
    assert watched.source.errors == ()


async def test_broken_yaml_does_not_stop_other_files_from_updating(watched: Watched) -> None:
    watched.write("db.yaml", "kind: Service\nmetadata: [unclosed\n")
    await watched.until(lambda: bool(watched.source.errors))
    watched.write("web.yaml", web_service(target=9090) + "---\n" + web_pod())
    change_set = await watched.next_change()
    assert change_set.keys("Service") == {"default/web"}
    assert "default/db" in {s.meta.key for s in watched.store.cluster.services}
    assert any("db.yaml" in str(error) for error in watched.source.errors)


async def test_cross_file_conflict_keeps_the_previous_cluster_until_resolved(watched: Watched) -> None:
    before = watched.store.cluster
    watched.write("copy.yaml", DB_SERVICE)
    await watched.until(lambda: bool(watched.source.errors))
    assert watched.store.cluster is before
    assert any("db" in str(error) for error in watched.source.errors)

    (watched.root / "copy.yaml").unlink()
    await watched.until(lambda: not watched.source.errors)
    assert watched.store.cluster is before


async def test_deleting_a_file_removes_its_objects(watched: Watched) -> None:
    (watched.root / "db.yaml").unlink()
    change_set = await watched.next_change()
    assert change_set.keys("Service", "deleted") == {"default/db"}
    assert "default/db" in change_set.affected_service_keys
    assert {s.meta.key for s in watched.store.cluster.services} == {"default/web"}
