"""`kubeplane apply/delete` against a daemon found through its state file; clear errors when none runs."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kubeplane.cli.daemon import register, status_changed, status_line
from kubeplane.daemon.app import DaemonStatus
from kubeplane.daemon.client import (
    DaemonEndpoint,
    find_daemon,
    remove_state_file,
    running_state,
    write_state_file,
)
from kubeplane.daemon.control import DaemonApi
from kubeplane.daemon.desired import DesiredState
from kubeplane.daemon.health import HealthBoard
from kubeplane.daemon.http import HttpServer
from kubeplane.daemon.metrics import ProxyMetrics
from kubeplane.endpoints import with_derived_endpoint_slices
from kubeplane.model.complete import build_cluster
from kubeplane.model.objects import Cluster, KubeObject
from kubeplane.model.parse import parse_text
from kubeplane.model.serialize import to_manifest
from kubeplane.netns import names
from kubeplane.store import ClusterStore

SERVICE = """apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80}]
"""


@pytest.fixture
def state_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(names, "STATE_ROOT", tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def daemon(state_root: Path) -> Iterator[ClusterStore]:
    """A daemon's API on its own event-loop thread, published in the state file for lab `t`."""
    store = ClusterStore()

    def build(objects: Sequence[KubeObject]) -> Cluster:
        return with_derived_endpoint_slices(build_cluster(objects, previous=store.cluster))

    async def no_rules(node: str) -> str:
        return ""

    api = DaemonApi(
        DesiredState(store, build),
        HealthBoard(),
        ProxyMetrics(),
        lambda text, name: parse_text(text, name).objects,
        to_manifest,
        no_rules,
        lambda: (),
    )
    loop = asyncio.new_event_loop()
    server = HttpServer(api, "127.0.0.1", 0)
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    write_state_file(DaemonEndpoint("t", os.getpid(), "127.0.0.1", server.port))
    try:
        yield store
    finally:
        remove_state_file("t", os.getpid())
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


def test_apply_then_delete_through_the_cli(cli: typer.Typer, daemon: ClusterStore, tmp_path: Path) -> None:
    manifest = tmp_path / "web.yaml"
    manifest.write_text(SERVICE)
    result = CliRunner().invoke(cli, ["apply", "-f", str(manifest), "--name", "t"])
    assert result.exit_code == 0, result.output
    assert "Service shop/web added" in result.output
    assert [s.meta.key for s in daemon.cluster.services] == ["shop/web"]
    result = CliRunner().invoke(cli, ["delete", "-f", str(manifest), "--name", "t"])
    assert result.exit_code == 0, result.output
    assert daemon.cluster.services == ()


def test_invalid_apply_prints_the_daemons_error_and_exits_1(
    cli: typer.Typer, daemon: ClusterStore, tmp_path: Path
) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(SERVICE.replace("port: 80", "port: -1"))
    result = CliRunner().invoke(cli, ["apply", "-f", str(manifest), "--name", "t"])
    assert result.exit_code == 1
    assert f"{manifest}#0 Service shop/web: spec.ports[0].port" in result.output
    assert daemon.version == 0


def test_apply_without_a_daemon_says_so(cli: typer.Typer, state_root: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "web.yaml"
    manifest.write_text(SERVICE)
    result = CliRunner().invoke(cli, ["apply", "-f", str(manifest), "--name", "nobody"])
    assert result.exit_code == 1
    assert "no daemon for lab 'nobody'" in result.output
    assert "Traceback" not in result.output


def test_state_file_of_an_exited_daemon_is_not_a_daemon(state_root: Path) -> None:
    write_state_file(DaemonEndpoint("gone", 2**22 + 12345, "127.0.0.1", 1))
    with pytest.raises(RuntimeError, match="has exited"):
        find_daemon("gone")


def test_status_line_shows_counts_and_last_sync() -> None:
    status = DaemonStatus(nodes=2, pods=7, services=6, version=4, healthy=True, last_sync_at=99.5,
                          last_sync_seconds=0.0042)  # fmt: skip
    line = status_line(status, now=100.0)
    assert line.startswith("nodes 2  pods 7  services 6  version 4")
    assert "last sync 0.5s ago (4.2 ms)" in line


def test_a_log_gets_a_status_line_on_each_change_but_not_for_time_passing() -> None:
    before_sync = DaemonStatus(nodes=2, pods=7, services=6, version=4, healthy=True, last_sync_at=None,
                               last_sync_seconds=None)  # fmt: skip
    synced = replace(before_sync, last_sync_at=10.0, last_sync_seconds=0.004)
    assert status_changed(None, before_sync)
    assert status_changed(before_sync, synced)
    assert not status_changed(synced, replace(synced, last_sync_at=40.0, last_sync_seconds=0.009))
    assert status_changed(synced, replace(synced, version=5))
    assert status_changed(synced, replace(synced, healthy=False))
    assert status_changed(synced, replace(synced, pods=8))


def test_up_with_invalid_manifests_prints_errors_and_builds_nothing(
    cli: typer.Typer, state_root: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(SERVICE.replace("port: 80", "port: http"))
    result = CliRunner().invoke(cli, ["up", "-f", str(manifest), "--name", "t"])
    assert result.exit_code == 1
    assert f"{manifest}#0 Service shop/web: spec.ports[0].port" in result.output
    assert "Traceback" not in result.output
    assert not (state_root / "t").exists()


def test_running_state_reads_the_live_daemon_or_says_none(daemon: ClusterStore) -> None:
    assert running_state("nobody") is None
    state = running_state("t")
    assert state is not None and state["kind"] == "List"
    assert state["metadata"]["resourceVersion"] == str(daemon.version)
