"""Evaluate one iptables match against the packet as it is at that point of the walk.

Every match is deterministic except `statistic`, which answers with both outcomes and their probabilities, and
`recent`, whose `--set` records the source (affinity) as a side effect. Each outcome says in words why it
matched or missed, because the text trace shows exactly that ("-d 10.96.0.1/32: 10.96.0.10 is outside").
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from kubeplane.trace.packet import NodeContext, Packet
from kubeplane.trace.rules import (
    AddressMatch,
    AddrTypeMatch,
    ConntrackMatch,
    InterfaceMatch,
    IpvsMatch,
    MarkMatch,
    Match,
    PhysdevMatch,
    PortMatch,
    ProtocolMatch,
    RecentMatch,
    SetMatch,
    StatisticMatch,
)

PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}


class UnevaluableMatch(ValueError):
    """The match depends on a fact the NodeContext does not provide (an interface name, an ipset)."""


@dataclass(frozen=True)
class MatchView:
    """The parts of an in-flight packet that matches read."""

    packet: Packet
    ct_states: frozenset[str]  # NEW/ESTABLISHED/RELATED/INVALID plus DNAT/SNAT once conntrack translated
    recent_lists: frozenset[str]  # recent lists holding the source: affinity given, or --set on this packet
    in_interface: str | None
    out_interface: str | None
    from_pod_here: bool = False  # sent by a pod of this node (physdev: entered through its port)
    ipvs_virtual: tuple[str, str, int] | None = None  # (protocol, address, port) IPVS took it for


@dataclass(frozen=True)
class MatchOutcome:
    matched: bool
    reason: str
    probability: float = 1.0  # the share of packets taking this outcome (statistic only)
    recent_lists: frozenset[str] | None = None  # the new lists after --set/--remove; None = unchanged


def evaluate(match: Match, view: MatchView, context: NodeContext) -> list[MatchOutcome]:
    """All outcomes of `match` for this packet: one, or two (with probabilities) for `statistic`."""
    if isinstance(match, StatisticMatch):
        hit = match.probability if not match.negated else 1.0 - match.probability
        return [
            MatchOutcome(True, f"random draw (p={hit:.4f})", probability=hit),
            MatchOutcome(False, f"random draw (p={1.0 - hit:.4f})", probability=1.0 - hit),
        ]
    if isinstance(match, RecentMatch):
        return [_recent(match, view)]
    matched, reason = _deterministic(match, view, context)
    return [MatchOutcome(matched != _negated(match), reason)]


def _negated(match: Match) -> bool:
    return bool(getattr(match, "negated", False))


def _bang(match: Match) -> str:
    return "! " if _negated(match) else ""


def _deterministic(match: Match, view: MatchView, context: NodeContext) -> tuple[bool, str]:
    """Whether the un-negated condition holds, and a sentence the trace shows."""
    packet = view.packet
    if isinstance(match, AddressMatch):
        ip = packet.src if match.direction == "src" else packet.dst
        inside = ipaddress.ip_address(ip) in match.network
        flag = "-s" if match.direction == "src" else "-d"
        where = "inside" if inside else "outside"
        return inside, f"{_bang(match)}{flag} {match.network}: {ip} is {where}"
    if isinstance(match, ProtocolMatch):
        holds = match.protocol in ("all", "0", packet.protocol)
        return holds, f"{_bang(match)}-p {match.protocol}: packet is {packet.protocol}"
    if isinstance(match, PortMatch):
        port = packet.sport if match.direction == "src" else packet.dport
        span = str(match.low) if match.low == match.high else f"{match.low}:{match.high}"
        return (
            match.low <= port <= match.high,
            f"{_bang(match)}--{match.direction[0]}port {span}: port is {port}",
        )
    if isinstance(match, AddrTypeMatch):
        ip = packet.src if match.direction == "src" else packet.dst
        types = _address_types(ip, context)
        holds = bool(types & match.types)
        wanted = ",".join(sorted(match.types))
        return holds, f"{_bang(match)}--{match.direction}-type {wanted}: {ip} is {','.join(sorted(types))}"
    if isinstance(match, ConntrackMatch):
        holds = bool(view.ct_states & match.states)
        wanted = ",".join(sorted(match.states))
        return holds, f"{_bang(match)}--ctstate {wanted}: state is {','.join(sorted(view.ct_states))}"
    if isinstance(match, MarkMatch):
        holds = packet.mark & match.mask == match.value
        return holds, f"{_bang(match)}--mark {match.value:#x}/{match.mask:#x}: mark is {packet.mark:#x}"
    if isinstance(match, InterfaceMatch):
        return _interface(match, view)
    if isinstance(match, SetMatch):
        return _ipset(match, packet, context)
    if isinstance(match, PhysdevMatch):
        bridged = context.bridged_pods and view.from_pod_here
        return bridged, f"{_bang(match)}--physdev-is-in: {'bridge port' if bridged else 'not from a bridge'}"
    if isinstance(match, IpvsMatch):
        return _ipvs(match, view)
    raise UnevaluableMatch(f"no evaluation for {match!r}")


def _ipvs(match: IpvsMatch, view: MatchView) -> tuple[bool, str]:
    if view.ipvs_virtual is None:
        return False, f"{_bang(match)}-m ipvs: not an IPVS connection"
    protocol, address, port = view.ipvs_virtual
    holds = (
        (match.vaddr is None or ipaddress.ip_address(address) in match.vaddr)
        and (match.vproto is None or PROTOCOL_NUMBERS.get(protocol) == match.vproto)
        and (match.vport is None or match.vport == port)
    )
    return holds, f"{_bang(match)}-m ipvs: virtual server {protocol} {address}:{port}"


def _address_types(ip: str, context: NodeContext) -> frozenset[str]:
    address = ipaddress.ip_address(ip)
    if context.is_local(ip):
        return frozenset({"LOCAL", "UNICAST"})
    if address.is_multicast:
        return frozenset({"MULTICAST"})
    if ip == "255.255.255.255":
        return frozenset({"BROADCAST"})
    return frozenset({"UNICAST"})


def _interface(match: InterfaceMatch, view: MatchView) -> tuple[bool, str]:
    actual = view.in_interface if match.direction == "in" else view.out_interface
    flag = "-i" if match.direction == "in" else "-o"
    if actual is None:
        raise UnevaluableMatch(
            f"a rule matches `{flag} {match.name}` but the {match.direction}-interface of this packet is "
            "unknown; name the node's interfaces in the trace context"
        )
    holds = actual.startswith(match.name[:-1]) if match.name.endswith("+") else actual == match.name
    return holds, f"{_bang(match)}{flag} {match.name}: interface is {actual or 'none (sent by the node)'}"


def _ipset(match: SetMatch, packet: Packet, context: NodeContext) -> tuple[bool, str]:
    """Membership as the kernel decides it per set type; each flag picks the packet's src or dst field."""
    contents = context.ipsets.get(match.name)
    if contents is None:
        raise UnevaluableMatch(f"a rule matches ipset {match.name} but its contents were not given")
    ips = [packet.src if flag == "src" else packet.dst for flag in match.flags]
    ports = [packet.sport if flag == "src" else packet.dport for flag in match.flags]
    kind, entries = contents.set_type, contents.entries
    if kind == "bitmap:port":
        holds = str(ports[0]) in entries
    elif kind == "hash:ip":
        holds = ips[0] in entries
    elif kind == "hash:ip,port" and len(ips) >= 2:
        holds = f"{ips[0]},{packet.protocol}:{ports[1]}" in entries
    elif kind == "hash:ip,port,ip" and len(ips) >= 3:
        holds = f"{ips[0]},{packet.protocol}:{ports[1]},{ips[2]}" in entries
    elif kind == "hash:ip,port,net" and len(ips) >= 3:
        prefix = f"{ips[0]},{packet.protocol}:{ports[1]},"
        source = ipaddress.ip_address(ips[2])
        holds = any(
            e.startswith(prefix) and source in ipaddress.ip_network(e[len(prefix) :], strict=False)
            for e in entries
        )
    else:
        flags = ",".join(match.flags)
        raise UnevaluableMatch(f"ipset {match.name} of type {kind} cannot be matched with {flags}")
    found = "member" if holds else "absent"
    return holds, f"{_bang(match)}--match-set {match.name} {','.join(match.flags)}: {found}"


def _recent(match: RecentMatch, view: MatchView) -> MatchOutcome:
    present = match.name in view.recent_lists
    if match.action == "set":
        lists = view.recent_lists | {match.name}
        return MatchOutcome(not match.negated, f"records the source in recent list {match.name}", 1.0, lists)
    if match.action == "remove":
        lists = view.recent_lists - {match.name}
        reason = f"--remove {match.name}: source {'was' if present else 'was not'} listed"
        return MatchOutcome(present != match.negated, reason, 1.0, lists)
    age = f" within {match.seconds}s" if match.seconds is not None else ""
    state = "is" if present else "is not"
    reason = f"--{match.action} {match.name}: source {state} listed{age} (session affinity)"
    return MatchOutcome(present != match.negated, reason)
