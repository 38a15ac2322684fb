"""Parsing iptables-save text into rules: every match and target kube-proxy writes, and clear refusals."""

from __future__ import annotations

import ipaddress

import pytest

from kubeplane.trace.rules import (
    AddressMatch,
    AddrTypeMatch,
    ConntrackMatch,
    DnatTarget,
    Jump,
    MarkMatch,
    MarkTarget,
    PortMatch,
    ProtocolMatch,
    RecentMatch,
    Rule,
    SnatTarget,
    StatisticMatch,
    Verdict,
)
from kubeplane.trace.ruleset import RulesetParseError, parse_ruleset


def nat(*lines: str, chains: tuple[str, ...] = ("KUBE-SERVICES", "KUBE-SVC-A", "KUBE-SEP-A")) -> str:
    declared = [f":{c} - [0:0]" for c in chains]
    return "\n".join(["*nat", ":PREROUTING ACCEPT [0:0]", *declared, *lines, "COMMIT", ""])


def only_rule(text: str, chain: str = "KUBE-SERVICES", table: str = "nat") -> Rule:
    rules = parse_ruleset(text).table(table).chain(chain).rules
    assert len(rules) == 1
    return rules[0]


def test_quoted_comment_is_kept_whole_and_numbers_count_from_one() -> None:
    text = nat(
        '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 '
        "--dport 80 -j KUBE-SVC-A",
        "-A KUBE-SERVICES -m comment --comment ns2/svc2:p80 -j KUBE-SVC-A",
    )
    rules = parse_ruleset(text).table("nat").chain("KUBE-SERVICES").rules
    assert [r.number for r in rules] == [1, 2]
    assert rules[0].comment == "ns1/svc1:p80 cluster IP"
    assert rules[1].comment == "ns2/svc2:p80"


def test_escaped_quotes_inside_a_comment_are_unescaped() -> None:
    rule = only_rule(nat('-A KUBE-SERVICES -m comment --comment "say \\"hi\\" to ns/a:b" -j KUBE-SVC-A'))
    assert rule.comment == 'say "hi" to ns/a:b'


def test_unbalanced_quote_is_refused() -> None:
    with pytest.raises(RulesetParseError, match="line 6: unbalanced quote"):
        parse_ruleset(nat('-A KUBE-SERVICES -m comment --comment "open -j KUBE-SVC-A'))


def test_core_matches_come_before_module_matches_whatever_the_order_written() -> None:
    rule = only_rule(nat("-A KUBE-SERVICES -m tcp -p tcp --dport 80 -d 10.96.0.1 -j KUBE-SVC-A"))
    assert rule.matches == (
        ProtocolMatch("tcp"),
        AddressMatch("dst", ipaddress.ip_network("10.96.0.1/32")),
        PortMatch("dst", 80, 80),
    )


def test_bang_negates_the_option_that_follows() -> None:
    rule = only_rule(nat("-A KUBE-SERVICES ! -s 10.0.0.0/8 -m mark ! --mark 0x4000/0x4000 -j KUBE-SVC-A"))
    assert AddressMatch("src", ipaddress.ip_network("10.0.0.0/8"), negated=True) in rule.matches
    assert MarkMatch(0x4000, 0x4000, negated=True) in rule.matches


def test_protocol_loads_its_port_module_without_dash_m() -> None:
    rule = only_rule(nat("-A KUBE-SERVICES -p udp --dport 53 -j KUBE-SVC-A"))
    assert PortMatch("dst", 53, 53) in rule.matches


def test_port_range_parses_low_and_high() -> None:
    rule = only_rule(nat("-A KUBE-SERVICES -p tcp --sport 1000:2000 -j KUBE-SVC-A"))
    assert PortMatch("src", 1000, 2000) in rule.matches


def test_addrtype_conntrack_and_statistic_matches() -> None:
    rule = only_rule(
        nat(
            "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT "
            "-m statistic --mode random --probability 0.3333333333 -j KUBE-SVC-A"
        )
    )
    assert rule.matches == (
        AddrTypeMatch("dst", frozenset({"LOCAL"})),
        ConntrackMatch(frozenset({"RELATED", "ESTABLISHED", "DNAT"}), negated=True),
        StatisticMatch(0.3333333333),
    )


def test_recent_affinity_options_become_one_match() -> None:
    rule = only_rule(
        nat(
            "-A KUBE-SVC-A -m recent --name KUBE-SEP-A --rcheck --seconds 10800 --reap -j KUBE-SEP-A",
        ),
        chain="KUBE-SVC-A",
    )
    assert rule.matches == (RecentMatch("KUBE-SEP-A", "rcheck", seconds=10800, reap=True),)


def test_nat_and_mark_targets_with_their_options() -> None:
    text = nat(
        "-A KUBE-SEP-A -m recent --set --name KUBE-SEP-A --mask 255.255.255.255 --rsource -m tcp -p tcp "
        "-j DNAT --to-destination 10.180.0.1:80",
        "-A KUBE-SEP-A -p tcp -j DNAT --to-destination [fd00::5]:8080",
        "-A KUBE-SEP-A -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-SEP-A -j MASQUERADE --random-fully",
        "-A KUBE-SEP-A -j SNAT --to-source 192.0.2.1",
        "-A KUBE-SEP-A -j REJECT --reject-with icmp-host-unreachable",
        "-A KUBE-SEP-A -g KUBE-SVC-A",
    )
    targets = [r.target for r in parse_ruleset(text).table("nat").chain("KUBE-SEP-A").rules]
    assert targets == [
        DnatTarget("10.180.0.1", 80),
        DnatTarget("fd00::5", 8080),
        MarkTarget("set-xmark", 0x4000, 0x4000),
        SnatTarget(None, random_fully=True),
        SnatTarget("192.0.2.1"),
        Verdict("REJECT", "icmp-host-unreachable"),
        Jump("KUBE-SVC-A", goto=True),
    ]


def test_dnat_to_a_port_without_a_protocol_is_refused_as_iptables_restore_does() -> None:
    with pytest.raises(RulesetParseError, match="DNAT to a port needs -p tcp"):
        parse_ruleset(nat("-A KUBE-SEP-A -j DNAT --to-destination 10.0.0.1:80"))


def test_rule_without_target_has_none() -> None:
    rule = only_rule(nat('-A KUBE-SERVICES -m comment --comment "counts only"'))
    assert rule.target is None


def test_undeclared_builtin_chain_is_empty_with_accept_policy() -> None:
    chain = parse_ruleset(nat()).table("nat").chain("POSTROUTING")
    assert chain.policy == "ACCEPT" and chain.rules == ()


def test_declared_policy_drop_is_kept() -> None:
    text = "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n"
    assert parse_ruleset(text).table("filter").chain("FORWARD").policy == "DROP"


def test_delete_chain_line_removes_the_chain() -> None:
    text = nat("-X KUBE-SEP-A")
    assert "KUBE-SEP-A" not in parse_ruleset(text).table("nat").chains


def test_jump_to_undeclared_chain_is_refused() -> None:
    with pytest.raises(RulesetParseError, match="KUBE-SVC-MISSING is neither a supported target"):
        parse_ruleset(nat("-A KUBE-SERVICES -j KUBE-SVC-MISSING"))


def test_rule_for_undeclared_chain_is_refused_with_its_line() -> None:
    with pytest.raises(RulesetParseError, match=r"line 6: .*KUBE-NOPE.*never declared"):
        parse_ruleset(nat("-A KUBE-NOPE -j ACCEPT"))


def test_unsupported_module_is_refused() -> None:
    with pytest.raises(RulesetParseError, match="unsupported match module 'hashlimit'"):
        parse_ruleset(nat("-A KUBE-SERVICES -m hashlimit --hashlimit-upto 5/sec -j ACCEPT"))


def test_unsupported_option_is_refused() -> None:
    with pytest.raises(RulesetParseError, match="unsupported option '--syn'"):
        parse_ruleset(nat("-A KUBE-SERVICES -p tcp --syn -j ACCEPT"))


def test_statistic_nth_mode_is_refused() -> None:
    with pytest.raises(RulesetParseError, match="only `-m statistic --mode random"):
        parse_ruleset(nat("-A KUBE-SERVICES -m statistic --mode nth -j ACCEPT"))


def test_rule_before_any_table_is_refused() -> None:
    with pytest.raises(RulesetParseError, match="before any \\*table"):
        parse_ruleset("-A PREROUTING -j ACCEPT\n")
