"""`kubeplane rules`: manifests in, iptables-save text out, no root."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kubeplane.cli import rules

pytest.importorskip("kubeplane.loader", reason="the manifest loader (model helper) is not in the tree yet")

MANIFESTS = """\
apiVersion: v1
kind: Node
metadata: {name: node-a}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.50
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints: [{addresses: [10.244.1.7], nodeName: node-a}]
ports: [{name: http, port: 8080, protocol: TCP}]
"""


def _app() -> typer.Typer:
    app = typer.Typer()
    rules.register(app)
    app.command("noop", hidden=True)(lambda: None)  # a second command keeps `rules` a named subcommand
    return app


def test_rules_prints_iptables_save_text_for_the_node(tmp_path: Path) -> None:
    manifest = tmp_path / "shop.yaml"
    manifest.write_text(MANIFESTS)
    result = CliRunner().invoke(_app(), ["rules", "-f", str(manifest), "--node", "node-a"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("*filter\n")
    cluster_ip_rule = (
        '-A KUBE-SERVICES -m comment --comment "shop/web:http cluster IP" '
        "-m tcp -p tcp -d 10.96.0.50 --dport 80 -j KUBE-SVC-"
    )
    assert cluster_ip_rule in result.output
    assert "-j DNAT --to-destination 10.244.1.7:8080" in result.output


def test_rules_for_an_unknown_node_is_a_one_line_error(tmp_path: Path) -> None:
    manifest = tmp_path / "shop.yaml"
    manifest.write_text(MANIFESTS)
    result = CliRunner().invoke(_app(), ["rules", "-f", str(manifest), "--node", "nope"])
    assert result.exit_code == 1
    assert "node 'nope' is not in the cluster" in result.output
    assert "Traceback" not in result.output


def test_rules_honours_a_kube_proxy_configuration_file(tmp_path: Path) -> None:
    manifest = tmp_path / "shop.yaml"
    manifest.write_text(MANIFESTS)
    config = tmp_path / "kube-proxy.yaml"
    config.write_text(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
        "clusterCIDR: 10.244.0.0/16\niptables: {masqueradeBit: 13}\n"
    )
    args = ["rules", "-f", str(manifest), "--node", "node-a", "--config", str(config)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "--dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ" in result.output
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x2000" in result.output


def test_rules_in_ipvs_mode_prints_the_virtual_servers(tmp_path: Path) -> None:
    manifest = tmp_path / "shop.yaml"
    manifest.write_text(MANIFESTS)
    result = CliRunner().invoke(_app(), ["rules", "-f", str(manifest), "--node", "node-a", "--mode", "ipvs"])
    assert result.exit_code == 0, result.output
    assert "10.96.0.50:80" in result.output
    assert "10.244.1.7:8080" in result.output
