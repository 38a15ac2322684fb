"""`kubeplane validate` and `kubeplane get`, run through typer's test runner."""

from __future__ import annotations

import json
from pathlib import Path

import typer
import yaml
from typer.testing import CliRunner

from kubeplane.cli.manifests import register

EXAMPLES = Path(__file__).parents[2] / "examples"


def run(*args: str) -> tuple[int, str, str]:
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_validate_accepts_the_shop_with_a_summary() -> None:
    code, out, _ = run("validate", "-f", str(EXAMPLES / "shop"))
    assert code == 0
    assert out.startswith("valid: 5 files: 5 Services, ")


def test_validate_prints_one_line_per_error_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n"
        "spec: {type: Bogus, ports: [{port: 70000}]}\n"
    )
    code, out, err = run("validate", "-f", str(tmp_path))
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"{tmp_path}/bad.yaml#0 Service shop/web: spec.type: "
        "must be one of ClusterIP, NodePort, LoadBalancer, ExternalName, got 'Bogus'",
        f"{tmp_path}/bad.yaml#0 Service shop/web: spec.ports[0].port: must be between 1 and 65535, got 70000",
    ]
    assert "Traceback" not in err


def test_validate_prints_warnings_and_still_passes(tmp_path: Path) -> None:
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\nspex: {}\n")
    code, _, err = run("validate", "-f", str(tmp_path))
    assert code == 0 and err.startswith("warning: ") and "spex: unknown field" in err


def test_get_services_prints_kubectl_columns() -> None:
    code, out, _ = run("get", "svc", "-n", "shop", "-f", str(EXAMPLES / "shop"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["frontend"][1:2] == ["NodePort"] and rows["frontend"][4] == "80:30080/TCP"
    assert rows["db"][2] == "None"
    assert rows["search"][2:5] == ["<none>", "example.org", "<none>"]
    assert rows["web"][3] == "192.0.2.10"


def test_get_wide_adds_selector_and_all_namespaces_adds_namespace() -> None:
    _, out, _ = run("get", "services", "-A", "-o", "wide", "-f", str(EXAMPLES / "shop"))
    header, *rows = out.splitlines()
    assert header.split() == ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "SELECTOR"]
    backend = next(r.split() for r in rows if r.split()[1] == "backend")
    assert backend[0] == "shop" and backend[-1] == "app=backend"


def test_get_endpointslices_includes_derived_slices() -> None:
    _, out, _ = run("get", "endpointslices", "-n", "shop", "-f", str(EXAMPLES / "shop"))
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS"]
    backend = next(r.split() for r in rows if r.startswith("backend-"))
    assert backend[1:3] == ["IPv4", "9376"] and backend[3].count(",") == 1


def test_get_pods_and_nodes() -> None:
    _, pods, _ = run("get", "pods", "-n", "shop", "-f", str(EXAMPLES / "shop"))
    assert pods.splitlines()[0].split() == ["NAME", "READY", "STATUS", "IP", "NODE"]
    assert any(line.split()[:3] == ["db-0", "1/1", "Running"] for line in pods.splitlines())
    _, nodes, _ = run("get", "nodes", "-f", str(EXAMPLES / "shop"))
    assert nodes.splitlines()[1].split() == ["node-a", "Ready", "198.51.100.2", "10.244.1.0/24", "zone-a"]


def test_get_in_an_empty_namespace_says_so() -> None:
    code, out, err = run("get", "pods", "-f", str(EXAMPLES / "shop"))
    assert code == 0 and out == "" and err.strip() == "No resources found in default namespace."


def test_get_yaml_and_json_print_a_kubernetes_list() -> None:
    _, out, _ = run("get", "svc", "-n", "shop", "-o", "yaml", "-f", str(EXAMPLES / "shop"))
    listing = yaml.safe_load(out)
    assert listing["kind"] == "List" and {i["metadata"]["name"] for i in listing["items"]} >= {"web", "db"}
    _, out, _ = run("get", "nodes", "-o", "json", "-f", str(EXAMPLES / "shop"))
    assert [i["metadata"]["name"] for i in json.loads(out)["items"]] == ["node-a", "node-b"]


def test_get_unknown_resource_is_a_usage_error() -> None:
    code, _, err = run("get", "deployments", "-f", str(EXAMPLES / "shop"))
    assert code == 2 and "unknown resource 'deployments'" in err
