"""A lab from manifest files: the loader's allocations become namespaces, addresses and workloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kubeplane.cli.lab import register
from kubeplane.model.errors import ManifestErrors
from kubeplane.netns.lab import Lab
from kubeplane.testing import unique_lab_name

pytestmark = pytest.mark.root

MANIFEST = """
apiVersion: v1
kind: Node
metadata: {name: a}
---
apiVersion: v1
kind: Node
metadata: {name: b}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec:
  nodeName: a
  containers: [{name: c, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop}
spec:
  nodeName: b
  containers: [{name: web, ports: [{containerPort: 8080}, {containerPort: 5353, protocol: UDP}]}]
"""


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    (tmp_path / "cluster.yaml").write_text(MANIFEST)
    return tmp_path


def test_lab_from_a_manifest_directory_serves_pods_at_their_allocated_ips(
    lab_factory, manifests: Path
) -> None:
    lab: Lab = lab_factory(manifests)
    web_ip = lab.pod_ip("shop", "web-1")
    assert web_ip.startswith("10.244.")
    reply = lab.http_get("shop/client", f"http://{web_ip}:8080/")
    assert (reply["pod"], reply["node"]) == ("web-1", "b")
    assert reply["client"].split(":")[0] == lab.pod_ip("shop", "client")
    assert lab.udp_echo("shop/client", web_ip, 5353)["pod"] == "web-1"


@pytest.mark.lab("manifests-not-here")
def test_lab_marker_with_a_missing_path_fails_in_setup(request: pytest.FixtureRequest) -> None:
    with pytest.raises(ManifestErrors, match="manifests-not-here: no such file"):
        request.getfixturevalue("lab")


def test_cli_lab_up_builds_from_files_and_down_removes_it(manifests: Path) -> None:
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    name = unique_lab_name()
    try:
        result = runner.invoke(app, ["lab", "up", "-f", str(manifests), "--name", name])
        assert result.exit_code == 0, result.output
        assert "2/2 pods serving" in result.output
        assert (
            Lab(name).http_get("shop/client", f"http://{Lab(name).pod_ip('shop', 'web-1')}:8080/")["pod"]
            == "web-1"
        )
    finally:
        down = runner.invoke(app, ["lab", "down", "--name", name])
    assert down.exit_code == 0, down.output
    assert not Lab(name).is_up()


def test_cli_lab_up_reports_a_bad_manifest_in_one_line_and_builds_nothing(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: 3}\n"
    )
    app = typer.Typer()
    register(app)
    name = unique_lab_name()
    result = CliRunner().invoke(app, ["lab", "up", "-f", str(tmp_path), "--name", name])
    assert result.exit_code == 1
    assert result.output.startswith("error: ")
    assert "bad.yaml" in result.output
    assert not Lab(name).is_up()
