"""The lab commands against a real lab: exec (exit codes, pod files), curl, list, down."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from kubeplane.cli.lab import register
from kubeplane.netns.demo_cluster import demo_cluster
from kubeplane.netns.lab import Lab

pytestmark = pytest.mark.root


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_exec_runs_in_the_pod_and_returns_its_exit_code(lab_factory, cli: typer.Typer) -> None:
    lab: Lab = lab_factory(demo_cluster(nodes=1, pods_per_node=1))
    runner = CliRunner()
    probe = f"ip -o -4 addr show dev eth0 | grep -q ' {lab.pod_ip('default', 'echo-1-0')}/32' && exit 7"
    result = runner.invoke(cli, ["exec", "--lab", lab.name, "echo-1-0", "--", "sh", "-c", probe])
    assert result.exit_code == 7, result.output
    result = runner.invoke(cli, ["exec", "--lab", lab.name, "node/node-1", "sh", "-c", "exit 4"])
    assert result.exit_code == 4, result.output


def test_curl_prints_the_echo_of_the_pod_it_reached(lab_factory, cli: typer.Typer) -> None:
    lab: Lab = lab_factory(demo_cluster(nodes=2, pods_per_node=1))
    result = CliRunner().invoke(
        cli, ["curl", "--lab", lab.name, "-n", "default", "echo-1-0", "http://10.244.2.2:8080/via-cli"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert (body["pod"], body["path"], body["client"].split(":")[0]) == ("echo-2-0", "/via-cli", "10.244.1.2")


def test_curl_to_a_closed_port_fails_with_one_line(lab_factory, cli: typer.Typer) -> None:
    lab: Lab = lab_factory(demo_cluster(nodes=1, pods_per_node=1))
    result = CliRunner().invoke(cli, ["curl", "--lab", lab.name, "echo-1-0", "http://10.244.1.2:9/"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: GET http://10.244.1.2:9/ from echo-1-0:")
    assert len(result.output.strip().splitlines()) == 1


def test_list_shows_the_lab_and_down_removes_it(lab_factory, cli: typer.Typer) -> None:
    lab: Lab = lab_factory(demo_cluster(nodes=2, pods_per_node=2))
    runner = CliRunner()
    listed = runner.invoke(cli, ["lab", "list"])
    row = next(line.split() for line in listed.output.splitlines() if line.startswith(lab.name))
    assert row[1:4] == ["2", "4", "4"]
    result = runner.invoke(cli, ["lab", "down", "--name", lab.name])
    assert result.exit_code == 0, result.output
    assert "8 namespaces" in result.output
    assert lab.name not in runner.invoke(cli, ["lab", "list"]).output
