"""Does the kernel agree with explain? Compare one live observation with the explanation of the same packet.

Explain may offer several alternatives (random endpoint choice); the live packet took one of them. The
alternative it took is the one with the same DNAT destination (or, without DNAT, any alternative), and the
comparison checks, for that alternative: the verdict, the endpoint, the masquerade, and the rules that fired,
in order, as (table, chain, rule number).
"""

from __future__ import annotations

from dataclasses import dataclass

from kubeplane.trace.nft_trace import LiveHit
from kubeplane.trace.path import Alternative
from kubeplane.trace.result import Explanation, VerdictName, alternative_verdict, format_endpoint


@dataclass(frozen=True)
class Observation:
    """What the kernel did with the live packet."""

    verdict: VerdictName  # DNAT (delivered, translated), ACCEPT (delivered as is), REJECT, DROP
    dnat: tuple[str, int] | None
    snat: str | None
    hits: tuple[LiveHit, ...]


def matching_alternative(explanation: Explanation, observed: Observation) -> Alternative | None:
    for alternative in explanation.alternatives:
        if observed.dnat is not None and alternative.dnat == observed.dnat:
            return alternative
    if observed.dnat is None:
        for alternative in explanation.alternatives:
            if _delivered_alike(alternative_verdict(alternative), observed.verdict):
                return alternative
        return explanation.primary
    return None


def disagreements(explanation: Explanation, observed: Observation) -> tuple[str, ...]:
    """Every way the live packet differs from explain; empty when they agree."""
    alternative = matching_alternative(explanation, observed)
    if alternative is None:
        chosen = format_endpoint(*observed.dnat) if observed.dnat else "its destination"
        offered = ", ".join(c.endpoint for c in explanation.endpoints) or "none"
        return (f"the kernel sent the packet to {chosen}; explain offers {offered}",)
    found: list[str] = []
    expected = alternative_verdict(alternative)
    if not _delivered_alike(expected, observed.verdict):
        found.append(f"verdict: explain says {expected}, the kernel did {observed.verdict}")
    if alternative.masqueraded != (observed.snat is not None):
        said = f"masquerade to {alternative.binding.snat}" if alternative.masqueraded else "no masquerade"
        did = f"masqueraded to {observed.snat}" if observed.snat else "did not masquerade"
        found.append(f"masquerade: explain says {said}, the kernel {did}")
    elif observed.snat and alternative.binding.snat != observed.snat:
        found.append(
            f"masquerade address: explain says {alternative.binding.snat}, the kernel used {observed.snat}"
        )
    if observed.hits:
        found.extend(_path_differences(alternative, observed.hits))
    return tuple(found)


def _delivered_alike(explained: VerdictName, observed: VerdictName) -> bool:
    """ACCEPT and NONE both mean 'delivered untranslated' to the kernel."""
    untranslated = {"ACCEPT", "NONE"}
    return explained == observed or (explained in untranslated and observed in untranslated)


def _path_differences(alternative: Alternative, hits: tuple[LiveHit, ...]) -> list[str]:
    explained = [
        (s.table, s.chain, s.rule)
        for s in alternative.steps
        if s.matched and s.table in ("nat", "filter") and s.chain != "conntrack"
    ]
    fired = [(h.table, h.chain, h.rule) for h in hits if h.table in ("nat", "filter")]
    if explained == fired:
        return []
    for index, (mine, theirs) in enumerate(zip(explained, fired, strict=False)):
        if mine != theirs:
            return [f"rule path differs at hit {index + 1}: explain {_name(mine)}, kernel {_name(theirs)}"]
    if len(explained) > len(fired):
        return [f"explain continues with {_name(explained[len(fired)])} after the kernel's last hit"]
    return [f"the kernel continues with {_name(fired[len(explained)])} after explain's last hit"]


def _name(hit: tuple[str, str, int | None]) -> str:
    table, chain, rule = hit
    return f"{table} {chain} #{rule}" if rule is not None else f"{table} {chain} policy"
