"""`kubeplane dns query` answers from the zone without a socket; bad input is one line, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kubeplane.cli.dns import ListenAddressError, parse_listen, register

MANIFESTS = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, port: 80}]
"""


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    path = tmp_path / "shop.yaml"
    path.write_text(MANIFESTS)
    return path


def run(*args: str) -> tuple[int, str]:
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_query_prints_the_answer_like_dig(manifests: Path) -> None:
    code, output = run("dns", "query", "-f", str(manifests), "Web.shop.svc.cluster.local")
    assert code == 0
    assert "status: NOERROR" in output
    assert "Web.shop.svc.cluster.local. 5       IN      A       10.96.0.20" in output


def test_query_srv_lists_target_and_additional_address(manifests: Path) -> None:
    code, output = run("dns", "query", "-f", str(manifests), "_http._tcp.web.shop.svc.cluster.local", "srv")
    assert code == 0
    assert "SRV     0 100 80 web.shop.svc.cluster.local." in output
    assert ";; ADDITIONAL SECTION:\nweb.shop.svc.cluster.local. 5       IN      A       10.96.0.20" in output


def test_query_for_missing_name_is_nxdomain_with_soa(manifests: Path) -> None:
    code, output = run("dns", "query", "-f", str(manifests), "nope.shop.svc.cluster.local")
    assert code == 0
    assert "status: NXDOMAIN" in output
    assert "IN      SOA     ns.dns.cluster.local. hostmaster.cluster.local." in output


def test_query_outside_the_domain_says_it_would_be_forwarded(manifests: Path) -> None:
    code, output = run("dns", "query", "-f", str(manifests), "example.com")
    assert code == 0
    assert "outside the cluster domain" in output and "status: REFUSED" in output


def test_unknown_record_type_is_a_usage_error(manifests: Path) -> None:
    code, output = run("dns", "query", "-f", str(manifests), "web.shop.svc.cluster.local", "BOGUS")
    assert code == 2
    assert "unknown record type 'BOGUS'" in output


def test_broken_manifest_is_one_line_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: 3}\n"
    )
    code, output = run("dns", "query", "-f", str(broken), "web.shop.svc.cluster.local")
    assert code == 1
    assert output.startswith(f"error: {broken}#0 Service shop/web: spec.ports")
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("text", "expected"), [("127.0.0.1:5353", ("127.0.0.1", 5353)), ("[::1]:53", ("::1", 53))]
)
def test_listen_addresses_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", ":53", "127.0.0.1:99999", "[::1]"])
def test_bad_listen_addresses_are_rejected(text: str) -> None:
    with pytest.raises(ListenAddressError):
        parse_listen(text)


def test_serve_with_bad_listen_address_is_a_usage_error(manifests: Path) -> None:
    code, output = run("dns", "serve", "-f", str(manifests), "--listen", "nonsense")
    assert code == 2
    assert "listen address 'nonsense'" in output


@pytest.mark.parametrize("with_kubeconfig", [True, False])
def test_serve_needs_exactly_one_of_manifests_and_kubeconfig(manifests: Path, with_kubeconfig: bool) -> None:
    args = ["--kubeconfig", str(manifests)] if with_kubeconfig else []
    code, output = run("dns", "serve", *(["-f", str(manifests)] if with_kubeconfig else []), *args)
    assert code == 2
    assert "exactly one of -f PATH and --kubeconfig FILE" in output


def test_serve_with_unusable_kubeconfig_is_one_line_naming_the_file(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    code, output = run("dns", "serve", "--kubeconfig", str(kubeconfig))
    assert code == 1
    assert output.count("\n") == 1 and str(kubeconfig) in output
