"""Parse the arguments of one iptables rule (`-A CHAIN <these>`) into matches and a target.

Match order follows the kernel: the core matches (-s -d -p -i -o) are tested first, then the `-m` modules in
the order they appear, so a `statistic` draw only happens for packets that passed every earlier test.
Options belong to the latest loaded module that accepts them; `-p tcp` loads the tcp module implicitly.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from kubeplane.trace.rules import (
    AddressMatch,
    AddrTypeMatch,
    ConntrackMatch,
    Direction,
    DnatTarget,
    InterfaceMatch,
    IpvsMatch,
    Jump,
    MarkMatch,
    MarkTarget,
    Match,
    PhysdevMatch,
    PortMatch,
    ProtocolMatch,
    RecentMatch,
    Rule,
    SetMatch,
    SnatTarget,
    StatisticMatch,
    Target,
    Verdict,
)


class RulesetParseError(ValueError):
    """The text is not a ruleset explain can walk; the message names the line and what is wrong with it."""


# Options each module accepts and how many arguments each takes.
MODULE_OPTIONS: dict[str, dict[str, int]] = {
    "comment": {"--comment": 1},
    "tcp": {"--dport": 1, "--destination-port": 1, "--sport": 1, "--source-port": 1},
    "udp": {"--dport": 1, "--destination-port": 1, "--sport": 1, "--source-port": 1},
    "sctp": {"--dport": 1, "--destination-port": 1, "--sport": 1, "--source-port": 1},
    "addrtype": {"--src-type": 1, "--dst-type": 1},
    "conntrack": {"--ctstate": 1},
    "state": {"--state": 1},
    "statistic": {"--mode": 1, "--probability": 1},
    "recent": {
        "--name": 1,
        "--rcheck": 0,
        "--update": 0,
        "--set": 0,
        "--remove": 0,
        "--seconds": 1,
        "--reap": 0,
        "--mask": 1,
        "--rsource": 0,
        "--rdest": 0,
    },
    "mark": {"--mark": 1},
    "set": {"--match-set": 2},
    "physdev": {"--physdev-is-in": 0},
    "ipvs": {"--ipvs": 0, "--vaddr": 1, "--vproto": 1, "--vport": 1},
}

TARGET_OPTIONS: dict[str, dict[str, int]] = {
    "DNAT": {"--to-destination": 1},
    "SNAT": {"--to-source": 1, "--random": 0, "--random-fully": 0, "--persistent": 0},
    "MASQUERADE": {"--random": 0, "--random-fully": 0},
    "MARK": {"--set-xmark": 1, "--set-mark": 1, "--or-mark": 1, "--xor-mark": 1, "--and-mark": 1},
    "REJECT": {"--reject-with": 1},
    "ACCEPT": {},
    "DROP": {},
    "RETURN": {},
}

MARK_OPERATIONS: dict[str, Literal["or", "xor", "and", "set-xmark", "set-mark"]] = {
    "--or-mark": "or",
    "--xor-mark": "xor",
    "--and-mark": "and",
    "--set-xmark": "set-xmark",
    "--set-mark": "set-mark",
}

PORT_PROTOCOLS = ("tcp", "udp", "sctp", "dccp")

CORE_OPTIONS = {
    "-s": "-s",
    "--source": "-s",
    "-d": "-d",
    "--destination": "-d",
    "-p": "-p",
    "--protocol": "-p",
    "-i": "-i",
    "--in-interface": "-i",
    "-o": "-o",
    "--out-interface": "-o",
}


@dataclass
class _Option:
    name: str
    args: tuple[str, ...]
    negated: bool


@dataclass
class _Module:
    name: str
    options: list[_Option] = field(default_factory=list)


def parse_rule(table: str, chain: str, number: int, tokens: list[str], text: str, where: str) -> Rule:
    """Parse the arguments of one `-A CHAIN` line (everything after the chain name)."""
    core: list[Match] = []
    modules: list[_Module] = []
    comment: str | None = None
    protocol: str | None = None
    target: Target | None = None
    negate = False
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "!":
            negate = True
            i += 1
            continue
        if token in ("-m", "--match"):
            name = _arg(tokens, i, 1, where)
            if name not in MODULE_OPTIONS:
                raise RulesetParseError(f"{where}: unsupported match module {name!r} in chain {chain}")
            modules.append(_Module(name=name))
            i += 2
            continue
        if token in ("-j", "--jump", "-g", "--goto"):
            target = _parse_target(token, tokens[i + 1 :], where)
            break
        if token in CORE_OPTIONS:
            value = _arg(tokens, i, 1, where)
            option = CORE_OPTIONS[token]
            if option == "-p":
                protocol = value.lower()
            core.append(_core_match(option, value, negate, where))
            negate = False
            i += 2
            continue
        module = _module_for(token, modules, protocol)
        if module is None:
            raise RulesetParseError(f"{where}: unsupported option {token!r} in chain {chain}")
        arity = MODULE_OPTIONS[module.name][token]
        args = tuple(_arg(tokens, i, k, where) for k in range(1, arity + 1))
        if module.name == "comment":
            comment = args[0]
        else:
            module.options.append(_Option(token, args, negate))
        negate = False
        i += 1 + arity
    matches = list(core)
    for module in modules:
        matches.extend(_module_matches(module, where))
    if isinstance(target, DnatTarget) and target.port is not None and protocol not in PORT_PROTOCOLS:
        raise RulesetParseError(f"{where}: DNAT to a port needs -p tcp, udp or sctp (iptables says so)")
    return Rule(
        table=table,
        chain=chain,
        number=number,
        matches=tuple(matches),
        target=target,
        comment=comment,
        text=text,
    )


def _arg(tokens: list[str], i: int, offset: int, where: str) -> str:
    if i + offset >= len(tokens):
        raise RulesetParseError(f"{where}: option {tokens[i]} is missing its argument")
    return tokens[i + offset]


def _module_for(option: str, modules: list[_Module], protocol: str | None) -> _Module | None:
    """The latest loaded module accepting `option`; `-p tcp` loads the tcp module implicitly."""
    for module in reversed(modules):
        if option in MODULE_OPTIONS.get(module.name, {}):
            return module
    if protocol in ("tcp", "udp", "sctp") and option in MODULE_OPTIONS[protocol]:
        implicit = _Module(name=protocol)
        modules.append(implicit)
        return implicit
    return None


def _network(value: str, where: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise RulesetParseError(f"{where}: {value!r} is not an address or CIDR") from None


def _core_match(option: str, value: str, negated: bool, where: str) -> Match:
    if option in ("-s", "-d"):
        return AddressMatch("src" if option == "-s" else "dst", _network(value, where), negated)
    if option == "-p":
        return ProtocolMatch(value.lower(), negated)
    return InterfaceMatch("in" if option == "-i" else "out", value, negated)


def _int(value: str, where: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise RulesetParseError(f"{where}: {value!r} is not a number") from None


def _value_mask(value: str, where: str) -> tuple[int, int]:
    number, _, mask = value.partition("/")
    return _int(number, where), _int(mask, where) if mask else 0xFFFFFFFF


def _module_matches(module: _Module, where: str) -> list[Match]:
    options = {option.name: option for option in module.options}
    if module.name == "comment":
        return []
    if module.name in ("tcp", "udp", "sctp"):
        ports: list[Match] = []
        for option in module.options:
            low, _, high = option.args[0].partition(":")
            direction: Direction = "dst" if option.name in ("--dport", "--destination-port") else "src"
            ports.append(PortMatch(direction, _int(low, where), _int(high or low, where), option.negated))
        return ports
    if module.name == "addrtype":
        return [
            AddrTypeMatch(
                "src" if o.name == "--src-type" else "dst", frozenset(o.args[0].split(",")), o.negated
            )
            for o in module.options
        ]
    if module.name in ("conntrack", "state"):
        return [ConntrackMatch(frozenset(o.args[0].upper().split(",")), o.negated) for o in module.options]
    if module.name == "mark":
        return [MarkMatch(*_value_mask(o.args[0], where), negated=o.negated) for o in module.options]
    if module.name == "set":
        return [SetMatch(o.args[0], tuple(o.args[1].split(",")), o.negated) for o in module.options]
    if module.name == "statistic":
        return [_statistic(options, where)]
    if module.name == "physdev":
        return [PhysdevMatch(o.negated) for o in module.options]
    if module.name == "ipvs":
        return [_ipvs(options, where)]
    if module.name == "recent":
        return [_recent(module.options, where)]
    raise RulesetParseError(f"{where}: unsupported match module {module.name!r}")


def _statistic(options: dict[str, _Option], where: str) -> StatisticMatch:
    mode = options.get("--mode")
    probability = options.get("--probability")
    if mode is None or mode.args[0] != "random" or probability is None:
        raise RulesetParseError(f"{where}: only `-m statistic --mode random --probability P` is supported")
    try:
        value = float(probability.args[0])
    except ValueError:
        raise RulesetParseError(f"{where}: probability {probability.args[0]!r} is not a number") from None
    return StatisticMatch(value, probability.negated or mode.negated)


def _ipvs(options: dict[str, _Option], where: str) -> IpvsMatch:
    vaddr, vproto, vport = options.get("--vaddr"), options.get("--vproto"), options.get("--vport")
    return IpvsMatch(
        vaddr=_network(vaddr.args[0], where) if vaddr else None,
        vproto=_int(vproto.args[0], where) if vproto else None,
        vport=_int(vport.args[0], where) if vport else None,
        negated=any(o.negated for o in options.values()),
    )


def _recent(options: list[_Option], where: str) -> RecentMatch:
    name = "DEFAULT"
    action: str | None = None
    seconds: int | None = None
    reap = False
    mask = "255.255.255.255"
    side = "rsource"
    negated = False
    for option in options:
        negated = negated or option.negated
        if option.name == "--name":
            name = option.args[0]
        elif option.name in ("--rcheck", "--update", "--set", "--remove"):
            action = option.name[2:]
        elif option.name == "--seconds":
            seconds = _int(option.args[0], where)
        elif option.name == "--reap":
            reap = True
        elif option.name == "--mask":
            mask = option.args[0]
        else:
            side = option.name[2:]
    if action is None:
        raise RulesetParseError(f"{where}: -m recent needs one of --rcheck, --update, --set, --remove")
    return RecentMatch(name, action, seconds, reap, mask, side, negated)  # type: ignore[arg-type]


def _parse_target(flag: str, rest: list[str], where: str) -> Target:
    if not rest:
        raise RulesetParseError(f"{where}: {flag} needs a target")
    name, args = rest[0], rest[1:]
    if flag in ("-g", "--goto"):
        if args:
            raise RulesetParseError(f"{where}: unexpected {args[0]!r} after goto {name}")
        return Jump(name, goto=True)
    accepted = TARGET_OPTIONS.get(name)
    if accepted is None:
        if args:
            raise RulesetParseError(f"{where}: unexpected {args[0]!r} after jump to chain {name}")
        return Jump(name)
    values: dict[str, str] = {}
    i = 0
    while i < len(args):
        option = args[i]
        if option not in accepted:
            raise RulesetParseError(f"{where}: unsupported option {option!r} for target {name}")
        arity = accepted[option]
        if arity and i + arity >= len(args):
            raise RulesetParseError(f"{where}: option {option} of {name} is missing its argument")
        values[option] = args[i + 1] if arity else ""
        i += 1 + arity
    return _build_target(name, values, where)


def _build_target(name: str, values: dict[str, str], where: str) -> Target:
    if name in ("ACCEPT", "DROP", "RETURN"):
        return Verdict(name)  # type: ignore[arg-type]
    if name == "REJECT":
        return Verdict("REJECT", reject_with=values.get("--reject-with", "icmp-port-unreachable"))
    if name == "MARK":
        if len(values) != 1:
            raise RulesetParseError(f"{where}: MARK needs exactly one of {', '.join(TARGET_OPTIONS['MARK'])}")
        option, value = next(iter(values.items()))
        number, mask = _value_mask(value, where)
        return MarkTarget(MARK_OPERATIONS[option], number, mask)
    if name == "DNAT":
        destination = values.get("--to-destination")
        if destination is None:
            raise RulesetParseError(f"{where}: DNAT needs --to-destination")
        return _dnat(destination, where)
    if name == "SNAT":
        source = values.get("--to-source")
        if source is None:
            raise RulesetParseError(f"{where}: SNAT needs --to-source")
        return SnatTarget(to_ip=source, random_fully="--random-fully" in values)
    return SnatTarget(to_ip=None, random_fully="--random-fully" in values)


def _dnat(destination: str, where: str) -> DnatTarget:
    """`IP`, `IP:PORT` or `[IPv6]:PORT`; ranges are not something kube-proxy writes and are refused."""
    host, port = destination, ""
    if destination.startswith("["):
        host, _, rest = destination[1:].partition("]")
        port = rest.removeprefix(":")
    elif destination.count(":") == 1:
        host, _, port = destination.partition(":")
    if "-" in host or "-" in port:
        raise RulesetParseError(f"{where}: DNAT ranges ({destination}) are not supported")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise RulesetParseError(f"{where}: DNAT destination {destination!r} is not IP[:PORT]") from None
    return DnatTarget(ip=host, port=_int(port, where) if port else None)
