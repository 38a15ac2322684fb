"""`kubeplane trace` explain mode through typer: arguments, JSON and text output, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kubeplane.cli.trace import register
from kubeplane.loader import load_cluster
from kubeplane.model.objects import Cluster

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"


@pytest.fixture(scope="module")
def shop() -> Cluster:
    return load_cluster([SHOP]).cluster


def run(*args: str) -> tuple[int, str]:
    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)
    result = CliRunner().invoke(app, ["trace", *args])
    return result.exit_code, result.output


def cluster_ip(cluster: Cluster, name: str) -> str:
    found = next(s for s in cluster.services if s.meta.name == name)
    assert found.cluster_ip is not None
    return found.cluster_ip


def pod_ip(cluster: Cluster, name: str) -> str:
    found = next(p for p in cluster.pods if p.meta.name == name)
    assert found.pod_ip is not None
    return found.pod_ip


def test_json_output_follows_the_contract(shop: Cluster) -> None:
    src, dst = pod_ip(shop, "frontend-1"), cluster_ip(shop, "backend")
    code, output = run("-f", str(SHOP), "--node", "node-a", "--src", src, "--dst", f"{dst}:80", "-o", "json")
    assert code == 0
    document = json.loads(output)
    assert document["source"] == {"ip": src, "kind": "pod"}
    assert document["verdict"] == "DNAT"
    backends = sorted(f"{pod_ip(shop, n)}:9376" for n in ("backend-1", "backend-2"))
    assert sorted(e["endpoint"] for e in document["endpoints"]) == backends


def test_text_output_at_minimal_level_has_the_verdict(shop: Cluster) -> None:
    dst = cluster_ip(shop, "backend")
    code, output = run(
        "-f",
        str(SHOP),
        "--node",
        "node-a",
        "--src",
        "203.0.113.9",
        "--dst",
        f"{dst}:80",
        "--level",
        "minimal",
    )
    assert code == 0
    assert "# source: external client 203.0.113.9 [external]" in output
    assert "result: DNAT" in output


def test_established_option_reaches_the_walk(shop: Cluster) -> None:
    dst = cluster_ip(shop, "backend")
    src = pod_ip(shop, "frontend-1")
    code, output = run(
        "-f", str(SHOP), "--node", "node-a", "--src", src, "--dst", f"{dst}:80", "--ct", "established"
    )
    assert code == 0
    assert "conntrack ESTABLISHED" in output and "stored for this ESTABLISHED connection" in output


def test_ipvs_mode_walks_the_ipvs_backend(shop: Cluster) -> None:
    src, dst = pod_ip(shop, "frontend-1"), cluster_ip(shop, "backend")
    args = ("-f", str(SHOP), "--node", "node-a", "--src", src, "--dst", f"{dst}:80")
    code, output = run(*args, "--mode", "ipvs", "-o", "json")
    assert code == 0
    document = json.loads(output)
    assert document["mode"] == "ipvs" and document["verdict"] == "DNAT"
    assert any(p["table"] == "ipvs" and p["chain"] == f"TCP {dst}:80" for p in document["path"])


def test_missing_arguments_are_named() -> None:
    code, output = run("-f", str(SHOP), "--node", "node-a")
    assert code == 2
    assert "explain needs --src, --dst" in output


def test_unknown_node_is_a_one_line_error() -> None:
    code, output = run("-f", str(SHOP), "--node", "node-z", "--src", "10.0.0.1", "--dst", "10.0.0.2:80")
    assert code == 1
    assert output.strip().splitlines() == [
        "error: node 'node-z' is not in the cluster (nodes: node-a, node-b)"
    ]


def test_destination_without_port_is_refused() -> None:
    code, output = run("-f", str(SHOP), "--node", "node-a", "--src", "10.0.0.1", "--dst", "10.0.0.2")
    assert code == 1
    assert "a port is required" in output


def test_live_trace_without_from_and_to_is_refused() -> None:
    code, output = run("--lab", "demo")
    assert code == 2
    assert "a live trace needs --from and --to" in output
