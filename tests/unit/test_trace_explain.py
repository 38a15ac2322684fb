"""Explain against a ruleset in kube-proxy's real layout: the JSON contract, the verdicts, the text levels.

The ruleset (trace_data/kube_proxy_layout.rules) follows kube-proxy's own expected iptables-restore output:
svc4 is a ClusterIP+NodePort service with two endpoints, svc5 a LoadBalancer with source ranges, svc6 has no
endpoints (filter REJECT), svc2 is a NodePort with externalTrafficPolicy=Local and no local endpoint (filter
DROP in KUBE-EXTERNAL-SERVICES), and the cluster CIDR is 10.0.0.0/8.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubeplane.trace.explain import ExplainOptions, explain_packet
from kubeplane.trace.packet import NodeContext, Packet, SourceInfo
from kubeplane.trace.render_text import render_text
from kubeplane.trace.result import Explanation
from kubeplane.trace.ruleset import parse_ruleset

NODE_IP = "198.51.100.2"
CONTEXT = NodeContext("node-a", (NODE_IP,), ("10.180.0.0/24",), masquerade_address=NODE_IP)
RULES = parse_ruleset((Path(__file__).parent / "trace_data" / "kube_proxy_layout.rules").read_text())


def explain(src: str, dst: str, dport: int, kind: str = "pod", **options: object) -> Explanation:
    source = SourceInfo(src, kind, f"{kind} {src}", on_this_node=src == NODE_IP)  # type: ignore[arg-type]
    packet = Packet(src, 40000, dst, dport, "tcp")
    return explain_packet(RULES, CONTEXT, packet, source, ExplainOptions(**options))  # type: ignore[arg-type]


def test_json_has_exactly_the_documented_keys() -> None:
    document = explain("10.180.0.9", "172.30.0.44", 80).to_json()
    assert set(document) == {"mode", "node", "source", "verdict", "endpoints", "masquerade", "path"}
    assert set(document["source"]) == {"ip", "kind"}
    assert all(set(e) == {"endpoint", "probability"} for e in document["endpoints"])
    assert all(set(p) == {"hook", "table", "chain", "rule", "comment", "action"} for p in document["path"])
    json.dumps(document)


def test_cluster_ip_from_a_pod_lists_both_endpoints_with_their_probabilities() -> None:
    document = explain("10.180.0.9", "172.30.0.44", 80).to_json()
    assert document["mode"] == "iptables" and document["node"] == "node-a"
    assert document["source"] == {"ip": "10.180.0.9", "kind": "pod"}
    assert document["verdict"] == "DNAT"
    assert document["endpoints"] == [
        {"endpoint": "10.180.0.4:80", "probability": 0.5},
        {"endpoint": "10.180.0.5:80", "probability": 0.5},
    ]
    assert document["masquerade"] is False


def test_path_lists_the_rule_hits_of_the_first_alternative_in_order() -> None:
    path = explain("10.180.0.9", "172.30.0.44", 80).to_json()["path"]
    nat_hits = [(p["chain"], p["rule"]) for p in path if p["table"] == "nat" and p["hook"] == "PREROUTING"]
    assert nat_hits == [
        ("PREROUTING", 1),
        ("KUBE-SERVICES", 1),
        ("KUBE-SVC-4SW47YFZTEDKD3PK", 2),
        ("KUBE-SEP-UKSFD7AGPMPPLUHC", 2),
    ]
    dnat = [p for p in path if p["action"].startswith("DNAT")][0]
    assert dnat["comment"] == "ns4/svc4:p80"
    assert dnat["action"] == "DNAT 172.30.0.44:80 -> 10.180.0.4:80"


def test_cluster_ip_from_outside_the_cluster_cidr_is_masqueraded() -> None:
    assert explain("192.0.2.50", "172.30.0.44", 80, kind="external").masquerade is True


def test_node_port_from_an_external_client_is_dnatted_and_masqueraded() -> None:
    explanation = explain("203.0.113.200", NODE_IP, 3004, kind="external")
    assert explanation.verdict == "DNAT"
    assert explanation.masquerade is True
    assert {a.packet.src for a in explanation.alternatives} == {NODE_IP}


def test_hairpin_masquerades_only_the_path_back_to_the_sender() -> None:
    explanation = explain("10.180.0.4", "172.30.0.44", 80)
    by_endpoint = {a.dnat: a.masqueraded for a in explanation.alternatives}
    assert by_endpoint == {("10.180.0.4", 80): True, ("10.180.0.5", 80): False}
    assert explanation.masquerade is True


def test_service_without_endpoints_is_rejected_in_filter_forward() -> None:
    explanation = explain("10.180.0.9", "172.30.0.46", 80)
    assert explanation.verdict == "REJECT"
    assert explanation.endpoints == ()
    last = explanation.to_json()["path"][-1]
    assert (last["hook"], last["table"], last["chain"]) == ("FORWARD", "filter", "KUBE-SERVICES")
    assert last["comment"] == "ns6/svc6:p80 has no endpoints"


def test_external_traffic_policy_local_without_local_endpoints_drops_at_input() -> None:
    explanation = explain("203.0.113.200", NODE_IP, 3001, kind="external")
    assert explanation.verdict == "DROP"
    last = explanation.to_json()["path"][-1]
    assert (last["hook"], last["chain"]) == ("INPUT", "KUBE-EXTERNAL-SERVICES")


def test_load_balancer_source_range_admits_a_listed_client() -> None:
    explanation = explain("203.0.113.7", "5.6.7.8", 80, kind="external")
    assert explanation.verdict == "DNAT"
    assert [e.endpoint for e in explanation.endpoints] == ["10.180.0.3:80"]


def test_load_balancer_source_range_drops_an_unlisted_client() -> None:
    explanation = explain("203.0.113.200", "5.6.7.8", 80, kind="external")
    assert explanation.verdict == "DROP"
    assert explanation.to_json()["path"][-1]["chain"] == "KUBE-PROXY-FIREWALL"


def test_traffic_no_rule_touches_has_verdict_none_and_no_endpoints() -> None:
    document = explain("10.180.0.9", "10.180.0.5", 8080).to_json()
    assert document["verdict"] == "NONE"
    assert document["endpoints"] == []
    assert document["masquerade"] is False


def test_established_packet_is_accepted_by_the_forwarding_conntrack_rule() -> None:
    explanation = explain("10.180.0.9", "172.30.0.44", 80, ct_state="ESTABLISHED")
    assert explanation.verdict == "DNAT"
    accepting = [s for s in explanation.primary.steps if s.action == "ACCEPT"]
    assert [s.comment for s in accepting] == ["kubernetes forwarding conntrack rule"]


def test_node_to_cluster_ip_starts_at_output_and_is_masqueraded() -> None:
    explanation = explain(NODE_IP, "172.30.0.44", 80, kind="node")
    assert explanation.primary.steps[0].hook == "OUTPUT"
    assert explanation.masquerade is True


@pytest.mark.parametrize("level", ["detailed", "summary", "minimal"])
def test_text_always_states_the_question_and_the_verdict(level: str) -> None:
    text = render_text(explain("10.180.0.9", "172.30.0.44", 80), level)  # type: ignore[arg-type]
    assert text.startswith("# TCP 10.180.0.9:40000 -> 172.30.0.44:80 on node node-a")
    assert "destination: service ns4/svc4:p80" in text
    assert "verdict: DNAT - DNAT to 10.180.0.4:80" in text
    assert "result: DNAT; endpoints: 10.180.0.4:80 (50.0%), 10.180.0.5:80 (50.0%)" in text


def test_detailed_text_shows_misses_and_summary_does_not() -> None:
    explanation = explain("10.180.0.9", "172.30.0.44", 80)
    assert "miss: random draw" in render_text(explanation, "detailed")
    assert "miss:" not in render_text(explanation, "summary")


def test_minimal_text_shows_only_rewrites_and_verdicts() -> None:
    text = render_text(explain("203.0.113.200", NODE_IP, 3004, kind="external"), "minimal")
    assert "PREROUTING · nat" not in text
    assert f"SNAT  203.0.113.200 -> {NODE_IP}" in text
    assert "DNAT  198.51.100.2:3004 -> 10.180.0.4:80" in text
