"""The answer of explain, and its stable JSON form.

JSON contract (documented in docs/trace-json.md; tests pin every key):

    {
      "mode": "iptables",
      "node": "node-a",
      "source": {"ip": "10.244.1.5", "kind": "pod"},          # kind: pod | node | external
      "verdict": "DNAT",                                       # DNAT | REJECT | DROP | ACCEPT | NONE
      "endpoints": [{"endpoint": "10.244.2.7:8080", "probability": 0.5}, ...],
      "masquerade": false,
      "path": [{"hook": "PREROUTING", "table": "nat", "chain": "KUBE-SERVICES", "rule": 3,
                "comment": "shop/web:http cluster IP", "action": "jump KUBE-SVC-..."}, ...]
    }

A walk can fork (`-m statistic`), so the result holds every Alternative; the JSON summarises them:
- verdict: the verdict every alternative shares; if they differ, the most likely alternative's.
  DNAT: the destination was translated and the packet goes on. REJECT/DROP: a rule or policy ended it.
  ACCEPT: accepted with a rule's say (an ACCEPT rule, a MARK, an SNAT) but no DNAT. NONE: no rule touched it.
- endpoints: every DNAT destination the rules can choose, with the summed probability of choosing it
  (rounded to 6 places), in rule order; empty when nothing DNATs.
- masquerade: true when the rules source-NAT the packet on any path that is not dropped.
- path: the rule hits (and chain policies, and conntrack translations for non-NEW packets) of the most
  likely alternative, first in rule order among equals, in the order they happen. `rule` is the 1-based
  rule number in its chain, or null for a policy or a conntrack step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from kubeplane.trace.packet import CtState, Packet, SourceInfo
from kubeplane.trace.path import Alternative, Step

VerdictName = Literal["DNAT", "REJECT", "DROP", "ACCEPT", "NONE"]


@dataclass(frozen=True)
class EndpointChoice:
    endpoint: str  # ip:port
    probability: float


@dataclass(frozen=True)
class Explanation:
    """Everything explain found for one packet on one node."""

    mode: str
    node: str
    packet: Packet
    source: SourceInfo
    ct_state: CtState
    alternatives: tuple[Alternative, ...]
    sticky_endpoint: str | None = None

    @property
    def primary(self) -> Alternative:
        """The most likely alternative; the first in rule order among equals."""
        best = self.alternatives[0]
        for alternative in self.alternatives[1:]:
            if alternative.probability > best.probability + 1e-12:
                best = alternative
        return best

    @property
    def verdict(self) -> VerdictName:
        verdicts = {alternative_verdict(a) for a in self.alternatives}
        if len(verdicts) == 1:
            return verdicts.pop()
        return alternative_verdict(self.primary)

    @property
    def endpoints(self) -> tuple[EndpointChoice, ...]:
        chances: dict[str, float] = {}
        for alternative in self.alternatives:
            if alternative_verdict(alternative) == "DNAT" and alternative.dnat is not None:
                endpoint = format_endpoint(*alternative.dnat)
                chances[endpoint] = chances.get(endpoint, 0.0) + alternative.probability
        return tuple(EndpointChoice(e, round(p, 6)) for e, p in chances.items())

    @property
    def masquerade(self) -> bool:
        return any(a.masqueraded and a.outcome == "ACCEPT" for a in self.alternatives)

    @property
    def destination_service(self) -> str | None:
        """The Service the first service-labelled rule hit belongs to, for the header."""
        for step in self.primary.steps:
            if step.matched and step.service:
                return step.service
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "node": self.node,
            "source": {"ip": self.source.ip, "kind": self.source.kind},
            "verdict": self.verdict,
            "endpoints": [{"endpoint": c.endpoint, "probability": c.probability} for c in self.endpoints],
            "masquerade": self.masquerade,
            "path": [step_json(step) for step in path_steps(self.primary)],
        }


def path_steps(alternative: Alternative) -> tuple[Step, ...]:
    """The steps the JSON path lists: hits, policies and conntrack translations; no misses, no routing."""
    return tuple(s for s in alternative.steps if s.matched and s.chain != "routing")


def step_json(step: Step) -> dict[str, Any]:
    return {
        "hook": step.hook,
        "table": step.table,
        "chain": step.chain,
        "rule": step.rule,
        "comment": step.comment,
        "action": step.action,
    }


def alternative_verdict(alternative: Alternative) -> VerdictName:
    if alternative.outcome != "ACCEPT":
        return alternative.outcome
    if alternative.dnat is not None:
        return "DNAT"
    if alternative.accepted_by_rule or alternative.rewrites:
        return "ACCEPT"
    return "NONE"


def alternative_reason(alternative: Alternative) -> str:
    """One line saying why the alternative ended as it did."""
    verdict = alternative_verdict(alternative)
    ended = alternative.ended_by
    if ended is not None:
        where = f"{ended.table} {ended.chain}"
        if ended.rule is None:
            return f"{verdict} by the policy of {where}"
        said = f": {ended.comment}" if ended.comment else ""
        return f"{verdict} by {where} rule {ended.rule}{said}"
    delivery = {
        "local": "delivered to a process on the node",
        "forwarded": f"forwarded to {alternative.packet.dst}",
        "sent": f"sent by the node to {alternative.packet.dst}",
        "none": "accepted",
    }[alternative.delivery]
    if verdict == "DNAT" and alternative.dnat is not None:
        snat = f", source masqueraded to {alternative.binding.snat}" if alternative.masqueraded else ""
        return f"DNAT to {format_endpoint(*alternative.dnat)}{snat}; {delivery}"
    if verdict == "ACCEPT":
        return f"accepted by the rules; {delivery}"
    return f"no rule touched the packet; {delivery}"


def format_endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
