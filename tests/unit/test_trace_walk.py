"""The walk's kernel semantics, one behaviour per test, on small hand-written rulesets."""

from __future__ import annotations

import re

import pytest

from kubeplane.trace.explain import ExplainOptions, UnknownAffinityEndpoint, explain_packet
from kubeplane.trace.match import UnevaluableMatch
from kubeplane.trace.packet import Interfaces, NodeContext, Packet, SourceInfo
from kubeplane.trace.result import Explanation, alternative_reason, alternative_verdict
from kubeplane.trace.rules import Ruleset
from kubeplane.trace.ruleset import parse_ruleset
from kubeplane.trace.walk import WalkError

NODE_IP = "198.51.100.2"
POD = "10.244.1.5"
OTHER_POD = "10.244.2.7"
EXTERNAL = "203.0.113.9"
CONTEXT = NodeContext(
    name="node-a", local_addresses=(NODE_IP,), pod_cidrs=("10.244.1.0/24",), masquerade_address=NODE_IP
)
POLICIES = {"FORWARD": "ACCEPT", "INPUT": "ACCEPT", "OUTPUT": "ACCEPT", "PREROUTING": "ACCEPT"}
BUILTINS = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}


def table(name: str, lines: list[str], policies: dict[str, str] | None = None) -> str:
    """An iptables-save table declaring every chain its lines use."""
    chains: list[str] = []
    for line in lines:
        for chain in re.findall(r"(?:-A|-j|-g) (KUBE-[A-Z0-9-]+|[A-Z]+-CHAIN)", line):
            if chain not in chains:
                chains.append(chain)
    builtin = [f":{c} {(policies or {}).get(c, 'ACCEPT')} [0:0]" for c in sorted(BUILTINS)]
    return "\n".join([f"*{name}", *builtin, *[f":{c} - [0:0]" for c in chains], *lines, "COMMIT", ""])


def rules(nat: list[str] | None = None, filter_: list[str] | None = None, **policies: str) -> Ruleset:
    return parse_ruleset(table("nat", nat or []), table("filter", filter_ or [], policies))


def explain(
    ruleset: Ruleset,
    src: str = POD,
    dst: str = "10.96.0.10",
    dport: int = 80,
    protocol: str = "tcp",
    kind: str = "pod",
    context: NodeContext = CONTEXT,
    **options: object,
) -> Explanation:
    pod_node = context.name if kind == "pod" else None
    here = src in context.local_addresses
    source = SourceInfo(src, kind, kind, here, pod_node=pod_node)  # type: ignore[arg-type]
    packet = Packet(src, 40000, dst, dport, protocol)  # type: ignore[arg-type]
    return explain_packet(ruleset, context, packet, source, ExplainOptions(**options))  # type: ignore[arg-type]


def actions(explanation: Explanation) -> list[str]:
    return [f"{s.chain}#{s.rule}:{s.action}" for s in explanation.primary.steps if s.matched and s.rule]


# --- matches --------------------------------------------------------------------------------------


def test_destination_match_selects_only_the_matching_service() -> None:
    ruleset = rules(
        nat=[
            "-A PREROUTING -j KUBE-SERVICES",
            "-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -j DNAT --to-destination 10.244.2.1:443",
            "-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -j DNAT --to-destination 10.244.2.10:80",
        ]
    )
    assert explain(ruleset).primary.dnat == ("10.244.2.10", 80)


def test_negated_source_match_skips_pod_traffic() -> None:
    ruleset = rules(nat=["-A PREROUTING ! -s 10.0.0.0/8 -j MARK --or-mark 0x4000"])
    assert explain(ruleset, src=POD).primary.packet.mark == 0
    assert explain(ruleset, src=EXTERNAL, kind="external").primary.packet.mark == 0x4000


def test_protocol_match_ignores_other_protocols() -> None:
    ruleset = rules(nat=["-A PREROUTING -p tcp -d 10.96.0.10 -j DNAT --to-destination 10.244.2.10"])
    assert explain(ruleset, protocol="udp").verdict == "NONE"
    assert explain(ruleset, protocol="tcp").verdict == "DNAT"


def test_destination_port_match() -> None:
    ruleset = rules(nat=["-A PREROUTING -p udp --dport 53 -j DNAT --to-destination 10.244.2.10"])
    assert explain(ruleset, protocol="udp", dport=53).verdict == "DNAT"
    assert explain(ruleset, protocol="udp", dport=54).verdict == "NONE"


def test_source_port_range_match() -> None:
    ruleset = rules(nat=["-A PREROUTING -p tcp --sport 30000:45000 -j MARK --or-mark 0x1"])
    assert explain(ruleset).primary.packet.mark == 0x1


def test_dst_type_local_matches_the_node_address_only() -> None:
    ruleset = rules(nat=["-A PREROUTING -m addrtype --dst-type LOCAL -j DNAT --to-destination 10.244.2.10"])
    assert explain(ruleset, dst=NODE_IP, kind="external", src=EXTERNAL).verdict == "DNAT"
    assert explain(ruleset, dst="198.51.100.3", kind="external", src=EXTERNAL).verdict == "NONE"


def test_src_type_local_matches_traffic_the_node_sends() -> None:
    ruleset = rules(nat=["-A OUTPUT -m addrtype --src-type LOCAL -j MARK --or-mark 0x4000"])
    assert explain(ruleset, src=NODE_IP, kind="node").primary.packet.mark == 0x4000


def test_ctstate_invalid_packet_is_dropped_by_invalid_rule() -> None:
    ruleset = rules(filter_=["-A FORWARD -m conntrack --ctstate INVALID -j DROP"])
    assert explain(ruleset, ct_state="INVALID").verdict == "DROP"
    assert explain(ruleset, ct_state="NEW").verdict == "NONE"


def test_ctstate_established_is_accepted_by_the_conntrack_rule() -> None:
    ruleset = rules(
        filter_=["-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"], FORWARD="DROP"
    )
    assert explain(ruleset, ct_state="ESTABLISHED").verdict == "ACCEPT"
    assert explain(ruleset, ct_state="NEW").verdict == "DROP"


def test_ctstate_dnat_is_set_once_the_packet_was_translated() -> None:
    ruleset = rules(
        nat=["-A PREROUTING -j DNAT --to-destination 10.244.2.10"],
        filter_=["-A FORWARD -m conntrack --ctstate DNAT -j ACCEPT"],
        FORWARD="DROP",
    )
    assert explain(ruleset).verdict == "DNAT"


def test_statistic_branches_keep_both_outcomes_with_probabilities() -> None:
    ruleset = rules(
        nat=[
            "-A PREROUTING -j KUBE-SVC-X",
            "-A KUBE-SVC-X -m statistic --mode random --probability 0.3333333333 "
            "-j DNAT --to-destination 10.0.0.1",
            "-A KUBE-SVC-X -m statistic --mode random --probability 0.5000000000 "
            "-j DNAT --to-destination 10.0.0.2",
            "-A KUBE-SVC-X -j DNAT --to-destination 10.0.0.3",
        ]
    )
    chances = {c.endpoint: c.probability for c in explain(ruleset).endpoints}
    assert chances == pytest.approx(
        {"10.0.0.1:80": 1 / 3, "10.0.0.2:80": 1 / 3, "10.0.0.3:80": 1 / 3}, abs=1e-6
    )


def test_statistic_is_not_drawn_when_an_earlier_match_fails() -> None:
    ruleset = rules(nat=["-A PREROUTING -d 192.0.2.1 -m statistic --mode random --probability 0.5 -j DROP"])
    assert len(explain(ruleset).alternatives) == 1


AFFINITY_NAT = [
    "-A PREROUTING -j KUBE-SVC-X",
    "-A KUBE-SVC-X -m recent --name KUBE-SEP-A --rcheck --seconds 10800 --reap -j KUBE-SEP-A",
    "-A KUBE-SVC-X -m recent --name KUBE-SEP-B --rcheck --seconds 10800 --reap -j KUBE-SEP-B",
    "-A KUBE-SVC-X -m statistic --mode random --probability 0.5 -j KUBE-SEP-A",
    "-A KUBE-SVC-X -j KUBE-SEP-B",
    "-A KUBE-SEP-A -m recent --set --name KUBE-SEP-A --mask 255.255.255.255 --rsource -m tcp -p tcp "
    "-j DNAT --to-destination 10.0.0.1:8080",
    "-A KUBE-SEP-B -m recent --set --name KUBE-SEP-B --mask 255.255.255.255 --rsource -m tcp -p tcp "
    "-j DNAT --to-destination 10.0.0.2:8080",
]


def test_recent_rcheck_sends_a_sticky_client_to_its_endpoint_only() -> None:
    explanation = explain(rules(nat=AFFINITY_NAT), sticky_endpoint="10.0.0.2:8080")
    assert [(c.endpoint, c.probability) for c in explanation.endpoints] == [("10.0.0.2:8080", 1.0)]


def test_recent_without_affinity_lets_the_random_branches_decide() -> None:
    explanation = explain(rules(nat=AFFINITY_NAT))
    assert {c.endpoint for c in explanation.endpoints} == {"10.0.0.1:8080", "10.0.0.2:8080"}


def test_recent_set_is_reported_as_recording_the_source() -> None:
    step = [s for s in explain(rules(nat=AFFINITY_NAT)).primary.steps if s.chain == "KUBE-SEP-A"][0]
    assert "records the source in recent list KUBE-SEP-A" in step.action


def test_affinity_to_an_endpoint_no_rule_records_is_refused() -> None:
    with pytest.raises(UnknownAffinityEndpoint, match="10.9.9.9:80"):
        explain(rules(nat=AFFINITY_NAT), sticky_endpoint="10.9.9.9:80")


def test_mark_match_compares_under_the_mask() -> None:
    ruleset = rules(
        nat=["-A PREROUTING -j MARK --or-mark 0x4001"],
        filter_=["-A FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT"],
        FORWARD="DROP",
    )
    assert explain(ruleset).verdict == "ACCEPT"


def test_in_interface_prefix_match_uses_the_pod_side_interface() -> None:
    context = NodeContext(
        name="node-a",
        local_addresses=(NODE_IP,),
        masquerade_address=NODE_IP,
        interfaces=Interfaces(pod_side="veth1a2b", uplink="eth0"),
    )
    ruleset = rules(nat=["-A PREROUTING -i veth+ -j MARK --or-mark 0x1"])
    assert explain(ruleset, context=context).primary.packet.mark == 0x1
    assert explain(ruleset, src=EXTERNAL, kind="external", context=context).primary.packet.mark == 0


def test_physdev_is_in_holds_only_for_pods_behind_a_bridge() -> None:
    ruleset = rules(nat=["-A PREROUTING -m physdev ! --physdev-is-in -j MARK --or-mark 0x1"])
    assert explain(ruleset).primary.packet.mark == 0x1
    bridged = NodeContext("node-a", (NODE_IP,), ("10.244.1.0/24",), NODE_IP, bridged_pods=True)
    assert explain(ruleset, context=bridged).primary.packet.mark == 0


def test_interface_match_without_a_known_interface_is_an_error() -> None:
    with pytest.raises(UnevaluableMatch, match="in-interface of this packet is unknown"):
        explain(rules(nat=["-A PREROUTING ! -i kube-bridge -j ACCEPT"]))


# --- targets and chain flow -----------------------------------------------------------------------


def test_mark_targets_or_xor_and_set_xmark() -> None:
    ruleset = rules(
        nat=[
            "-A PREROUTING -j MARK --or-mark 0x4000",
            "-A PREROUTING -j MARK --xor-mark 0x4001",
            "-A PREROUTING -j MARK --set-xmark 0x10/0xff",
        ]
    )
    marks = [(r.before, r.after) for r in explain(ruleset).primary.rewrites]
    assert marks == [("0x0", "0x4000"), ("0x4000", "0x1"), ("0x1", "0x10")]


def test_dnat_without_port_keeps_the_destination_port() -> None:
    ruleset = rules(nat=["-A PREROUTING -j DNAT --to-destination 10.244.2.10"])
    assert explain(ruleset, dport=8443).primary.packet.dport == 8443


def test_masquerade_writes_the_node_address_as_source() -> None:
    ruleset = rules(nat=["-A POSTROUTING -j MASQUERADE --random-fully"])
    explanation = explain(ruleset, dst=OTHER_POD)
    assert explanation.primary.packet.src == NODE_IP
    assert explanation.masquerade is True
    assert "random-fully" in [s for s in explanation.primary.steps if s.chain == "POSTROUTING"][0].action


def test_masquerade_towards_this_nodes_pods_uses_the_pod_side_address() -> None:
    context = NodeContext("node-a", (NODE_IP, "10.244.1.1"), ("10.244.1.0/24",), NODE_IP, "10.244.1.1")
    ruleset = rules(nat=["-A POSTROUTING -j MASQUERADE"])
    assert explain(ruleset, dst="10.244.1.9", context=context).primary.packet.src == "10.244.1.1"


def test_reject_ends_the_packet_with_reject_verdict() -> None:
    ruleset = rules(
        filter_=["-A FORWARD -j KUBE-SERVICES", "-A KUBE-SERVICES -d 10.96.0.10 -p tcp -j REJECT"]
    )
    explanation = explain(ruleset)
    assert explanation.verdict == "REJECT"
    assert explanation.primary.ended_by is not None and explanation.primary.ended_by.chain == "KUBE-SERVICES"


def test_accept_ends_the_table_so_later_drops_are_not_reached() -> None:
    ruleset = rules(filter_=["-A FORWARD -j ACCEPT", "-A FORWARD -j DROP"])
    assert explain(ruleset).verdict == "ACCEPT"


def test_return_resumes_the_calling_chain_after_the_jump() -> None:
    ruleset = rules(
        nat=[
            "-A PREROUTING -j KUBE-A",
            "-A PREROUTING -j MARK --or-mark 0x2",
            "-A KUBE-A -j RETURN",
            "-A KUBE-A -j MARK --or-mark 0x1",
        ]
    )
    assert explain(ruleset).primary.packet.mark == 0x2


def test_return_in_a_builtin_chain_applies_its_policy() -> None:
    ruleset = rules(filter_=["-A FORWARD -j RETURN", "-A FORWARD -j ACCEPT"], FORWARD="DROP")
    explanation = explain(ruleset)
    assert explanation.verdict == "DROP"
    assert explanation.primary.ended_by is not None and explanation.primary.ended_by.rule is None


def test_goto_returns_to_the_caller_of_the_chain_that_jumped_away() -> None:
    ruleset = rules(
        nat=[
            "-A PREROUTING -j KUBE-A",
            "-A PREROUTING -j MARK --or-mark 0x4",
            "-A KUBE-A -g KUBE-B",
            "-A KUBE-A -j MARK --or-mark 0x1",
            "-A KUBE-B -j RETURN",
        ]
    )
    assert explain(ruleset).primary.packet.mark == 0x4


def test_falling_off_a_user_chain_returns_to_the_caller() -> None:
    ruleset = rules(
        nat=["-A PREROUTING -j KUBE-A", "-A PREROUTING -j MARK --or-mark 0x2", "-A KUBE-A -d 192.0.2.1"]
    )
    assert explain(ruleset).primary.packet.mark == 0x2


def test_forward_policy_drop_drops_unaccepted_traffic() -> None:
    explanation = explain(rules(FORWARD="DROP"), dst=OTHER_POD)
    assert explanation.verdict == "DROP"
    assert "policy of filter FORWARD" in explanation_reason(explanation)


def explanation_reason(explanation: Explanation) -> str:
    return alternative_reason(explanation.primary)


def test_rule_without_target_only_counts_and_the_walk_goes_on() -> None:
    ruleset = rules(nat=['-A PREROUTING -m comment --comment "count"', "-A PREROUTING -j MARK --or-mark 0x1"])
    explanation = explain(ruleset)
    assert explanation.primary.packet.mark == 0x1
    assert "PREROUTING#1:match, no target" in actions(explanation)


def test_untouched_packet_has_verdict_none() -> None:
    ruleset = rules(nat=["-A PREROUTING -j KUBE-SERVICES", "-A KUBE-SERVICES -d 10.96.0.1 -j ACCEPT"])
    assert explain(ruleset, dst=OTHER_POD).verdict == "NONE"


def test_dnat_reached_from_postrouting_is_refused_like_the_kernel_does() -> None:
    with pytest.raises(WalkError, match="DNAT"):
        explain(rules(nat=["-A POSTROUTING -j DNAT --to-destination 10.0.0.1"]))


def test_jump_loop_is_stopped() -> None:
    with pytest.raises(WalkError):
        explain(rules(nat=["-A PREROUTING -j KUBE-A", "-A KUBE-A -j KUBE-B", "-A KUBE-B -j KUBE-A"]))


# --- hooks and conntrack --------------------------------------------------------------------------


def hooks(explanation: Explanation) -> list[str]:
    seen: list[str] = []
    for step in explanation.primary.steps:
        where = f"{step.hook}/{step.table or 'route'}"
        if where not in seen:
            seen.append(where)
    return seen


def test_arriving_packet_to_a_remote_destination_is_forwarded() -> None:
    assert hooks(explain(rules(), dst=OTHER_POD)) == [
        "PREROUTING/nat",
        "PREROUTING/route",
        "FORWARD/filter",
        "POSTROUTING/nat",
    ]


def test_arriving_packet_to_a_node_address_goes_to_input() -> None:
    explanation = explain(rules(), src=EXTERNAL, kind="external", dst=NODE_IP)
    assert hooks(explanation) == ["PREROUTING/nat", "PREROUTING/route", "INPUT/filter", "INPUT/nat"]
    assert explanation.primary.delivery == "local"


def test_packet_from_the_node_itself_starts_at_output() -> None:
    explanation = explain(rules(), src=NODE_IP, kind="node", dst=OTHER_POD)
    assert hooks(explanation) == ["OUTPUT/nat", "OUTPUT/filter", "OUTPUT/route", "POSTROUTING/nat"]


def test_routing_uses_the_destination_after_dnat() -> None:
    ruleset = rules(nat=["-A PREROUTING -d 10.96.0.10 -p tcp -j DNAT --to-destination 198.51.100.2:10250"])
    assert explain(ruleset).primary.delivery == "local"


def test_established_packet_skips_nat_rules_but_gets_the_connection_translation() -> None:
    ruleset = rules(
        nat=[
            "-A PREROUTING -d 10.96.0.10 -j MARK --or-mark 0x4000",
            "-A PREROUTING -d 10.96.0.10 -p tcp -j DNAT --to-destination 10.244.2.10:8080",
        ]
    )
    explanation = explain(ruleset, ct_state="ESTABLISHED")
    assert explanation.primary.dnat == ("10.244.2.10", 8080)
    assert explanation.primary.packet.mark == 0
    assert all(
        s.chain in ("conntrack", "routing", "FORWARD", "POSTROUTING") for s in explanation.primary.steps
    )


def test_established_packet_of_a_rejected_connection_has_no_translation() -> None:
    ruleset = rules(filter_=["-A FORWARD -m conntrack --ctstate NEW -d 10.96.0.10 -j REJECT"])
    explanation = explain(ruleset, ct_state="ESTABLISHED")
    assert explanation.verdict == "NONE"


def test_invalid_packet_gets_no_nat_at_all() -> None:
    ruleset = rules(nat=["-A PREROUTING -j DNAT --to-destination 10.244.2.10"])
    assert explain(ruleset, ct_state="INVALID").primary.dnat is None


def test_alternative_verdicts_agree_for_a_plain_service() -> None:
    explanation = explain(rules(nat=AFFINITY_NAT))
    assert {alternative_verdict(a) for a in explanation.alternatives} == {"DNAT"}
