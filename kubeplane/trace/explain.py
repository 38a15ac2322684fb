"""Explain one packet against one node's rendered ruleset: the pure entry point, no root, no lab.

`explain_packet` takes the parsed ruleset, the node's context and the packet, and returns an Explanation with
every alternative path. The options are the facts a ruleset cannot know about a packet:
- conntrack state: NEW walks the nat table; ESTABLISHED/RELATED packets skip it and get the translation the
  connection's first packet got (so explain first walks the NEW packet, then replays each accepted outcome);
  INVALID packets skip NAT entirely.
- affinity: `sticky_endpoint="ip:port"` says the source already sits in the recent list of that endpoint
  (kube-proxy's sessionAffinity: ClientIP), so `-m recent --rcheck` matches for it; without it the source is a
  fresh client and only the random branches decide.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from kubeplane.trace.ipvs import IpvsTable
from kubeplane.trace.packet import CtState, NodeContext, Packet, SourceInfo
from kubeplane.trace.path import Alternative, NatBinding
from kubeplane.trace.result import Explanation, format_endpoint
from kubeplane.trace.rules import DnatTarget, RecentMatch, Ruleset
from kubeplane.trace.walk import Walker, WalkInput

Mode = Literal["iptables", "ipvs"]


class UnknownAffinityEndpoint(ValueError):
    """`sticky_endpoint` names an endpoint no session-affinity rule records."""


@dataclass(frozen=True)
class ExplainOptions:
    ct_state: CtState = "NEW"
    sticky_endpoint: str | None = None  # "ip:port" the source is already sticky to
    record_misses: bool = True  # keep rule misses for the detailed text; JSON never shows them
    in_interface: str | None = None  # the node interface the packet arrives on; None: from the context


def explain_packet(
    ruleset: Ruleset,
    context: NodeContext,
    packet: Packet,
    source: SourceInfo,
    options: ExplainOptions = ExplainOptions(),
    mode: Mode = "iptables",
    ipvs: IpvsTable | None = None,
) -> Explanation:
    """Walk `packet` through `ruleset` (and, in IPVS mode, the `ipvs` virtual servers) on the node
    described by `context`."""
    walker = Walker(ruleset, context, ipvs)
    sticky = frozenset[str]()
    if options.sticky_endpoint:
        sticky = affinity_lists(ruleset, options.sticky_endpoint, required=ipvs is None)
    local_pod = source.kind == "pod" and source.pod_node == context.name
    in_interface = options.in_interface
    if in_interface is None:
        in_interface = context.interfaces.pod_side if local_pod else context.interfaces.uplink
    first = WalkInput(
        packet=packet,
        from_this_node=source.on_this_node,
        sticky_lists=sticky,
        in_interface=in_interface,
        record_misses=options.record_misses,
        sticky_endpoint=options.sticky_endpoint,
        from_pod_here=local_pod,
    )
    if options.ct_state == "NEW":
        alternatives = walker.walk(first)
    elif options.ct_state == "INVALID":
        alternatives = walker.walk(replace(first, ct_state="INVALID", binding=NatBinding()))
    else:
        alternatives = _replay_connection(walker, first, options.ct_state)
    return Explanation(
        mode=mode,
        node=context.name,
        packet=packet,
        source=source,
        ct_state=options.ct_state,
        alternatives=alternatives,
        sticky_endpoint=options.sticky_endpoint,
    )


def _replay_connection(walker: Walker, first: WalkInput, ct_state: CtState) -> tuple[Alternative, ...]:
    """Later packets of each connection the NEW packet can open, weighted by how likely that connection is.

    A NEW packet that is dropped never confirms its conntrack entry, so only accepted outcomes open
    connections; when none does, the connection predates the current rules and carries no translation.
    """
    opened = [a for a in walker.walk(replace(first, record_misses=False)) if a.outcome == "ACCEPT"]
    total = sum(a.probability for a in opened)
    bindings: dict[NatBinding, float] = {}
    for alternative in opened:
        bindings[alternative.binding] = (
            bindings.get(alternative.binding, 0.0) + alternative.probability / total
        )
    if not bindings:
        bindings = {NatBinding(): 1.0}
    replayed: list[Alternative] = []
    for binding, weight in bindings.items():
        for later in walker.walk(replace(first, ct_state=ct_state, binding=binding)):
            replayed.append(replace(later, probability=later.probability * weight))
    return tuple(replayed)


def affinity_lists(ruleset: Ruleset, endpoint: str, required: bool = True) -> frozenset[str]:
    """The recent lists that a `-m recent --set` rule DNATing to `endpoint` fills (kube-proxy: its SEP).
    `required`: none is an error (iptables mode); IPVS mode keeps affinity in its persistence instead."""
    names: set[str] = set()
    for table in ruleset.tables.values():
        for chain in table.chains.values():
            for rule in chain.rules:
                if not isinstance(rule.target, DnatTarget):
                    continue
                port = rule.target.port
                if port is None or format_endpoint(rule.target.ip, port) != endpoint:
                    continue
                names.update(m.name for m in rule.matches if isinstance(m, RecentMatch) and m.action == "set")
    if not names and required:
        raise UnknownAffinityEndpoint(f"no session-affinity rule records endpoint {endpoint}")
    return frozenset(names)
