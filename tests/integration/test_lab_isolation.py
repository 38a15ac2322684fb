"""The lab is sealed: nothing in the root namespace, no way out of the underlay, labs are apart."""

from __future__ import annotations

import json
import subprocess

import pytest

from kubeplane.netns import names
from kubeplane.netns.demo_cluster import demo_cluster
from kubeplane.netns.lab import Lab

pytestmark = pytest.mark.root


def _ip_json(netns: str | None, *args: str) -> list[dict]:
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    done = subprocess.run([*prefix, "-j", *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def test_lab_leaves_the_root_namespace_links_and_routes_unchanged(lab_factory) -> None:
    links_before = {link["ifname"] for link in _ip_json(None, "link")}
    routes_before = _ip_json(None, "route")
    lab_factory(demo_cluster(nodes=2, pods_per_node=2))
    assert {link["ifname"] for link in _ip_json(None, "link")} == links_before
    assert _ip_json(None, "route") == routes_before


def _host_address() -> str | None:
    routes = _ip_json(None, "route", "get", "192.0.2.1")
    return routes[0].get("prefsrc") if routes else None


def test_underlay_has_no_default_route_and_the_host_is_unreachable_from_the_lab(lab_factory) -> None:
    lab: Lab = lab_factory(demo_cluster(nodes=2, pods_per_node=1))
    assert not [r for r in _ip_json(lab.underlay_netns, "route") if r["dst"] == "default"]
    host = _host_address()
    if host is None:
        pytest.skip("the host has no default route to take an address from")
    for target in ("default/echo-1-0", "node/node-1", "external"):
        with pytest.raises(OSError):
            lab.tcp_connect(target, host, 22, timeout=0.5)


def test_two_labs_side_by_side_use_the_same_addresses_without_interference(lab_factory) -> None:
    first: Lab = lab_factory(demo_cluster(nodes=2, pods_per_node=1, prefix="first"))
    second: Lab = lab_factory(demo_cluster(nodes=2, pods_per_node=1, prefix="second"))
    assert first.http_get("default/first-1-0", "http://10.244.2.2:8080/")["pod"] == "first-2-0"
    assert second.http_get("default/second-1-0", "http://10.244.2.2:8080/")["pod"] == "second-2-0"
    second.down()
    assert first.http_get("default/first-1-0", "http://10.244.2.2:8080/")["pod"] == "first-2-0"
    assert not [n for n in first.plan.all_netnses if not (names.NETNS_DIR / n).exists()]


def test_netns_factory_gives_a_fresh_namespace_with_only_loopback_up(netns_factory) -> None:
    netns = netns_factory("probe")
    links = {link["ifname"]: link for link in _ip_json(netns, "link")}
    assert list(links) == ["lo"]
    assert "UP" in links["lo"]["flags"]
    assert netns.startswith("kp-t") and netns.endswith("-probe")
