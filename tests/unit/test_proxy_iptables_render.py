"""The iptables renderer against kube-proxy's own expectations and our golden files.

Golden files live in tests/unit/golden/iptables/; set KUBEPLANE_UPDATE_GOLDEN=1 to rewrite them after a
deliberate change (and read the diff: they are the specification).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from pathlib import Path

import pytest
from proxy_builders import make_cluster, make_endpoint, make_node, make_service, make_slice

from kubeplane.model.objects import Cluster, LoadBalancerIngress, ServicePort
from kubeplane.proxy.iptables.chains import endpoint_chain, external_chain, service_chain
from kubeplane.proxy.iptables.partial import changed_ports
from kubeplane.proxy.iptables.render import render_iptables
from kubeplane.proxy.iptables.service_rules import probability
from kubeplane.proxy.iptables.stream import FullRestoreStream
from kubeplane.proxy.plan import plan_node

GOLDEN = Path(__file__).parent / "golden" / "iptables"
BUILTIN = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}


def grouped(text: str) -> dict[str, tuple[frozenset[str], dict[str, list[str]]]]:
    """Per table: the declared non-builtin chains, and each chain's rules in order (kube-proxy's test
    helper compares this way, since its output order follows a Go map)."""
    tables: dict[str, tuple[frozenset[str], dict[str, list[str]]]] = {}
    table = ""
    chains: set[str] = set()
    rules: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table, chains, rules = line[1:], set(), {}
        elif line == "COMMIT":
            tables[table] = (frozenset(chains), rules)
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if name not in BUILTIN:
                chains.add(name)
        else:
            chain = line.split()[1]
            if chain not in BUILTIN:
                rules.setdefault(chain, []).append(line)
    return tables


def kube_proxy_overall_cluster() -> Cluster:
    """The services and slices of kube-proxy's TestOverallIPTablesRules, on its test node."""
    lb = "LoadBalancer"
    services = (
        make_service("svc1", "172.30.0.41", namespace="ns1"),
        make_service(
            "svc2",
            "172.30.0.42",
            namespace="ns2",
            node_port=3001,
            type=lb,
            external_traffic_policy="Local",
            load_balancer_ingress=(LoadBalancerIngress(ip="1.2.3.4"),),
            external_ips=("192.168.99.22",),
            health_check_node_port=30000,
        ),
        make_service("svc3", "172.30.0.43", namespace="ns3", node_port=3003, type="NodePort"),
        make_service(
            "svc4", "172.30.0.44", namespace="ns4", type="NodePort", external_ips=("192.168.99.33",)
        ),
        make_service(
            "svc5",
            "172.30.0.45",
            namespace="ns5",
            node_port=3002,
            type=lb,
            load_balancer_ingress=(LoadBalancerIngress(ip="5.6.7.8"),),
            health_check_node_port=30000,
            load_balancer_source_ranges=(" 203.0.113.0/25",),
            session_affinity="ClientIP",
        ),
        make_service("svc6", "172.30.0.46", namespace="ns6"),
    )
    slices = (
        make_slice("svc1", (make_endpoint("10.180.0.1", None),), namespace="ns1"),
        make_slice("svc2", (make_endpoint("10.180.0.2", None),), namespace="ns2"),
        make_slice("svc3", (make_endpoint("10.180.0.3", None),), namespace="ns3"),
        make_slice(
            "svc4",
            (make_endpoint("10.180.0.4", None), make_endpoint("10.180.0.5", "test-node")),
            namespace="ns4",
        ),
        make_slice("svc5", (make_endpoint("10.180.0.3", None),), namespace="ns5"),
    )
    nodes = (make_node("test-node", "192.168.0.2", "10.0.1.0/24"),)
    return make_cluster(services, slices, nodes, cluster_cidr="10.0.0.0/8")


def test_render_matches_kube_proxy_overall_rules_test() -> None:
    rendered = render_iptables(plan_node(kube_proxy_overall_cluster(), "test-node"))
    expected = (GOLDEN / "kube_proxy_overall.txt").read_text()
    assert grouped(rendered.text) == grouped(expected)


def test_chain_names_are_kube_proxy_hashes() -> None:
    # Values from kube-proxy's proxier tests, and recomputed from its algorithm.
    assert service_chain("ns1/svc1:p80", "TCP") == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert external_chain("ns2/svc2:p80", "tcp") == "KUBE-EXT-GNZBNJ2PO5MGZ6GT"
    assert endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    digest = hashlib.sha256(b"ns9/web:httpudp[fd00::5]:53").digest()
    assert (
        endpoint_chain("ns9/web:http", "UDP", "[fd00::5]:53")
        == "KUBE-SEP-" + base64.b32encode(digest).decode()[:16]
    )


def test_probability_has_ten_decimals() -> None:
    assert [probability(n) for n in (4, 3, 2)] == ["0.2500000000", "0.3333333333", "0.5000000000"]


def _lb_cluster(**service_fields: object) -> Cluster:
    svc = make_service(
        "web",
        "10.96.0.20",
        node_port=30080,
        type="LoadBalancer",
        load_balancer_ingress=(
            LoadBalancerIngress(ip="192.0.2.10"),
            LoadBalancerIngress(ip="192.0.2.11", ip_mode="Proxy"),
        ),
        **service_fields,
    )
    eps = (
        make_endpoint("10.244.1.5", "node-a"),
        make_endpoint("10.244.2.5", "node-b"),
        make_endpoint("10.244.2.6", "node-b", ready=False),
    )
    return make_cluster((svc,), (make_slice("web", eps),))


def _golden_cases() -> dict[str, tuple[Cluster, str]]:
    udp_port = ServicePort(port=53, protocol="UDP", name="dns", target_port=53)
    dual = make_service("dual", "10.96.0.30", ip_families=("IPv4", "IPv6"), extra_ports=(udp_port,))
    dual = type(dual)(**{**dual.__dict__, "cluster_ips": ("10.96.0.30", "fd00:96::30")})
    dual_slices = (
        make_slice("dual", (make_endpoint("10.244.1.7", "node-a"),)),
        make_slice(
            "dual",
            (make_endpoint("10.244.1.7", "node-a"),),
            port=53,
            port_name="dns",
            protocol="UDP",
            suffix="b",
        ),
        make_slice("dual", (make_endpoint("fd00:244:1::7", "node-a"),), address_type="IPv6", suffix="c"),
    )
    itp = make_service("itp", "10.96.0.40", internal_traffic_policy="Local")
    itp_slice = make_slice("itp", (make_endpoint("10.244.2.9", "node-b"),))
    term = make_service("term", "10.96.0.50")
    term_slice = make_slice(
        "term",
        (
            make_endpoint("10.244.1.8", "node-a", ready=False, serving=True, terminating=True),
            make_endpoint("10.244.2.8", "node-b", ready=False, serving=False, terminating=True),
        ),
    )
    return {
        "lb_local_with_local_endpoint": (
            _lb_cluster(
                external_traffic_policy="Local",
                health_check_node_port=32000,
                load_balancer_source_ranges=("203.0.113.0/25", "198.51.100.0/24"),
                session_affinity="ClientIP",
                session_affinity_timeout=60,
            ),
            "node-a",
        ),
        "lb_local_without_local_endpoint": (
            _lb_cluster(external_traffic_policy="Local", health_check_node_port=32000),
            "node-c",
        ),
        "nodeport_addresses_and_masquerade_all": (
            make_cluster(
                _lb_cluster().services,
                _lb_cluster().endpoint_slices,
                masquerade_all=True,
                node_port_addresses=("198.51.100.0/24", "127.0.0.0/8"),
            ),
            "node-a",
        ),
        "dual_stack_and_udp": (make_cluster((dual,), dual_slices), "node-a"),
        "internal_local_without_local_endpoint": (make_cluster((itp,), (itp_slice,)), "node-a"),
        "terminating_fallback": (make_cluster((term,), (term_slice,)), "node-a"),
    }


@pytest.mark.parametrize("case", sorted(_golden_cases()))
def test_render_matches_golden_file(case: str) -> None:
    cluster, node = _golden_cases()[case]
    if not any(n.meta.name == node for n in cluster.nodes):
        cluster = type(cluster)(
            **{
                **cluster.__dict__,
                "nodes": (*cluster.nodes, make_node(node, "198.51.100.4", "10.244.3.0/24")),
            }
        )
    plan = plan_node(cluster, node)
    text = render_iptables(plan, "IPv4").text
    if plan.ports_for("IPv6"):
        text += "# ip6tables\n" + render_iptables(plan, "IPv6").text
    path = GOLDEN / f"{case}.txt"
    if os.environ.get("KUBEPLANE_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_large_cluster_mode_drops_per_endpoint_comments() -> None:
    eps = tuple(make_endpoint(f"10.244.{i // 250}.{i % 250 + 1}", "node-b") for i in range(1001))
    cluster = make_cluster((make_service("big", "10.96.0.60"),), (make_slice("big", eps),))
    nat = render_iptables(plan_node(cluster, "node-a")).nat
    sep_rules = [line for line in nat.splitlines() if line.startswith("-A KUBE-SEP-")]
    assert len(sep_rules) == 2002
    assert not any("--comment" in line for line in sep_rules)
    assert '-m comment --comment "ns1/big:p80 cluster IP"' in nat


def test_partial_render_writes_only_changed_service_chains_and_deletes_stale_ones() -> None:
    before = make_cluster(
        (make_service("a", "10.96.0.70"), make_service("b", "10.96.0.71")),
        (
            make_slice("a", (make_endpoint("10.244.1.1", "node-a"),)),
            make_slice("b", (make_endpoint("10.244.1.2", "node-a"),)),
        ),
    )
    after = make_cluster(
        before.services,
        (before.endpoint_slices[0], make_slice("b", (make_endpoint("10.244.1.3", "node-a"),))),
    )
    old, new = plan_node(before, "node-a"), plan_node(after, "node-a")
    changed = changed_ports(old.service_ports, new.service_ports)
    stale = render_iptables(old).active_nat_chains - render_iptables(new).active_nat_chains
    partial = render_iptables(new, changed=changed, stale_chains=stale)
    old_sep_b = endpoint_chain("ns1/b:p80", "tcp", "10.244.1.2:80")
    new_sep_b = endpoint_chain("ns1/b:p80", "tcp", "10.244.1.3:80")
    restore = partial.restore_text("nat")
    assert changed == {("ns1/b:p80", "TCP", "IPv4")}
    assert stale == {old_sep_b}
    assert f":{service_chain('ns1/b:p80', 'tcp')} - [0:0]" in restore
    assert f":{new_sep_b} - [0:0]" in restore
    assert service_chain("ns1/a:p80", "tcp") not in restore.split("-A KUBE-SERVICES")[0]
    assert f"-A {service_chain('ns1/a:p80', 'tcp')}" not in restore
    assert re.search(rf"^-X {old_sep_b}$", restore, re.M)
    assert '-A KUBE-SERVICES -m comment --comment "ns1/a:p80 cluster IP"' in restore
    assert restore.index(f"-X {old_sep_b}") < restore.index("kubernetes service nodeports")


def test_streamed_full_restore_holds_the_same_rules_as_the_render() -> None:
    plan = plan_node(kube_proxy_overall_cluster(), "test-node")
    stale_chain = "KUBE-SEP-AAAAAAAAAAAAAAAA"
    stream = FullRestoreStream(plan, "IPv4")
    streamed = grouped("".join(stream.chunks(frozenset({stale_chain, "KUBE-SERVICES", "OTHER-CHAIN"}))))
    rendered = render_iptables(plan).with_stale_chains([stale_chain])
    expected = grouped(rendered.restore_text("filter") + rendered.restore_text("nat"))
    assert streamed == expected
    assert stream.stale_chains == (stale_chain,)
    assert stream.active_nat_chains == set(rendered.active_nat_chains)
