"""What a partial iptables sync writes: as little as leaves the kernel matching what a full rewrite gives.

kube-proxy's partial sync renders every service again, then rewrites the changed services' own chains and,
every time, the shared chains (KUBE-SERVICES, KUBE-NODEPORTS, the filter chains) whole. Both costs grow with
the cluster, not with the change. Here:

- each service port's lines in the shared chains are kept from the previous sync while its plan is the same
  instance (the PlanCache hands on unchanged plans), so only changed ports are rendered: their own chains
  and their shared lines;
- the shared chains are not rewritten when only service ports' lines in them changed: those lines are
  deleted (`-D`) and inserted at the top (`-I CHAIN 1`) instead. With `iptables-restore --noflush` a chain
  the input does not declare keeps its other rules, and a restore costs in proportion to what it writes
  (a new service writes a handful of rules, not the thousand of KUBE-SERVICES). The rules' order within
  those chains then differs from a full render's, which does not change what they match: each port's
  rules match its own destination addresses and ports (kube-proxy itself writes them in Go map order),
  the KUBE-NODEPORTS jump stays last in KUBE-SERVICES, and only chains listed in `ORDER_FREE_CHAINS` are
  edited this way. When node-wide rules change (a render of the plan without service ports), the shared
  chains are written whole, in a full render's order.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from kubeplane.model.objects import IPFamily
from kubeplane.proxy.iptables.chains import (
    KUBE_EXTERNAL_SERVICES,
    KUBE_NODEPORTS,
    KUBE_PROXY_FIREWALL,
    KUBE_SERVICES,
)
from kubeplane.proxy.iptables.render import RenderedRuleset
from kubeplane.proxy.iptables.service_rules import NodeContext, RuleBuffers, write_service_port
from kubeplane.proxy.plan import ServicePortPlan

PortIdentity = tuple[str, str, IPFamily]

# Shared chains holding only service ports' rules (besides KUBE-SERVICES' last rule, the NodePorts jump),
# each matching its own port's destinations, so their order does not matter: (table, chain).
ORDER_FREE_CHAINS = frozenset(
    {
        ("nat", KUBE_SERVICES),
        ("nat", KUBE_NODEPORTS),
        ("filter", KUBE_SERVICES),
        ("filter", KUBE_EXTERNAL_SERVICES),
        ("filter", KUBE_NODEPORTS),
        ("filter", KUBE_PROXY_FIREWALL),
    }
)


def changed_ports(
    previous: tuple[ServicePortPlan, ...], current: tuple[ServicePortPlan, ...]
) -> set[PortIdentity]:
    """Identities of service ports that are new or differ; a plan reused from the PlanCache is the same
    instance, so most comparisons end at the identity check."""
    before = {sp.identity: sp for sp in previous}
    changed: set[PortIdentity] = set()
    for sp in current:
        identity = sp.identity
        old = before.get(identity)
        if old is not sp and old != sp:
            changed.add(identity)
    return changed


@dataclass(frozen=True)
class PortLines:
    """One service port's rules in the shared chains and the nat chains it uses, for the plan `port`."""

    port: ServicePortPlan
    filter_rules: tuple[str, ...]
    nat_rules: tuple[str, ...]
    active_nat_chains: frozenset[str]


@dataclass(frozen=True)
class PartialRestore:
    """A partial sync: the iptables-restore input ("" when the kernel already holds everything), and what
    the next partial sync compares with (shared text written, per-port lines, chains in use and deleted)."""

    text: str
    node_rules: tuple[str, str, str]
    port_lines: dict[PortIdentity, PortLines]
    active_nat_chains: frozenset[str]
    stale_chains: frozenset[str]


def partial_restore(
    current: tuple[ServicePortPlan, ...],
    changed: Collection[PortIdentity],
    context: NodeContext,
    skeleton: RenderedRuleset,
    previous: PartialRestore | None,
    active_nat_chains: frozenset[str],
) -> PartialRestore:
    """The restore input that turns the kernel's rules (`active_nat_chains` in use, `previous` the last
    partial sync, None right after a full one) into those of `current`, rewriting the own chains of the
    `changed` ports. `skeleton` is the render of the node without service ports (its node-wide rules)."""
    known = previous.port_lines if previous is not None else {}
    port_lines: dict[PortIdentity, PortLines] = {}
    own = RuleBuffers()
    for sp in current:
        identity = sp.identity
        lines = known.get(identity)
        if identity in changed or lines is None or lines.port is not sp:
            lines = _port_lines(sp, context, own if identity in changed else None)
        port_lines[identity] = lines
    active = frozenset().union(*(lines.active_nat_chains for lines in port_lines.values()))
    stale = sorted(active_nat_chains - active)
    node_rules = (skeleton.filter_rules, skeleton.nat_rules, skeleton.nat_tail)
    edits = previous is not None and previous.node_rules == node_rules
    filter_edits = _edits("filter", known, port_lines) if edits else None
    nat_edits = _edits("nat", known, port_lines) if edits else None
    if filter_edits is None:
        filter_rules = [line for lines in port_lines.values() for line in lines.filter_rules]
        filter_lines = [
            *skeleton.filter_chains.splitlines(),
            *skeleton.filter_rules.splitlines(),
            *filter_rules,
        ]
    else:
        filter_lines = filter_edits
    if nat_edits is None:
        shared_rules = [line for lines in port_lines.values() for line in lines.nat_rules]
        declare = skeleton.nat_chains.splitlines()
        dispatch = [*skeleton.nat_rules.splitlines(), *shared_rules]
        tail = skeleton.nat_tail.splitlines()
    else:
        declare, dispatch, tail = [], nat_edits, []
    nat_lines = [
        *declare,
        *own.nat_chains,
        *(f":{chain} - [0:0]" for chain in stale),
        *dispatch,
        *own.nat_rules,
        *(f"-X {chain}" for chain in stale),  # after every rule that could still jump to them
        *tail,
    ]
    text = _table("filter", filter_lines) + _table("nat", nat_lines)
    return PartialRestore(text, node_rules, port_lines, active, frozenset(stale))


def _table(table: str, lines: list[str]) -> str:
    return f"*{table}\n" + "".join(f"{line}\n" for line in lines) + "COMMIT\n" if lines else ""


def _edits(
    table: str, before: dict[PortIdentity, PortLines], after: dict[PortIdentity, PortLines]
) -> list[str] | None:
    """`-D` and `-I` commands replacing the shared-chain lines of ports that changed, came or went in
    `table`; None when a line is in a chain whose order matters (then the chains are written whole)."""
    deletes: list[str] = []
    inserts: list[str] = []
    gone = [lines for identity, lines in before.items() if identity not in after]
    pairs = [(before.get(identity), lines) for identity, lines in after.items()]
    for old, new in [*((lines, None) for lines in gone), *pairs]:
        if old is new:
            continue
        old_rules = _rules_of(old, table)
        new_rules = _rules_of(new, table)
        if old_rules == new_rules:
            continue
        for rule in old_rules:
            chain, spec = _split(rule)
            if (table, chain) not in ORDER_FREE_CHAINS:
                return None
            deletes.append(f"-D {chain} {spec}")
        for rule in reversed(new_rules):  # each at the top: the port's rules keep their own order
            chain, spec = _split(rule)
            if (table, chain) not in ORDER_FREE_CHAINS:
                return None
            inserts.append(f"-I {chain} 1 {spec}")
    return deletes + inserts


def _rules_of(lines: PortLines | None, table: str) -> tuple[str, ...]:
    if lines is None:
        return ()
    return lines.filter_rules if table == "filter" else lines.nat_rules


def _split(rule: str) -> tuple[str, str]:
    """`-A CHAIN spec` -> (CHAIN, spec)."""
    _, chain, spec = rule.split(" ", 2)
    return chain, spec


def _port_lines(sp: ServicePortPlan, context: NodeContext, own: RuleBuffers | None) -> PortLines:
    """Render `sp`'s shared-chain lines (and, into `own`, its own chains when given)."""
    shared = RuleBuffers()
    write_service_port(sp, context, shared, own)
    return PortLines(
        sp, tuple(shared.filter_rules), tuple(shared.nat_rules), frozenset(shared.active_nat_chains)
    )
