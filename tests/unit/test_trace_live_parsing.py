"""The pure parts of the live trace: nft monitor events, rule-handle maps, conntrack entries, and the
comparison with explain. The nft samples in trace_data/ were recorded on a lab node (NodePort 30080 from
outside)."""

from __future__ import annotations

from pathlib import Path

from kubeplane.trace.compare import Observation, disagreements
from kubeplane.trace.explain import explain_packet
from kubeplane.trace.live_probe import parse_conntrack
from kubeplane.trace.nft_trace import (
    TRACE_TABLE,
    LiveHit,
    hits_of_first_packet,
    parse_monitor_output,
    parse_rule_handles,
    trace_table_text,
)
from kubeplane.trace.packet import NodeContext, Packet, SourceInfo
from kubeplane.trace.ruleset import parse_ruleset

DATA = Path(__file__).parent / "trace_data"
MONITOR = (DATA / "nft_monitor_nodeport.txt").read_text()
NAT_LISTING = (DATA / "nft_list_nat.txt").read_text()


def test_rule_handles_map_to_iptables_rule_numbers() -> None:
    handles = parse_rule_handles(NAT_LISTING)
    assert handles[("PREROUTING", 29)] == 1
    assert handles[("KUBE-NODEPORTS", 82)] == 4
    assert handles[("KUBE-EXT-67NZLRHBNDSAWJRO", 85)] == 2


def test_monitor_lines_become_events_with_handles_and_verdicts() -> None:
    events = parse_monitor_output(MONITOR)
    dnat = [e for e in events if e.chain == "KUBE-SEP-EMUAPVFCFHRD2FOR"][0]
    assert (dnat.table, dnat.kind, dnat.handle, dnat.verdict) == ("nat", "rule", 91, "accept")
    assert events[0].table == TRACE_TABLE and events[0].kind == "packet"


def test_only_the_first_packet_is_kept_even_when_the_kernel_reuses_its_trace_id() -> None:
    handles = {"nat": parse_rule_handles(NAT_LISTING)}
    hits = hits_of_first_packet(parse_monitor_output(MONITOR), handles)
    assert [h.chain for h in hits if h.table == "nat"][:3] == [
        "PREROUTING",
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
    ]
    forward = [h for h in hits if h.hook == "FORWARD"]
    assert [h.chain for h in forward] == ["FORWARD", "FORWARD", "KUBE-FORWARD"]
    assert hits[-1] == LiveHit("POSTROUTING", "nat", "KUBE-POSTROUTING", 3, "accept")


def test_trace_table_matches_the_flow_in_prerouting_and_output() -> None:
    text = trace_table_text(Packet("10.244.1.5", 41000, "10.96.0.10", 53, "udp"))
    assert "hook prerouting priority -350" in text and "hook output priority -350" in text
    assert "ip saddr 10.244.1.5 ip daddr 10.96.0.10 udp sport 41000 udp dport 53 meta nftrace set 1" in text


CONNTRACK = (
    "tcp      6 119 TIME_WAIT src=203.0.113.10 dst=198.51.100.2 sport=45001 dport=30080 src=10.244.2.9 "
    "dst=198.51.100.2 sport=8080 dport=36289 [ASSURED] mark=0 use=1\n"
    "udp      17 29 src=10.244.1.5 dst=10.96.12.45 sport=57440 dport=53 src=10.244.2.9 dst=10.244.1.5 "
    "sport=5353 dport=57440 mark=0 use=1\n"
)


def test_conntrack_entry_shows_dnat_and_snat() -> None:
    nodeport, udp = parse_conntrack(CONNTRACK)
    assert nodeport.dnat == ("10.244.2.9", 8080)
    assert nodeport.snat == "198.51.100.2"
    assert udp.dnat == ("10.244.2.9", 5353)
    assert udp.snat is None


def test_masquerade_to_the_same_address_counts_when_the_port_changed() -> None:
    (entry,) = parse_conntrack(
        "tcp 6 1 ESTABLISHED src=198.51.100.2 dst=10.96.0.1 sport=50000 dport=80 src=10.244.2.9 "
        "dst=198.51.100.2 sport=8080 dport=61000 mark=0 use=1"
    )
    assert entry.snat == "198.51.100.2"


RULES = parse_ruleset(
    "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SVC-X - [0:0]\n"
    "-A PREROUTING -d 10.96.0.1 -p tcp -j KUBE-SVC-X\n"
    "-A KUBE-SVC-X -m statistic --mode random --probability 0.5 -p tcp -j DNAT --to-destination 10.0.0.1:80\n"
    "-A KUBE-SVC-X -p tcp -j DNAT --to-destination 10.0.0.2:80\nCOMMIT\n"
)
CONTEXT = NodeContext("n", ("198.51.100.2",), ("10.0.0.0/24",), "198.51.100.2")
EXPLANATION = explain_packet(
    RULES, CONTEXT, Packet("10.0.0.9", 40000, "10.96.0.1", 80), SourceInfo("10.0.0.9", "pod", "pod", False)
)
SECOND_PATH = (
    LiveHit("PREROUTING", "nat", "PREROUTING", 1, "jump KUBE-SVC-X"),
    LiveHit("PREROUTING", "nat", "KUBE-SVC-X", 2, "accept"),
    LiveHit("POSTROUTING", "nat", "POSTROUTING", None, "policy accept"),
)


def test_kernel_taking_one_of_the_offered_endpoints_agrees() -> None:
    observed = Observation("DNAT", ("10.0.0.2", 80), None, SECOND_PATH)
    assert disagreements(EXPLANATION, observed) == ()


def test_an_endpoint_explain_does_not_offer_is_flagged() -> None:
    observed = Observation("DNAT", ("10.0.0.7", 80), None, ())
    assert disagreements(EXPLANATION, observed) == (
        "the kernel sent the packet to 10.0.0.7:80; explain offers 10.0.0.1:80, 10.0.0.2:80",
    )


def test_unexpected_masquerade_is_flagged() -> None:
    observed = Observation("DNAT", ("10.0.0.2", 80), "198.51.100.2", ())
    assert disagreements(EXPLANATION, observed) == (
        "masquerade: explain says no masquerade, the kernel masqueraded to 198.51.100.2",
    )


def test_a_different_verdict_is_flagged() -> None:
    observed = Observation("DROP", None, None, ())
    assert any(
        d.startswith("verdict: explain says DNAT, the kernel did DROP")
        for d in disagreements(EXPLANATION, observed)
    )


def test_a_different_rule_path_names_the_first_difference() -> None:
    wrong = (SECOND_PATH[0], LiveHit("PREROUTING", "nat", "KUBE-SVC-X", 3, "accept"))
    observed = Observation("DNAT", ("10.0.0.2", 80), None, wrong)
    assert disagreements(EXPLANATION, observed) == (
        "rule path differs at hit 2: explain nat KUBE-SVC-X #2, kernel nat KUBE-SVC-X #3",
    )
