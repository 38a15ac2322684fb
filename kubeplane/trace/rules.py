"""The parsed shape of an iptables ruleset: tables of chains of rules, each rule its matches and one target.

Explain walks these objects, never the text, so every match and target kube-proxy's iptables mode emits has
exactly one dataclass here and the walker dispatches on type. Everything is frozen: a parsed ruleset is a
value that many walks share.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Direction = Literal["src", "dst"]

BUILTIN_CHAINS: dict[str, tuple[str, ...]] = {
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
}


# --- matches ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddressMatch:
    """`-s` / `-d`: the packet's source or destination lies in `network`."""

    direction: Direction
    network: IPNetwork
    negated: bool = False


@dataclass(frozen=True)
class ProtocolMatch:
    """`-p tcp|udp|sctp|icmp|all` (lower case)."""

    protocol: str
    negated: bool = False


@dataclass(frozen=True)
class PortMatch:
    """`--sport` / `--dport` of the tcp, udp and sctp modules: a single port or an inclusive range `lo:hi`."""

    direction: Direction
    low: int
    high: int
    negated: bool = False


@dataclass(frozen=True)
class InterfaceMatch:
    """`-i` / `-o`; a name ending in `+` matches every interface with that prefix."""

    direction: Literal["in", "out"]
    name: str
    negated: bool = False


@dataclass(frozen=True)
class AddrTypeMatch:
    """`-m addrtype --src-type/--dst-type TYPE[,TYPE]`; only LOCAL is decided from the node's addresses."""

    direction: Direction
    types: frozenset[str]
    negated: bool = False


@dataclass(frozen=True)
class ConntrackMatch:
    """`-m conntrack --ctstate` (or `-m state --state`): NEW ESTABLISHED RELATED INVALID, and DNAT SNAT."""

    states: frozenset[str]
    negated: bool = False


@dataclass(frozen=True)
class StatisticMatch:
    """`-m statistic --mode random --probability P`: the walk keeps both outcomes as alternatives."""

    probability: float
    negated: bool = False


@dataclass(frozen=True)
class RecentMatch:
    """`-m recent`: session affinity. `--rcheck`/`--update` test the list, `--set` records the source."""

    name: str
    action: Literal["rcheck", "update", "set", "remove"]
    seconds: int | None = None
    reap: bool = False
    mask: str = "255.255.255.255"
    side: Literal["rsource", "rdest"] = "rsource"
    negated: bool = False


@dataclass(frozen=True)
class MarkMatch:
    """`-m mark --mark VALUE[/MASK]`: true when `packet_mark & mask == value`."""

    value: int
    mask: int = 0xFFFFFFFF
    negated: bool = False


@dataclass(frozen=True)
class SetMatch:
    """`-m set --match-set NAME FLAGS` (IPVS mode): membership comes from the ipsets given to the walk."""

    name: str
    flags: tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True)
class PhysdevMatch:
    """`-m physdev --physdev-is-in` (IPVS mode): the packet entered through a bridge port."""

    negated: bool = False


@dataclass(frozen=True)
class IpvsMatch:
    """`-m ipvs --vaddr A --vproto N --vport P` (IPVS mode): the packet belongs to that virtual server."""

    vaddr: IPNetwork | None = None
    vproto: int | None = None
    vport: int | None = None
    negated: bool = False


Match = (
    AddressMatch
    | ProtocolMatch
    | PortMatch
    | InterfaceMatch
    | AddrTypeMatch
    | ConntrackMatch
    | StatisticMatch
    | RecentMatch
    | MarkMatch
    | SetMatch
    | PhysdevMatch
    | IpvsMatch
)


# --- targets ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Jump:
    """`-j CHAIN` (call, RETURN comes back here) or `-g CHAIN` (goto, RETURN goes to our caller)."""

    chain: str
    goto: bool = False


@dataclass(frozen=True)
class Verdict:
    """ACCEPT, DROP, RETURN; REJECT carries its `--reject-with` reply."""

    name: Literal["ACCEPT", "DROP", "RETURN", "REJECT"]
    reject_with: str | None = None


@dataclass(frozen=True)
class MarkTarget:
    """`-j MARK`: --or-mark, --xor-mark, --and-mark; --set-xmark/--set-mark clear `mask`, then XOR/OR."""

    operation: Literal["or", "xor", "and", "set-xmark", "set-mark"]
    value: int
    mask: int = 0xFFFFFFFF

    def apply(self, mark: int) -> int:
        if self.operation == "or":
            return mark | self.value
        if self.operation == "xor":
            return mark ^ self.value
        if self.operation == "and":
            return mark & self.value
        if self.operation == "set-xmark":
            return (mark & ~self.mask & 0xFFFFFFFF) ^ self.value
        return (mark & ~self.mask & 0xFFFFFFFF) | self.value


@dataclass(frozen=True)
class DnatTarget:
    """`-j DNAT --to-destination IP[:PORT]`; port None keeps the packet's port."""

    ip: str
    port: int | None = None


@dataclass(frozen=True)
class SnatTarget:
    """`-j MASQUERADE` (to_ip None: the outgoing interface's address) or `-j SNAT --to-source IP`."""

    to_ip: str | None = None
    random_fully: bool = False


Target = Jump | Verdict | MarkTarget | DnatTarget | SnatTarget


# --- structure ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One `-A` line. `number` is its 1-based position in the chain, as `iptables -L --line-numbers` shows."""

    table: str
    chain: str
    number: int
    matches: tuple[Match, ...]
    target: Target | None  # None: a rule with no -j only counts packets
    comment: str | None = None
    text: str = field(default="", compare=False)


@dataclass(frozen=True)
class Chain:
    name: str
    policy: Literal["ACCEPT", "DROP"] | None  # None for user-defined chains
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Table:
    name: str
    chains: dict[str, Chain]

    def chain(self, name: str) -> Chain:
        """A chain by name; a built-in chain the text never declared is empty with policy ACCEPT."""
        found = self.chains.get(name)
        if found is not None:
            return found
        if name in BUILTIN_CHAINS.get(self.name, ()):
            return Chain(name=name, policy="ACCEPT")
        raise KeyError(f"table {self.name} has no chain {name}")


@dataclass(frozen=True)
class Ruleset:
    tables: dict[str, Table]

    def table(self, name: str) -> Table:
        """A table by name; an absent table is empty (every built-in chain ACCEPTs)."""
        return self.tables.get(name) or Table(name=name, chains={})
