"""What a walk produces: the steps a packet takes, its rewrites, and each complete alternative path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kubeplane.trace.packet import Packet

Outcome = Literal["ACCEPT", "DROP", "REJECT"]
Delivery = Literal["local", "forwarded", "sent", "none"]


@dataclass(frozen=True)
class Step:
    """One thing that happened to the packet: a rule hit or miss, a policy, a routing or conntrack step."""

    hook: str
    table: str  # nat, filter; "" for the routing decision
    chain: str
    rule: int | None  # 1-based rule number; None for policies and non-rule steps
    comment: str | None
    action: str
    matched: bool = True
    depth: int = 0  # call depth below the hook's built-in chain
    service: str | None = None


@dataclass(frozen=True)
class Rewrite:
    """A header or mark change, as before -> after, and the step that made it."""

    kind: Literal["DNAT", "SNAT", "MARK"]
    before: str
    after: str
    step: Step


@dataclass(frozen=True)
class NatBinding:
    """The translation conntrack recorded for a connection: replayed on its later packets."""

    dnat: tuple[str, int] | None = None
    snat: str | None = None
    by_ipvs: bool = False  # IPVS, not the nat table, translated the destination (at INPUT, not PREROUTING)


@dataclass(frozen=True)
class Alternative:
    """One complete path the packet can take, with how likely the rules make it."""

    probability: float
    packet: Packet  # as it leaves (or is dropped)
    steps: tuple[Step, ...]
    rewrites: tuple[Rewrite, ...]
    outcome: Outcome
    delivery: Delivery  # where an accepted packet goes: this node, forwarded, sent out by the node
    ended_by: Step | None  # the DROP/REJECT rule or policy, or None when accepted
    binding: NatBinding
    accepted_by_rule: bool  # some rule (not a policy) said ACCEPT

    @property
    def dnat(self) -> tuple[str, int] | None:
        return self.binding.dnat

    @property
    def masqueraded(self) -> bool:
        return self.binding.snat is not None
